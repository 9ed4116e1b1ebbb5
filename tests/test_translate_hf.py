"""hf-seq2seq on CPU with tiny random-weight models (MarianMT, NLLB, T5) saved and re-loaded through from_pretrained."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytest.importorskip("transformers", reason="hf-seq2seq needs transformers")
pytest.importorskip("tokenizers", reason="the tiny test tokenizer is built with tokenizers")
pytest.importorskip("accelerate", reason="models are loaded with device_map, which needs accelerate")
pytest.importorskip("pycountry", reason="language codes are checked with pycountry")

import torch  # noqa: E402

from ccr.data.tables import read_captions  # noqa: E402
from ccr.translate import TRANSLATORS, TranslationError, translate_captions  # noqa: E402
from ccr.translate.hf import code_languages, language_matches  # noqa: E402

WORDS = ["a", "the", "dog", "cat", "man", "woman", "runs", "sits", "on", "in", "park", "street", "red", "blue", "chien", "chat", "homme", "femme", "rouge", "bleu", "le", "la", "un", "une", "dans", "parc", "rue", "court"]


def _tiny_marian(path: Path, lang_tokens: tuple[str, ...] = ()) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import MarianConfig, MarianMTModel, PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for w in (*WORDS, ".", ",", *lang_tokens):
        vocab[w] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    torch.manual_seed(0)
    cfg = MarianConfig(vocab_size=len(vocab), d_model=16, encoder_layers=1, decoder_layers=1,
                       encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
                       max_position_embeddings=64, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
                       forced_eos_token_id=1)
    MarianMTModel(cfg).save_pretrained(path)
    fast.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return _tiny_marian(tmp_path_factory.mktemp("marian") / "tiny-marian")


def test_round_trip_from_pretrained(tiny_model):
    params = {"model": str(tiny_model), "device": "cpu", "threads": 1, "max_new_tokens": 6, "num_beams": 2,
              "batch_size": 2, "pairs": ["en-fr"]}
    t = TRANSLATORS.create("hf-seq2seq", **params)
    assert t.supports("en", "fr") and not t.supports("en", "de")
    texts = ["A dog runs in the park.", "a red cat", "zzz unknown words", "the\nwoman"]
    out = t.translate(texts, "en", "fr")
    assert len(out) == 4 and all(isinstance(s, str) for s in out)
    assert out == TRANSLATORS.create("hf-seq2seq", **params).translate(texts, "en", "fr")  # deterministic
    with pytest.raises(ValueError, match="cannot translate en->de"):
        t.translate(texts, "en", "de")


def test_translate_captions_with_tiny_model(tiny_model, tmp_path):
    src = tmp_path / "captions.parquet"
    pq.write_table(pa.table({
        "caption_id": ["a#0", "b#0", "c#0"], "image_id": ["a", "b", "c"], "lang": ["en"] * 3,
        "text": ["A dog runs.", "A red car.", "A cat sleeps."], "origin": ["human"] * 3,
        "split": ["train", "train", "test"],
    }), src)
    translate_captions(src, "fr", "hf-seq2seq", {"model": str(tiny_model), "device": "cpu", "max_new_tokens": 6,
                                                 "num_beams": 1}, tmp_path / "fr.parquet", shard_size=1)
    t = read_captions(tmp_path / "fr.parquet")  # validates: non-empty texts, captions schema
    assert t.column("caption_id").to_pylist() == ["a#0#mt-fr", "b#0#mt-fr"]


def test_nllb_style_forced_target_token(tmp_path):
    path = _tiny_marian(tmp_path / "tiny-nllb", lang_tokens=("eng_Latn", "fra_Latn"))
    t = TRANSLATORS.create("hf-seq2seq", model=str(path), device="cpu", src_lang="eng_Latn", tgt_lang="fra_Latn",
                           max_new_tokens=4, num_beams=1)
    fra = t.tokenizer.convert_tokens_to_ids("fra_Latn")
    assert t.forced_bos_token_id == fra
    inputs = t.tokenizer(["a dog"], return_tensors="pt")
    ids = t.model.generate(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], max_new_tokens=4,
                           forced_bos_token_id=t.forced_bos_token_id)
    assert int(ids[0, 1]) == fra  # first generated token after decoder start is the target language
    assert len(t.translate(["a dog", "a cat"], "en", "fr")) == 2
    with pytest.raises(ValueError, match="tgt_lang"):
        TRANSLATORS.create("hf-seq2seq", model=str(path), device="cpu", tgt_lang="deu_Latn")


def test_missing_model_names_param(tmp_path):
    with pytest.raises(OSError, match="param 'model'"):
        TRANSLATORS.create("hf-seq2seq", model=str(tmp_path / "no-such-model"), device="cpu")


def _tiny_nllb(path: Path) -> Path:
    """A real NllbTokenizer (character vocabulary + the 202 FLORES-200 language codes) and a tiny M2M100 model."""
    import string

    from transformers import M2M100Config, M2M100ForConditionalGeneration, NllbTokenizer

    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "\u2581": 4}
    for ch in string.ascii_lowercase + ".,":
        vocab[ch] = len(vocab)
    tok = NllbTokenizer(vocab=vocab, merges=[])
    torch.manual_seed(0)
    cfg = M2M100Config(vocab_size=len(tok), d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                       decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=64,
                       pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2)
    M2M100ForConditionalGeneration(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny_nllb(tmp_path_factory) -> Path:
    return _tiny_nllb(tmp_path_factory.mktemp("nllb") / "tiny-nllb")


def _nllb(model: Path, **params):
    return TRANSLATORS.create("hf-seq2seq", model=str(model), device="cpu", max_new_tokens=4, num_beams=1, **params)


def test_nllb_needs_tgt_lang(tiny_nllb):
    with pytest.raises(ValueError, match="'tgt_lang' is required"):
        _nllb(tiny_nllb)


def test_nllb_src_and_tgt_codes_reach_the_model(tiny_nllb):
    t = _nllb(tiny_nllb, src_lang="eng_Latn", tgt_lang="fra_Latn")
    assert type(t.tokenizer).__name__.startswith("NllbTokenizer")
    fra, eng = (t.tokenizer.convert_tokens_to_ids(c) for c in ("fra_Latn", "eng_Latn"))
    assert t.forced_bos_token_id == fra
    inputs = t.tokenizer(["a dog"], return_tensors="pt")
    assert int(inputs["input_ids"][0, 0]) == eng  # NLLB prepends the source-language token
    ids = t.model.generate(**inputs, max_new_tokens=3, num_beams=1, forced_bos_token_id=t.forced_bos_token_id)
    assert int(ids[0, 1]) == fra  # first token after decoder start: the target language
    assert t.supports("en", "fr")
    assert len(t.translate(["a dog", "a cat"], "en", "fr")) == 2
    # Without src_lang the tokenizer's own default (eng_Latn) is used, and it is checked too.
    assert _nllb(tiny_nllb, tgt_lang="fra_Latn").src_lang == "eng_Latn"


def test_nllb_wrong_target_language_is_refused(tiny_nllb, tmp_path):
    t = _nllb(tiny_nllb, tgt_lang="deu_Latn")
    assert t.supports("en", "de") and not t.supports("en", "fr")
    with pytest.raises(ValueError, match=r"param 'tgt_lang' is 'deu_Latn' \(German\).*en->fr \(French\)"):
        t.translate(["a dog"], "en", "fr")
    with pytest.raises(ValueError, match="param 'src_lang' is 'fra_Latn'"):
        _nllb(tiny_nllb, src_lang="fra_Latn", tgt_lang="deu_Latn").translate(["a dog"], "en", "de")
    with pytest.raises(ValueError, match="'xyz_Latn' is not a token"):
        _nllb(tiny_nllb, tgt_lang="xyz_Latn")
    src = tmp_path / "captions.parquet"
    pq.write_table(pa.table({"caption_id": ["a#0"], "image_id": ["a"], "lang": ["en"], "text": ["a dog"],
                             "origin": ["human"], "split": ["train"]}), src)
    with pytest.raises(TranslationError, match="cannot translate en->fr"):
        translate_captions(src, "fr", "hf-seq2seq", {"model": str(tiny_nllb), "device": "cpu", "tgt_lang": "deu_Latn"},
                           tmp_path / "fr.parquet")
    assert not (tmp_path / "fr.parquet").exists()


@pytest.mark.parametrize(("model_code", "stage", "ok"), [
    ("fra_Latn", "fr", True), ("fr", "fr", True), ("fr_XX", "fr", True), ("__fr__", "fr", True),
    ("ces_Latn", "cs", True), ("jpn_Jpan", "ja", True), ("zho_Hans", "zh", True), ("zho_Hant", "zh", True),
    ("arb_Arab", "ar", True), ("nob_Latn", "no", True), ("deu_Latn", "de-task2", True), ("fra_Latn", "fre", True),
    ("deu_Latn", "fr", False), ("de", "fr", False), ("spa_Latn", "pt", False), ("yue_Hant", "zh", False),
])
def test_language_codes(model_code, stage, ok):
    assert language_matches(model_code, stage) is ok
    assert code_languages(model_code)


def test_t5_never_gets_float16(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

    from ccr.hf_loading import resolve_dtype

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    fast.save_pretrained(tmp_path / "t5")
    T5ForConditionalGeneration(T5Config(vocab_size=len(vocab), d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2,
                                        decoder_start_token_id=0)).save_pretrained(tmp_path / "t5")
    t = TRANSLATORS.create("hf-seq2seq", model=str(tmp_path / "t5"), device="cpu", max_new_tokens=3, num_beams=1,
                           prefix="translate English to French: ")
    assert t.dtype == torch.float32 and len(t.translate(["a dog"], "en", "fr")) == 1
    # On a GPU: float16 is refused for T5 (activations overflow), auto never picks it.
    with pytest.raises(ValueError, match="float16 is refused for t5"):
        resolve_dtype("float16", "cuda", "x", "t5")
    assert resolve_dtype("float16", "cuda", "x", "marian") == torch.float16
