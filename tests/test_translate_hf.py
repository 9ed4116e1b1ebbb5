"""hf-seq2seq on CPU with a tiny random-weight MarianMT saved and re-loaded through from_pretrained."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytest.importorskip("transformers", reason="hf-seq2seq needs transformers")
pytest.importorskip("tokenizers", reason="the tiny test tokenizer is built with tokenizers")

import torch  # noqa: E402

from ccr.data.tables import read_captions  # noqa: E402
from ccr.translate import TRANSLATORS, translate_captions  # noqa: E402

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
