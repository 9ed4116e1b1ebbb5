"""Backend ``hf-seq2seq``: a Hugging Face transformers encoder-decoder MT model (GPU node or CPU).

Works with MarianMT (``Helsinki-NLP/opus-mt-en-fr``), NLLB (``facebook/nllb-200-distilled-600M`` with
``src_lang: eng_Latn``, ``tgt_lang: fra_Latn``), M2M100 (``src_lang: en``, ``tgt_lang: fr``), mBART-50
(``en_XX`` / ``fr_XX``) and T5-style models (``prefix: "translate English to French: "``). ``model`` is a
local directory or a hub id already in the local Hugging Face cache; nothing is downloaded when
``local_files_only`` is true.

Many-to-many models (NLLB, M2M100, mBART-50) write whatever language ``tgt_lang`` names, so for them
``tgt_lang`` is required and checked against the language the stage asks for (``translate(texts, "en",
"fr")``): ``deu_Latn`` for a French target is refused instead of silently writing German training text.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from ccr.hf_loading import load_kwargs, local_model, read_config, resolve_device, resolve_dtype
from ccr.io import batched

log = logging.getLogger("ccr.translate")

__all__ = ["HFSeq2SeqTranslator", "code_languages", "iso639_3", "resolve_device"]

WHAT = "translate backend 'hf-seq2seq'"

# Many-to-many model families: the output language is chosen by a language-code token.
MULTILINGUAL_MODEL_TYPES = frozenset({"m2m_100", "nllb-moe", "nllb_moe", "seamless_m4t", "seamless_m4t_v2"})

# NLLB/FLORES-200 write some macrolanguages with the code of their standard individual language
# (Standard Arabic arb, not the macrolanguage ara). Stage codes are ISO 639-1 (-> the macrolanguage).
MACRO_MEMBERS: dict[str, frozenset[str]] = {
    "ara": frozenset({"arb"}), "aym": frozenset({"ayr"}), "aze": frozenset({"azj"}), "est": frozenset({"ekk"}),
    "fas": frozenset({"pes"}), "kau": frozenset({"knc"}), "kur": frozenset({"kmr"}), "lav": frozenset({"lvs"}),
    "mlg": frozenset({"plt"}), "mon": frozenset({"khk"}), "msa": frozenset({"zsm"}), "nep": frozenset({"npi"}),
    "nor": frozenset({"nob", "nno"}), "ori": frozenset({"ory"}), "orm": frozenset({"gaz"}),
    "pus": frozenset({"pbt"}), "que": frozenset({"quy"}), "sqi": frozenset({"als"}), "swa": frozenset({"swh"}),
    "uzb": frozenset({"uzn"}), "yid": frozenset({"ydd"}), "zho": frozenset({"cmn"}),
}

_FLORES = re.compile(r"^([a-z]{3})_[A-Z][a-z]{3}$")  # NLLB: fra_Latn
_MBART = re.compile(r"^([a-z]{2})_[A-Z]{2}$")  # mBART-50: fr_XX, zh_CN
_M2M_TOKEN = re.compile(r"^__([a-z]{2,3})__$")  # M2M100 vocabulary token: __fr__
_PLAIN = re.compile(r"^([a-z]{2,3})$")  # M2M100 code: fr


def iso639_3(code: str) -> str | None:
    """ISO 639-3 code of a stage language code (``fr``, ``fra``, ``fre``, ``pt-BR``), or None when unknown."""
    import pycountry

    primary = re.split(r"[-_]", code.strip())[0].lower()
    if len(primary) == 2:
        lang = pycountry.languages.get(alpha_2=primary)
    elif len(primary) == 3:
        lang = pycountry.languages.get(alpha_3=primary) or pycountry.languages.get(bibliographic=primary)
    else:
        lang = None
    return lang.alpha_3 if lang is not None else None


def code_languages(model_code: str) -> set[str]:
    """ISO 639-3 codes a model language code stands for (``fra_Latn`` -> {fra}; ``fr``/``fr_XX`` -> {fra})."""
    for pattern in (_FLORES, _MBART, _M2M_TOKEN, _PLAIN):
        match = pattern.match(model_code)
        if match:
            lang = iso639_3(match.group(1))
            return {lang} if lang else {match.group(1)}
    return set()


def language_matches(model_code: str, stage_code: str) -> bool:
    """Whether the model's language code writes the stage's language (macrolanguage members included)."""
    want = iso639_3(stage_code)
    if want is None:
        return False
    accepted = {want} | MACRO_MEMBERS.get(want, frozenset())
    return bool(code_languages(model_code) & accepted)


def _language_name(code: str) -> str:
    import pycountry

    lang = iso639_3(code)
    found = pycountry.languages.get(alpha_3=lang) if lang else None
    return found.name if found is not None else code


class HFSeq2SeqTranslator:
    """Batched beam-search translation with ``AutoModelForSeq2SeqLM``.

    Params: ``model`` (required), ``device`` ("auto"), ``batch_size`` (32), ``max_new_tokens`` (128),
    ``num_beams`` (4), ``src_lang``/``tgt_lang`` (the model's language codes, NLLB/M2M100/mBART style; the
    target one becomes ``forced_bos_token_id``; ``tgt_lang`` is required for many-to-many models and both are
    checked against the pair the stage asks for), ``prefix`` (T5-style task prefix), ``pairs`` (e.g.
    ``["en-fr"]``: the ISO pairs this model can do; default: whatever is asked), ``dtype`` ("auto": bfloat16
    on a GPU that supports it, else float32; float16 is refused for T5-family models), ``threads`` (torch CPU
    threads), ``local_files_only`` (True).
    """

    def __init__(self, model: str, device: str = "auto", batch_size: int = 32, max_new_tokens: int = 128,
                 num_beams: int = 4, src_lang: str | None = None, tgt_lang: str | None = None, prefix: str = "",
                 pairs: list[str] | None = None, dtype: str = "auto", threads: int | None = None,
                 local_files_only: bool = True):
        import torch
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        if batch_size < 1 or max_new_tokens < 1 or num_beams < 1:
            raise ValueError(f"{WHAT}: batch_size, max_new_tokens and num_beams must be >= 1")
        if threads:
            torch.set_num_threads(int(threads))
        self.device = resolve_device(device)
        self.batch_size, self.max_new_tokens, self.num_beams = batch_size, max_new_tokens, num_beams
        self.prefix = prefix
        self.pairs = set(pairs) if pairs is not None else None
        folder = local_model(model, local_files_only, WHAT)
        model_type = read_config(folder, local_files_only).get("model_type")
        self.dtype = resolve_dtype(dtype, self.device, f"{WHAT} (model '{model}')", model_type)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=local_files_only)
            self.model = AutoModelForSeq2SeqLM.from_pretrained(
                folder, **load_kwargs(self.device, self.dtype, local_files_only)
            )
        except OSError as err:
            raise OSError(f"{WHAT}: cannot load model '{model}' (param 'model'; no downloads when "
                          f"local_files_only=True): {err}") from err
        self.model.eval()
        tok = self.tokenizer
        # NLLB/M2M100/mBART tokenizers carry a src_lang (it selects the source-language token they prepend).
        self.multilingual = hasattr(tok, "src_lang") or model_type in MULTILINGUAL_MODEL_TYPES
        if self.multilingual and not tgt_lang:
            raise ValueError(
                f"{WHAT}: model '{model}' ({type(tok).__name__}) translates into whatever language param 'tgt_lang' "
                f"names, so 'tgt_lang' is required: the model's code for the target language (NLLB: fra_Latn, "
                f"deu_Latn, ces_Latn, jpn_Jpan, zho_Hans; M2M100: fr, de, cs, ja, zh; mBART-50: fr_XX)"
            )
        if src_lang is not None and hasattr(tok, "src_lang"):
            tok.src_lang = src_lang
        # The tokenizer's own default (NLLB: eng_Latn, M2M100: en) is what it prepends when src_lang is not given.
        self.src_lang = src_lang if src_lang is not None else getattr(tok, "src_lang", None)
        self.tgt_lang = tgt_lang
        if tgt_lang and hasattr(tok, "tgt_lang"):
            tok.tgt_lang = tgt_lang
        self.forced_bos_token_id = self._target_token(tgt_lang) if tgt_lang else None
        log.info("hf-seq2seq: loaded %s on %s (%s)%s", model, self.device, str(self.dtype).replace("torch.", ""),
                 f", {self.src_lang}->{tgt_lang}" if tgt_lang else "")

    def _target_token(self, code: str) -> int:
        """Id of the target-language token forced as the first generated token (NLLB / M2M100 / mBART)."""
        tok = self.tokenizer
        if hasattr(tok, "get_lang_id"):  # M2M100 uses "__fr__" tokens behind get_lang_id("fr")
            try:
                return int(tok.get_lang_id(code))
            except KeyError as err:
                raise ValueError(f"{WHAT}: param 'tgt_lang' {code!r} is not a language code of this model's "
                                 f"tokenizer") from err
        token_id = tok.convert_tokens_to_ids(code)
        if token_id is None or token_id == tok.unk_token_id:
            raise ValueError(f"{WHAT}: param 'tgt_lang' {code!r} is not a token of this model's tokenizer")
        return int(token_id)

    def _code_problem(self, src: str, tgt: str) -> str | None:
        """Why the configured language codes cannot do ``src->tgt`` (None when they can)."""
        for param, code, want in (("tgt_lang", self.tgt_lang, tgt), ("src_lang", self.src_lang, src)):
            if code and code_languages(code) and not language_matches(code, want):
                return (f"param '{param}' is {code!r} ({_language_name(code)}) but the stage asks for {src}->{tgt} "
                        f"({_language_name(want)}); set '{param}' to the model's code for {want!r}")
        return None

    def supports(self, src: str, tgt: str) -> bool:
        if self.pairs is not None and f"{src}-{tgt}" not in self.pairs:
            return False
        problem = self._code_problem(src, tgt)
        if problem:
            log.error("%s: %s", WHAT, problem)  # the stage's own error says only that the pair is not supported
            return False
        return True

    def translate(self, texts: list[str], src: str, tgt: str) -> list[str]:
        import torch

        if self.pairs is not None and f"{src}-{tgt}" not in self.pairs:
            raise ValueError(f"{WHAT} cannot translate {src}->{tgt}; param 'pairs' is {sorted(self.pairs)}")
        problem = self._code_problem(src, tgt)
        if problem:
            raise ValueError(f"{WHAT} cannot translate {src}->{tgt}: {problem}")
        gen: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "num_beams": self.num_beams,
                               "do_sample": False}
        if self.forced_bos_token_id is not None:
            gen["forced_bos_token_id"] = self.forced_bos_token_id
        device = self.model.device
        out: list[str] = []
        for chunk in batched(texts, self.batch_size):
            inputs = self.tokenizer([self.prefix + " ".join(t.split()) for t in chunk], return_tensors="pt",
                                    padding=True, truncation=True)
            inputs = {k: v.to(device) for k, v in inputs.items() if k in ("input_ids", "attention_mask")}
            with torch.inference_mode():
                ids = self.model.generate(**inputs, **gen)
            out.extend(s.strip() for s in self.tokenizer.batch_decode(ids, skip_special_tokens=True))
        return out
