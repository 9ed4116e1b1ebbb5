"""hf-vlm on CPU with a tiny random-weight LLaVA (tiny CLIP vision + tiny Llama) saved and re-loaded through
from_pretrained; the vllm backend only where vllm is installed and a model is named in CCR_VLLM_MODEL."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

pytest.importorskip("transformers", reason="hf-vlm needs transformers")
pytest.importorskip("tokenizers", reason="the tiny test tokenizer is built with tokenizers")

import torch  # noqa: E402

from ccr.data.tables import read_captions  # noqa: E402
from ccr.describe import DESCRIBERS, describe_images  # noqa: E402
from ccr.describe.vlm import DEFAULT_PROMPTS, build_prompt, check_prompts  # noqa: E402

TEMPLATE = ("{% for m in messages %}{{ m['role'] | upper }}: {% for c in m['content'] %}"
            "{% if c['type'] == 'image' %}<image> {% else %}{{ c['text'] }}{% endif %}{% endfor %} {% endfor %}"
            "{% if add_generation_prompt %}ASSISTANT:{% endif %}")
WORDS = ["a", "the", "dog", "cat", "red", "blue", "green", "park", "street", "sky", "man", "woman", "sits", "runs",
         "on", "in", "describe", "this", "image", "objects", "scene", "background", "actions", ".", ",", ":",
         "USER", "ASSISTANT"]


def _tiny_llava(path: Path) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "<image>": 4}
    for w in WORDS:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(["<image>"])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>")
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    # 32x32 image, 8x8 patches: 16 patch tokens (+1 CLS that the "default" strategy drops).
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=fast, patch_size=8,
                               vision_feature_select_strategy="default", chat_template=TEMPLATE,
                               num_additional_image_tokens=1)
    torch.manual_seed(0)
    vision = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                              image_size=32, patch_size=8, projection_dim=16)
    text = LlamaConfig(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                       num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128, pad_token_id=0,
                       bos_token_id=1, eos_token_id=2)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=4,
                         vision_feature_select_strategy="default", vision_feature_layer=-1, pad_token_id=0)
    LlavaForConditionalGeneration(config).save_pretrained(path)
    processor.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny_llava(tmp_path_factory) -> Path:
    return _tiny_llava(tmp_path_factory.mktemp("llava") / "tiny-llava")


def _images(tmp_path: Path) -> Path:
    rows = {"image_id": ["a", "b"], "path": [], "split": ["train", "test"]}
    for name, colour in (("a", (200, 30, 30)), ("b", (30, 30, 200))):
        Image.new("RGB", (48, 40), colour).save(tmp_path / f"{name}.png")
        rows["path"].append(str(tmp_path / f"{name}.png"))
    pq.write_table(pa.table(rows), tmp_path / "images.parquet")
    return tmp_path / "images.parquet"


def test_prompts_use_the_chat_template(tiny_llava):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_llava)
    rendered = build_prompt(processor, DEFAULT_PROMPTS[1])
    assert rendered == f"USER: <image> {DEFAULT_PROMPTS[1]} ASSISTANT:"
    assert len(check_prompts(None, "x")) == 3
    with pytest.raises(ValueError, match="prompts"):
        check_prompts(["ok", " "], "x")


def test_hf_vlm_describes_every_view(tiny_llava, tmp_path):
    params = {"model": str(tiny_llava), "device": "cpu", "threads": 1, "max_tokens": 4, "batch_size": 4}
    d = DESCRIBERS.create("hf-vlm", **params)
    assert d.views == 3 and d.rendered[0].startswith("USER: <image> Describe the main objects")
    paths = [str(tmp_path / "x.png"), str(tmp_path / "y.png")]
    Image.new("RGB", (40, 40), (0, 200, 0)).save(paths[0])
    Image.new("RGB", (64, 32), (200, 200, 0)).save(paths[1])
    out = d.describe(paths)
    assert len(out) == 2 and all(len(v) == 3 for v in out)
    assert all(isinstance(s, str) for v in out for s in v)
    # Batching (pairs spread over generate calls, left padding) does not change the result.
    single = DESCRIBERS.create("hf-vlm", **{**params, "batch_size": 1}).describe(paths[:1])
    assert single == out[:1]


def test_hf_vlm_custom_prompts_through_describe_images(tiny_llava, tmp_path):
    params = {"model": str(tiny_llava), "device": "cpu", "max_tokens": 3, "prompts": ["describe this image"] * 2}
    describe_images(_images(tmp_path), "hf-vlm", params, tmp_path / "desc.parquet")
    t = read_captions(tmp_path / "desc.parquet")
    assert t.column("caption_id").to_pylist() == ["a#desc0", "a#desc1", "b#desc0", "b#desc1"]


def test_hf_vlm_missing_model(tmp_path):
    with pytest.raises(OSError, match="param 'model'"):
        DESCRIBERS.create("hf-vlm", model=str(tmp_path / "nothing"), device="cpu")


@pytest.mark.skipif(not os.environ.get("CCR_VLLM_MODEL"),
                    reason="vllm backend: needs a GPU node with vllm installed and CCR_VLLM_MODEL=<local model dir>")
def test_vllm_describes(tmp_path):
    pytest.importorskip("vllm", reason="vllm not installed")
    describe_images(_images(tmp_path), "vllm", {"model": os.environ["CCR_VLLM_MODEL"], "max_tokens": 32,
                                                "gpu_memory_utilization": 0.5}, tmp_path / "desc.parquet")
    assert read_captions(tmp_path / "desc.parquet").num_rows == 6


def test_vllm_missing_package_is_a_clear_error():
    try:
        import vllm  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="vllm"):
            DESCRIBERS.create("vllm")
    else:
        pytest.skip("vllm is installed; the missing-package error cannot be shown")
