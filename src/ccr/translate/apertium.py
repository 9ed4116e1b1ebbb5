"""Offline default translator: Debian's rule-based Apertium, through a chain of language pairs when needed.

A route is a chain of Apertium modes (``apertium -l``), e.g. en->fr = ``eng-spa`` then ``es-fr``. It is
either given (param ``route``) or found: the fewest hops over the installed pairs, ties broken by the pivot
languages in ``pivots`` order (Spanish first: Apertium's most developed pairs, and the en->fr route all
published figures here used). Only plain ``xx-yy`` modes are searched; variant modes (``eng-cat_valencia``,
``es-pt_BR``, ``eo-en-bytecode``...) are used only when named in ``route``.

A whole batch goes through ONE ``apertium`` process per hop (one process per caption is about 100x
slower). Plain-text mode is unsafe for batches: Apertium treats a newline as ordinary whitespace, so its
transfer rules can reorder words ACROSS captions (e.g. "The xyzzyq cat\\nMr. Smith goes." comes out with
"Smith" moved into the previous line). We therefore use the HTML format and wrap every caption in its own
``<p>...</p>`` block: format tags are block boundaries Apertium never moves words across, so the output has
exactly one ``<p>`` block per input caption, which we check after the last hop.

Which targets get offline MT from English this way (Debian bookworm): docs/backends-translate-describe.md.
"""

from __future__ import annotations

import html
import re
import shutil
import subprocess
from collections.abc import Iterable, Sequence

APT_INSTALL = "apt-get install apertium apertium-eng-spa apertium-fr-es"

# Plain modes of the Debian bookworm Apertium pair packages -> the package that installs each (from
# ``dpkg -L`` of every apertium pair package in bookworm). Used to name what to install when a route
# needs pairs that are missing, and to answer ``supports`` where apertium itself is not installed.
DEBIAN_MODES: dict[str, str] = {
    "afr-nld": "apertium-afr-nld",
    "arg-cat": "apertium-arg-cat",
    "arg-spa": "apertium-spa-arg",
    "bel-rus": "apertium-bel-rus",
    "br-fr": "apertium-br-fr",
    "bul-mkd": "apertium-mkd-bul",
    "ca-eo": "apertium-eo-ca",
    "ca-oc": "apertium-oc-ca",
    "cat-arg": "apertium-arg-cat",
    "cat-eng": "apertium-eng-cat",
    "cat-fra": "apertium-fra-cat",
    "cat-ita": "apertium-cat-ita",
    "cat-por": "apertium-por-cat",
    "cat-spa": "apertium-spa-cat",
    "cat-srd": "apertium-cat-srd",
    "dan-nno": "apertium-dan-nor",
    "dan-nob": "apertium-dan-nor",
    "dan-swe": "apertium-swe-dan",
    "en-eo": "apertium-eo-en",
    "en-gl": "apertium-en-gl",
    "eng-cat": "apertium-eng-cat",
    "eng-hbs": "apertium-hbs-eng",
    "eng-spa": "apertium-eng-spa",
    "eo-en": "apertium-eo-en",
    "es-eo": "apertium-eo-es",
    "es-fr": "apertium-fr-es",
    "es-gl": "apertium-es-gl",
    "es-oc": "apertium-oc-es",
    "es-pt": "apertium-es-pt",
    "eu-en": "apertium-eu-en",
    "eu-es": "apertium-eu-es",
    "fr-eo": "apertium-eo-fr",
    "fr-es": "apertium-fr-es",
    "fra-cat": "apertium-fra-cat",
    "fra-frp": "apertium-fra-frp",
    "fra-oci": "apertium-oci-fra",
    "frp-fra": "apertium-fra-frp",
    "gl-en": "apertium-en-gl",
    "gl-es": "apertium-es-gl",
    "gl-pt": "apertium-pt-gl",
    "hbs-eng": "apertium-hbs-eng",
    "hbs-mkd": "apertium-hbs-mkd",
    "hbs-slv": "apertium-hbs-slv",
    "hin-urd": "apertium-urd-hin",
    "ind-zlm": "apertium-ind-zlm",
    "isl-eng": "apertium-isl-eng",
    "isl-swe": "apertium-isl-swe",
    "ita-cat": "apertium-cat-ita",
    "ita-spa": "apertium-spa-ita",
    "ita-srd": "apertium-srd-ita",
    "mkd-bul": "apertium-mkd-bul",
    "mkd-eng": "apertium-mkd-eng",
    "nld-afr": "apertium-afr-nld",
    "nno-dan": "apertium-dan-nor",
    "nno-nob": "apertium-nno-nob",
    "nno-swe": "apertium-swe-nor",
    "nob-dan": "apertium-dan-nor",
    "nob-nno": "apertium-nno-nob",
    "nob-swe": "apertium-swe-nor",
    "oc-ca": "apertium-oc-ca",
    "oc-es": "apertium-oc-es",
    "oci-fra": "apertium-oci-fra",
    "pol-szl": "apertium-pol-szl",
    "por-cat": "apertium-por-cat",
    "pt-es": "apertium-es-pt",
    "pt-gl": "apertium-pt-gl",
    "ro-es": "apertium-es-ro",
    "rus-bel": "apertium-bel-rus",
    "rus-ukr": "apertium-rus-ukr",
    "slv-hbs": "apertium-hbs-slv",
    "spa-arg": "apertium-spa-arg",
    "spa-ast": "apertium-spa-ast",
    "spa-cat": "apertium-spa-cat",
    "spa-eng": "apertium-eng-spa",
    "spa-ita": "apertium-spa-ita",
    "swe-dan": "apertium-swe-dan",
    "swe-isl": "apertium-isl-swe",
    "swe-nno": "apertium-swe-nor",
    "swe-nob": "apertium-swe-nor",
    "szl-pol": "apertium-pol-szl",
    "ukr-rus": "apertium-rus-ukr",
    "urd-hin": "apertium-urd-hin",
    "zlm-ind": "apertium-ind-zlm",
}

# Apertium names languages with ISO 639-3 or 639-1 codes; configs use 639-1 where one exists.
ISO3_TO_1 = {
    "afr": "af", "arg": "an", "bel": "be", "bre": "br", "bul": "bg", "cat": "ca", "dan": "da", "eng": "en",
    "epo": "eo", "eus": "eu", "fra": "fr", "glg": "gl", "hbs": "sh", "hin": "hi", "ind": "id", "isl": "is",
    "ita": "it", "mkd": "mk", "nld": "nl", "nno": "nn", "nob": "nb", "oci": "oc", "pol": "pl", "por": "pt",
    "ron": "ro", "rus": "ru", "slv": "sl", "spa": "es", "srd": "sc", "swe": "sv", "ukr": "uk", "urd": "ur",
    "zlm": "ms",
}
DEFAULT_PIVOTS = ("es", "ca", "fr", "pt", "it", "gl", "en", "eo")
MAX_HOPS = 3
_PLAIN_MODE = re.compile(r"^([a-z]{2,3})-([a-z]{2,3})$")
_ANY_MODE = re.compile(r"^([a-z]{2,3}(?:_\w+)?)-([a-z]{2,3}(?:_\w+)?)(?:-[\w-]+)?$")
# Serbo-Croatian modes name the standard they write by suffix: eng-hbs_HR writes Croatian (Latin script)
VARIANT_CODES = {"hbs_HR": "hr", "hbs_BS": "bs", "hbs_SR": "sr"}


def lang_code(code: str) -> str:
    """``fra`` / ``fr`` / ``FR`` -> ``fr``; ``hbs`` -> ``sh``; unknown codes are returned lowercased."""
    code = code.strip().lower()
    return ISO3_TO_1.get(code, code)


def mode_langs(mode: str, plain_only: bool = False) -> tuple[str, str] | None:
    """(src, tgt) of an Apertium mode name (``eng-spa`` -> (en, es), ``eng-hbs_HR`` -> (en, hr)), or None if it
    is not a pair mode."""
    m = (_PLAIN_MODE if plain_only else _ANY_MODE).match(mode)
    if not m:
        return None
    src, tgt = (VARIANT_CODES.get(side, side.split("_", 1)[0]) for side in m.groups())
    return lang_code(src), lang_code(tgt)


def find_route(src: str, tgt: str, modes: Iterable[str], pivots: Sequence[str] = DEFAULT_PIVOTS,
               max_hops: int = MAX_HOPS) -> tuple[str, ...] | None:
    """The chain of plain ``modes`` from ``src`` to ``tgt`` with the fewest hops (at most ``max_hops``).

    Among equally short chains: the one whose pivot languages come first in ``pivots`` (a pivot not listed
    ranks after all listed ones), then by mode names; so the answer is deterministic. None if there is none.
    """
    src, tgt = lang_code(src), lang_code(tgt)
    edges: dict[str, list[tuple[str, str]]] = {}
    for mode in sorted(set(modes)):
        pair = mode_langs(mode, plain_only=True)
        if pair and pair[0] != pair[1]:
            edges.setdefault(pair[0], []).append((pair[1], mode))
    rank = {lang_code(p): i for i, p in enumerate(pivots)}
    frontier: list[tuple[tuple[int, ...], tuple[str, ...], str]] = [((), (), src)]
    reached = {src}  # a language reached in fewer hops is never a better pivot later (breadth first)
    for _ in range(max_hops):
        found, nxt = [], {}
        for cost, chain, lang in frontier:
            for to, mode in edges.get(lang, []):
                if to in reached:
                    continue
                item = (cost + ((rank.get(to, len(rank)),) if to != tgt else ()), chain + (mode,), to)
                if to == tgt:
                    found.append(item)
                elif to not in nxt or item[:2] < nxt[to][:2]:
                    nxt[to] = item  # the best chain to each language is the only one worth extending
        if found:
            return min(found)[1]
        frontier = sorted(nxt.values())
        reached.update(nxt)
    return None


def offline_targets(src: str, modes: Iterable[str], max_hops: int = MAX_HOPS,
                    pivots: Sequence[str] = DEFAULT_PIVOTS) -> dict[str, tuple[str, ...]]:
    """Every language reachable from ``src`` over ``modes`` -> its route (for the docs' language table)."""
    modes = list(modes)
    langs = {p[1] for m in modes if (p := mode_langs(m, plain_only=True))} - {lang_code(src)}
    routes = {t: find_route(src, t, modes, pivots, max_hops) for t in sorted(langs)}
    return {t: r for t, r in routes.items() if r}


_BLOCK = re.compile(r"<p>(.*?)</p>", re.DOTALL)
# Apertium's marks: "*word" unknown word, "#word" generation error, "@word" transfer error.
_MARK = re.compile(r"(?<![^\s(\"'¡¿«])[*#@](?=\w)")
_SPACES = re.compile(r"\s+")


class ApertiumError(RuntimeError):
    pass


def _sanitize(text: str) -> str:
    """One caption -> one line of escaped text (newlines inside a caption become spaces)."""
    return html.escape(_SPACES.sub(" ", text).strip(), quote=False)


class ApertiumTranslator:
    """Translate through the ``apertium`` command line, one process per hop of the route.

    Params: ``binary`` (default "apertium"), ``unknown_marks`` (keep Apertium's ``*`` marks on unknown
    words; default False -> ``-u``), ``clean_marks`` (strip leftover ``*``/``#``/``@`` word marks;
    default True), ``timeout_s`` per process (default 600), ``route`` (the chain of modes to use, e.g.
    ``[eng-spa, es-fr]``; default None = found over the installed pairs), ``pivots`` (pivot languages in
    order of preference when the route is found; default None = es, ca, fr, pt, it, gl, en, eo),
    ``max_hops`` (longest route searched, default 3).
    """

    def __init__(self, binary: str = "apertium", unknown_marks: bool = False, clean_marks: bool = True,
                 timeout_s: float = 600.0, route: list[str] | None = None, pivots: list[str] | None = None,
                 max_hops: int = MAX_HOPS):
        if route is not None:
            if isinstance(route, str) or not route or not all(isinstance(m, str) and m for m in route):
                raise ValueError(f"translate backend 'apertium': param 'route' must be a non-empty list of "
                                 f"Apertium modes (e.g. [eng-spa, es-fr]), got {route!r}")
            bad = [m for m in route if mode_langs(m) is None]
            if bad:
                raise ValueError(f"translate backend 'apertium': param 'route' has {bad}, which are not "
                                 f"Apertium pair modes like 'eng-spa' (see `apertium -l`)")
            langs = [mode_langs(m) for m in route]
            for (_, a), (b, _), m in zip(langs, langs[1:], route[1:], strict=False):
                if a != b:
                    raise ValueError(f"translate backend 'apertium': param 'route' is not a chain: '{m}' "
                                     f"starts from '{b}' but the previous hop ends in '{a}'")
        if pivots is not None and (isinstance(pivots, str) or not all(isinstance(p, str) for p in pivots)):
            raise ValueError(f"translate backend 'apertium': param 'pivots' must be a list of language codes, "
                             f"got {pivots!r}")
        if not isinstance(max_hops, int) or isinstance(max_hops, bool) or max_hops < 1:
            raise ValueError(f"translate backend 'apertium': param 'max_hops' must be an integer >= 1, "
                             f"got {max_hops!r}")
        self.binary = binary
        self.unknown_marks = unknown_marks
        self.clean_marks = clean_marks
        self.timeout_s = timeout_s
        self.route = tuple(route) if route is not None else None
        self.pivots = tuple(pivots) if pivots is not None else DEFAULT_PIVOTS
        self.max_hops = max_hops
        self._modes: set[str] | None = None

    def _available_modes(self) -> set[str]:
        """Installed modes; where apertium is absent, the Debian catalogue (so errors can say what to install)."""
        try:
            return self.installed_modes()
        except ApertiumError:
            return set(DEBIAN_MODES)

    def route_for(self, src: str, tgt: str) -> tuple[str, ...] | None:
        """The chain of modes used for ``src -> tgt`` (None when there is none)."""
        if self.route is not None:
            ends = (mode_langs(self.route[0])[0], mode_langs(self.route[-1])[1])
            return self.route if ends == (lang_code(src), lang_code(tgt)) else None
        return find_route(src, tgt, self._available_modes(), self.pivots, self.max_hops)

    def supports(self, src: str, tgt: str) -> bool:
        return self.route_for(src, tgt) is not None

    def installed_modes(self) -> set[str]:
        """Modes ``apertium -l`` lists; raises with the install command when the binary is missing."""
        if self._modes is None:
            exe = shutil.which(self.binary)
            if exe is None:
                raise ApertiumError(f"translate backend 'apertium': binary '{self.binary}' not found; install it "
                                    f"with: {APT_INSTALL}")
            res = subprocess.run([exe, "-l"], capture_output=True, text=True, timeout=60, check=False)
            self._modes = {line.strip() for line in res.stdout.splitlines() if line.strip()}
        return self._modes

    def _run(self, mode: str, stream: str) -> str:
        cmd = [self.binary, "-f", "html"]
        if not self.unknown_marks:
            cmd.append("-u")
        cmd.append(mode)
        res = subprocess.run(cmd, input=stream, capture_output=True, text=True, encoding="utf-8",
                             timeout=self.timeout_s, check=False)
        if res.returncode != 0:
            raise ApertiumError(f"translate backend 'apertium': {' '.join(cmd)} failed (exit {res.returncode}): "
                                f"{res.stderr.strip()[-500:]}")
        return res.stdout

    def translate(self, texts: list[str], src: str, tgt: str) -> list[str]:
        chain = self.route_for(src, tgt)
        if chain is None:
            if self.route is not None:
                raise ApertiumError(f"translate backend 'apertium': param 'route' {list(self.route)} does not go "
                                    f"{src}->{tgt}")
            raise ApertiumError(f"translate backend 'apertium' cannot translate {src}->{tgt}: no chain of at most "
                                f"{self.max_hops} Debian Apertium pairs goes there (see "
                                f"docs/backends-translate-describe.md for the languages that have one)")
        installed = self.installed_modes()
        missing = [m for m in chain if m not in installed]
        if missing:
            packages = sorted({DEBIAN_MODES.get(m, f"<the package with mode {m}>") for m in missing})
            raise ApertiumError(f"translate backend 'apertium': language pair(s) {missing} for {src}->{tgt} are not "
                                f"installed; install them with: apt-get install apertium {' '.join(packages)}")
        if not texts:
            return []
        stream = "".join(f"<p>{_sanitize(t)}</p>\n" for t in texts)
        for mode in chain:
            stream = self._run(mode, stream)
        blocks = _BLOCK.findall(stream)
        if len(blocks) != len(texts):
            raise ApertiumError(f"translate backend 'apertium': {len(texts)} captions in but {len(blocks)} out "
                                f"({src}->{tgt} via {'|'.join(chain)}); line alignment lost")
        out = []
        for source, block in zip(texts, blocks, strict=True):
            text = html.unescape(block)
            if self.clean_marks:
                # A mark character the caption itself contains ("#1 player") is kept: it is not Apertium's.
                text = _MARK.sub(lambda m, s=source: m.group(0) if m.group(0) in s else "", text)
            out.append(_SPACES.sub(" ", text).strip())
        return out
