"""Offline default translator: Debian's rule-based Apertium (en->es, en->fr by pivot through Spanish).

A whole batch goes through ONE ``apertium`` process per language pair (one process per caption is about
100x slower). Plain-text mode is unsafe for batches: Apertium treats a newline as ordinary whitespace, so
its transfer rules can reorder words ACROSS captions (e.g. "The xyzzyq cat\\nMr. Smith goes." comes out with
"Smith" moved into the previous line). We therefore use the HTML format and wrap every caption in its own
``<p>...</p>`` block: format tags are block boundaries Apertium never moves words across, so the output has
exactly one ``<p>`` block per input caption, which we check.
"""

from __future__ import annotations

import html
import re
import shutil
import subprocess

APT_INSTALL = "apt-get install apertium apertium-eng-spa apertium-fr-es"

# (src, tgt) -> chain of installed Apertium modes. Pivoting through Spanish is the only en<->fr route
# packaged in Debian (apertium-eng-spa + apertium-fr-es).
PIPELINES: dict[tuple[str, str], tuple[str, ...]] = {
    ("en", "es"): ("eng-spa",),
    ("en", "fr"): ("eng-spa", "es-fr"),
    ("es", "en"): ("spa-eng",),
    ("fr", "en"): ("fr-es", "spa-eng"),
    ("es", "fr"): ("es-fr",),
    ("fr", "es"): ("fr-es",),
}

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
    """Translate through the ``apertium`` command line.

    Params: ``binary`` (default "apertium"), ``unknown_marks`` (keep Apertium's ``*`` marks on unknown
    words; default False -> ``-u``), ``clean_marks`` (strip leftover ``*``/``#``/``@`` word marks;
    default True), ``timeout_s`` per process (default 600).
    """

    def __init__(self, binary: str = "apertium", unknown_marks: bool = False, clean_marks: bool = True,
                 timeout_s: float = 600.0):
        self.binary = binary
        self.unknown_marks = unknown_marks
        self.clean_marks = clean_marks
        self.timeout_s = timeout_s
        self._modes: set[str] | None = None

    def supports(self, src: str, tgt: str) -> bool:
        return (src, tgt) in PIPELINES

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
        if not self.supports(src, tgt):
            raise ApertiumError(f"translate backend 'apertium' cannot translate {src}->{tgt}; "
                                f"supported pairs: {sorted(f'{a}->{b}' for a, b in PIPELINES)}")
        chain = PIPELINES[(src, tgt)]
        missing = [m for m in chain if m not in self.installed_modes()]
        if missing:
            raise ApertiumError(f"translate backend 'apertium': language pair(s) {missing} for {src}->{tgt} are not "
                                f"installed; install them with: {APT_INSTALL}")
        if not texts:
            return []
        stream = "".join(f"<p>{_sanitize(t)}</p>\n" for t in texts)
        for mode in chain:
            stream = self._run(mode, stream)
        blocks = _BLOCK.findall(stream)
        if len(blocks) != len(texts):
            raise ApertiumError(f"translate backend 'apertium': {len(texts)} captions in but {len(blocks)} out "
                                f"({src}->{tgt}); line alignment lost")
        out = []
        for source, block in zip(texts, blocks, strict=True):
            text = html.unescape(block)
            if self.clean_marks:
                # A mark character the caption itself contains ("#1 player") is kept: it is not Apertium's.
                text = _MARK.sub(lambda m, s=source: m.group(0) if m.group(0) in s else "", text)
            out.append(_SPACES.sub(" ", text).strip())
        return out
