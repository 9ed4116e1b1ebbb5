"""transformers backends on tiny random-weight models saved to tmp_path and reloaded (real loading path)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

pytest.importorskip("transformers", reason="transformers not installed")
pytest.importorskip("tokenizers", reason="tokenizers not installed")
pytest.importorskip("accelerate", reason="models are loaded with device_map, which needs accelerate")

from ccr.data.tables import CAPTIONS_SCHEMA, IMAGES_SCHEMA  # noqa: E402
from ccr.features import IMAGE_ENCODERS, TEXT_ENCODERS, embed_images, embed_texts, read_features  # noqa: E402
from ccr.io import write_table_atomic  # noqa: E402

SENTENCES = [
    "a dog runs on the grass",
    "un chien court sur l'herbe",
    "a red car parked near a building",
    "two people ride bicycles in the park",
]
TINY = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}


@pytest.fixture(scope="module")
def clip_dirs(tmp_path_factory):
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("clip")
    proc = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    vision = CLIPVisionModel(CLIPVisionConfig(image_size=32, patch_size=8, **TINY))
    vision.save_pretrained(root / "vision")
    proc.save_pretrained(root / "vision")
    full = CLIPModel(CLIPConfig(text_config=TINY, vision_config={"image_size": 32, "patch_size": 8, **TINY},
                                projection_dim=16))
    full.save_pretrained(root / "full")
    proc.save_pretrained(root / "full")
    return root


@pytest.fixture(scope="module")
def siglip2_dirs(tmp_path_factory):
    """Tiny random SigLIP2 NaFlex checkpoints: a vision tower and a full model. Their configs have no image_size."""
    import torch
    from transformers import Siglip2Config, Siglip2Model, Siglip2VisionConfig, Siglip2VisionModel

    try:
        from transformers import Siglip2ImageProcessorPil as Processor  # no torchvision needed
    except ImportError:  # older transformers: one processor class
        from transformers import Siglip2ImageProcessor as Processor

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("siglip2")
    # 8x8 patches, at most 20 per image: a 4x4 grid (16 tokens) once images are resized to 32x32 squares.
    proc = Processor(patch_size=8, max_num_patches=20)
    vision_cfg = {"num_patches": 16, "patch_size": 8, **TINY}
    Siglip2VisionModel(Siglip2VisionConfig(**vision_cfg)).save_pretrained(root / "vision")
    proc.save_pretrained(root / "vision")
    full = Siglip2Model(Siglip2Config(text_config={**TINY, "vocab_size": 64}, vision_config=vision_cfg))
    full.save_pretrained(root / "full")
    proc.save_pretrained(root / "full")
    return root


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("bert")
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(SENTENCES * 3 + ["query: passage:"], trainers.WordPieceTrainer(vocab_size=200, special_tokens=specials))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))]
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")
    fast.save_pretrained(root)
    BertModel(BertConfig(vocab_size=tok.get_vocab_size(), max_position_embeddings=64, **TINY)).save_pretrained(root)
    return root


def _images(n: int) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (40 + i, 50, 3), dtype=np.uint8)) for i in range(n)]


def test_hf_clip_vision_tower(clip_dirs):
    enc = IMAGE_ENCODERS.create("hf-clip", model=str(clip_dirs / "vision"), device="cpu", batch_size=2, threads=1)
    assert enc.dim == 32 and enc.n_tokens == 16
    pooled, tokens = enc.encode(_images(3))
    assert pooled.shape == (3, 32) and tokens.shape == (3, 16, 32)
    assert pooled.dtype == tokens.dtype == np.float32
    again, _ = enc.encode(_images(3)[1:])
    np.testing.assert_allclose(again, pooled[1:], rtol=1e-4, atol=1e-5)


def test_hf_clip_full_model_with_projection(clip_dirs):
    enc = IMAGE_ENCODERS.create("hf-clip", model=str(clip_dirs / "full"), device="cpu", projection=True)
    assert enc.dim == 16 and enc.n_tokens == 16
    pooled, tokens = enc.encode(_images(2))
    assert pooled.shape == (2, 16) and tokens.shape == (2, 16, 16)
    plain = IMAGE_ENCODERS.create("hf-clip", model=str(clip_dirs / "full"), device="cpu")
    assert plain.dim == 32
    with pytest.raises(ValueError, match="visual_projection"):
        IMAGE_ENCODERS.create("hf-clip", model=str(clip_dirs / "vision"), device="cpu", projection=True)


@pytest.mark.parametrize("which", ["vision", "full"])
def test_hf_clip_siglip2_naflex(siglip2_dirs, which):
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(siglip2_dirs / which)
    assert getattr(getattr(cfg, "vision_config", cfg), "image_size", None) is None  # what broke hf-clip before
    enc = IMAGE_ENCODERS.create("hf-clip", model=str(siglip2_dirs / which), device="cpu", batch_size=2)
    assert enc.dim == 32 and enc.n_tokens == 16
    images = [*_images(2), Image.new("RGB", (90, 20), (10, 200, 30))]  # very wide: still 16 real patches
    pooled, tokens = enc.encode(images)
    assert pooled.shape == (3, 32) and tokens.shape == (3, 16, 32)
    assert np.isfinite(pooled).all() and np.isfinite(tokens).all()
    assert not np.allclose(tokens[0], tokens[2])
    np.testing.assert_allclose(enc.encode(images[1:2])[0][0], pooled[1], rtol=1e-4, atol=1e-5)  # batching


def test_hf_clip_offline_hub_id_not_cached(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="hf download google/siglip2-base-patch16-naflex"):
        IMAGE_ENCODERS.create("hf-clip", model="google/siglip2-base-patch16-naflex", device="cpu")
    with pytest.raises(FileNotFoundError, match="hf download intfloat/multilingual-e5-base"):
        TEXT_ENCODERS.create("hf-text", model="intfloat/multilingual-e5-base", device="cpu")


def test_hf_clip_missing_model_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        IMAGE_ENCODERS.create("hf-clip", model=str(tmp_path / "no-such-model"), device="cpu")


def test_hf_clip_embed_images_round_trip(clip_dirs, tmp_path):
    (tmp_path / "img").mkdir()
    for i, im in enumerate(_images(3)):
        im.save(tmp_path / "img" / f"{i}.jpg")
    table = pa.table({"image_id": ["a", "b", "c"], "path": [f"img/{i}.jpg" for i in range(3)],
                      "split": ["test"] * 3}, schema=IMAGES_SCHEMA)
    images = write_table_atomic(table, tmp_path / "images.parquet")
    params = {"model": str(clip_dirs / "vision"), "device": "cpu", "batch_size": 2}
    embed_images(images, "hf-clip", params, tmp_path / "f.parquet", shard_size=2)
    feats = read_features(tmp_path / "f.parquet")
    assert feats.ids == ["a", "b", "c"] and feats.pooled.shape == (3, 32) and feats.tokens.shape == (3, 16, 32)
    assert feats.meta["backend"] == "hf-clip"


def test_hf_text_pooling_prefixes_and_tokens(bert_dir):
    enc = TEXT_ENCODERS.create("hf-text", model=str(bert_dir), device="cpu", batch_size=3, max_tokens=4,
                               query_prefix="query: ", passage_prefix="passage: ", threads=1)
    assert enc.dim == enc.token_dim == 32
    q = enc.encode(SENTENCES, role="query")
    p = enc.encode(SENTENCES, role="passage")
    assert q.shape == (4, 32)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(q, p)  # the prefix reaches the model
    # Batch padding must not change a sentence's vector (mean over the attention mask).
    np.testing.assert_allclose(enc.encode(SENTENCES[2:3])[0], q[2], atol=1e-5)
    toks = enc.encode_tokens(["dog", "a red car parked near a building"])
    n_pieces = len(enc.tokenizer.tokenize("dog"))
    assert toks[0].shape == (n_pieces, 32)  # no [CLS]/[SEP]
    assert toks[1].shape == (4, 32)  # capped at max_tokens
    with pytest.raises(ValueError, match="pooling"):
        TEXT_ENCODERS.create("hf-text", model=str(bert_dir), device="cpu", pooling="max")


def test_hf_text_embed_texts_round_trip(bert_dir, tmp_path):
    table = pa.table({
        "caption_id": ["x#0", "x#1", "x#desc0"], "image_id": ["x"] * 3, "lang": ["en", "fr", "en"],
        "text": [SENTENCES[0], SENTENCES[1], SENTENCES[0]], "origin": ["human", "mt", "description"],
        "split": ["val"] * 3, "source_id": [None, "x#0", None],
    }, schema=CAPTIONS_SCHEMA)
    caps = write_table_atomic(table, tmp_path / "c.parquet")
    params = {"model": str(bert_dir), "device": "cpu", "query_prefix": "query: ", "passage_prefix": "passage: "}
    embed_texts([caps], "hf-text", params, tmp_path / "t.parquet", with_tokens=True)
    feats = read_features(tmp_path / "t.parquet")
    assert feats.ids == ["x#0", "x#1", "x#desc0"] and feats.pooled.shape == (3, 32)
    assert not np.allclose(feats.pooled[0], feats.pooled[2])  # query vs passage role
    assert all(t.shape[1] == 32 and len(t) >= 1 for t in feats.token_list)
