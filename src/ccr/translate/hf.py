"""Backend ``hf-seq2seq``: a Hugging Face transformers encoder-decoder MT model (GPU node or CPU).

Works with MarianMT (``Helsinki-NLP/opus-mt-en-fr``), NLLB (``facebook/nllb-200-distilled-600M`` with
``src_lang: eng_Latn``, ``tgt_lang: fra_Latn``), M2M100 (``src_lang: en``, ``tgt_lang: fr``) and
T5-style models (``prefix: "translate English to French: "``). ``model`` is a local directory or a hub
id already in the local Hugging Face cache; nothing is downloaded when ``local_files_only`` is true.
"""

from __future__ import annotations

import logging
from typing import Any

from ccr.io import batched

log = logging.getLogger("ccr.translate")

_DTYPES = ("auto", "float32", "float16", "bfloat16")


def resolve_device(device: str) -> str:
    """``"auto"`` -> ``"cuda"`` when a GPU is visible, else ``"cpu"``."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


class HFSeq2SeqTranslator:
    """Batched beam-search translation with ``AutoModelForSeq2SeqLM``.

    Params: ``model`` (required), ``device`` ("auto"), ``batch_size`` (32), ``max_new_tokens`` (128),
    ``num_beams`` (4), ``src_lang``/``tgt_lang`` (model language codes, NLLB/M2M100 style; the target one
    becomes ``forced_bos_token_id``), ``prefix`` (T5-style task prefix), ``pairs`` (e.g. ``["en-fr"]``:
    the ISO pairs this model can do; default: whatever is asked), ``dtype`` ("auto": float16 on GPU,
    float32 on CPU), ``threads`` (torch CPU threads), ``local_files_only`` (True).
    """

    def __init__(self, model: str, device: str = "auto", batch_size: int = 32, max_new_tokens: int = 128,
                 num_beams: int = 4, src_lang: str | None = None, tgt_lang: str | None = None, prefix: str = "",
                 pairs: list[str] | None = None, dtype: str = "auto", threads: int | None = None,
                 local_files_only: bool = True):
        import torch
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        if batch_size < 1 or max_new_tokens < 1 or num_beams < 1:
            raise ValueError("translate backend 'hf-seq2seq': batch_size, max_new_tokens and num_beams must be >= 1")
        if dtype not in _DTYPES:
            raise ValueError(f"translate backend 'hf-seq2seq': param 'dtype' must be one of {_DTYPES}, got {dtype!r}")
        if threads:
            torch.set_num_threads(int(threads))
        self.device = resolve_device(device)
        self.batch_size, self.max_new_tokens, self.num_beams = batch_size, max_new_tokens, num_beams
        self.src_lang, self.tgt_lang, self.prefix = src_lang, tgt_lang, prefix
        self.pairs = set(pairs) if pairs is not None else None
        if dtype == "auto":
            dtype = "float16" if self.device.startswith("cuda") else "float32"
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model, local_files_only=local_files_only)
            self.model = AutoModelForSeq2SeqLM.from_pretrained(
                model, dtype=getattr(torch, dtype), local_files_only=local_files_only
            )
        except OSError as err:
            raise OSError(f"translate backend 'hf-seq2seq': cannot load model '{model}' (param 'model'; no "
                          f"downloads when local_files_only=True): {err}") from err
        self.model.to(self.device).eval()
        if src_lang is not None and hasattr(self.tokenizer, "src_lang"):
            self.tokenizer.src_lang = src_lang
        self.forced_bos_token_id = self._target_token(tgt_lang) if tgt_lang else None
        log.info("hf-seq2seq: loaded %s on %s (%s)", model, self.device, dtype)

    def _target_token(self, code: str) -> int:
        """Id of the target-language token forced as the first generated token (NLLB / M2M100)."""
        tok = self.tokenizer
        if hasattr(tok, "get_lang_id"):  # M2M100 uses "__fr__" tokens behind get_lang_id("fr")
            return int(tok.get_lang_id(code))
        token_id = tok.convert_tokens_to_ids(code)
        if token_id is None or token_id == tok.unk_token_id:
            raise ValueError(f"translate backend 'hf-seq2seq': param 'tgt_lang' {code!r} is not a token of this "
                             f"model's tokenizer")
        return int(token_id)

    def supports(self, src: str, tgt: str) -> bool:
        return self.pairs is None or f"{src}-{tgt}" in self.pairs

    def translate(self, texts: list[str], src: str, tgt: str) -> list[str]:
        import torch

        if not self.supports(src, tgt):
            raise ValueError(f"translate backend 'hf-seq2seq' cannot translate {src}->{tgt}; "
                             f"param 'pairs' is {sorted(self.pairs or [])}")
        gen: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "num_beams": self.num_beams,
                               "do_sample": False}
        if self.forced_bos_token_id is not None:
            gen["forced_bos_token_id"] = self.forced_bos_token_id
        out: list[str] = []
        for chunk in batched(texts, self.batch_size):
            inputs = self.tokenizer([self.prefix + " ".join(t.split()) for t in chunk], return_tensors="pt",
                                    padding=True, truncation=True)
            inputs = {k: v.to(self.device) for k, v in inputs.items() if k in ("input_ids", "attention_mask")}
            with torch.inference_mode():
                ids = self.model.generate(**inputs, **gen)
            out.extend(s.strip() for s in self.tokenizer.batch_decode(ids, skip_special_tokens=True))
        return out
