"""hf-vlm on CPU with tiny random-weight LLaVA and Qwen2-VL models saved and re-loaded through from_pretrained;
the vllm backend's wiring (offline model folder, Qwen-VL max_pixels) through a stand-in ``vllm`` module, and the
real vllm only where it is installed and a model is named in CCR_VLLM_MODEL."""

from __future__ import annotations

import json
import os
import sys
import types
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

pytest.importorskip("transformers", reason="hf-vlm needs transformers")
pytest.importorskip("tokenizers", reason="the tiny test tokenizer is built with tokenizers")
pytest.importorskip("accelerate", reason="models are loaded with device_map, which needs accelerate")

import torch  # noqa: E402

from ccr.data.tables import read_captions  # noqa: E402
from ccr.describe import DESCRIBERS, describe_images  # noqa: E402
from ccr.describe.vllm_backend import qwen_vl_max_pixels  # noqa: E402
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


QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
                 "<|video_pad|>"]
QWEN_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }} {% for c in m['content'] %}"
                 "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>{% else %}{{ c['text'] }}"
                 "{% endif %}{% endfor %}<|im_end|> {% endfor %}{% if add_generation_prompt %}<|im_start|>assistant "
                 "{% endif %}")


def _tiny_qwen2_vl(path: Path) -> Path:
    """A tiny random Qwen2-VL laid out like the hub checkpoint: weights, tokenizer, image processor, chat template.

    Written file by file: a Qwen2VLProcessor object cannot be built without torchvision (its video processor).
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2VLConfig, Qwen2VLForConditionalGeneration

    try:
        from transformers import Qwen2VLImageProcessorPil as ImageProcessor  # no torchvision needed
    except ImportError:  # older transformers
        from transformers import Qwen2VLImageProcessor as ImageProcessor

    vocab: dict[str, int] = {}
    for w in [*QWEN_SPECIALS, "<unk>", *WORDS]:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(QWEN_SPECIALS)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<|endoftext|>", eos_token="<|im_end|>",
                                   unk_token="<unk>")
    fast.chat_template = QWEN_TEMPLATE
    fast.save_pretrained(path)
    # 28x28 pixels per image token (14px patches, 2x2 merge); images become 4..16 tokens.
    ImageProcessor(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 16, patch_size=14, merge_size=2,
                   temporal_patch_size=2).save_pretrained(path)
    ids = {name: vocab[f"<|{name}|>"] for name in ("image_pad", "video_pad", "vision_start", "vision_end", "im_end")}
    torch.manual_seed(0)
    text = {"vocab_size": len(vocab), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
            "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 512,
            "rope_scaling": {"type": "mrope", "mrope_section": [2, 2, 4]}, "pad_token_id": 0,
            "bos_token_id": vocab["<|im_start|>"], "eos_token_id": ids["im_end"]}
    vision = {"depth": 1, "embed_dim": 32, "hidden_size": 32, "num_heads": 2, "mlp_ratio": 2, "patch_size": 14,
              "spatial_merge_size": 2, "temporal_patch_size": 2, "in_channels": 3}
    config = Qwen2VLConfig(text_config=text, vision_config=vision, image_token_id=ids["image_pad"],
                           video_token_id=ids["video_pad"], vision_start_token_id=ids["vision_start"],
                           vision_end_token_id=ids["vision_end"], pad_token_id=0, eos_token_id=ids["im_end"],
                           bos_token_id=vocab["<|im_start|>"])
    Qwen2VLForConditionalGeneration(config).save_pretrained(path)
    (path / "chat_template.jinja").write_text(QWEN_TEMPLATE)
    (path / "processor_config.json").write_text(json.dumps({"processor_class": "Qwen2VLProcessor"}))
    return path


@pytest.fixture(scope="module")
def tiny_qwen2_vl(tmp_path_factory) -> Path:
    return _tiny_qwen2_vl(tmp_path_factory.mktemp("qwen2vl") / "tiny-qwen2-vl")


def _torchvision_works() -> bool:
    try:
        import torchvision.transforms.v2.functional  # noqa: F401
    except Exception:  # missing, or a build for another torch ("operator torchvision::nms does not exist")
        return False
    return True


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


def test_hf_vlm_loads_weights_straight_onto_the_device(tiny_llava, monkeypatch):
    import ccr.describe.hf_vlm as hf_vlm

    real = hf_vlm._auto_model_class()
    seen: dict = {}

    class Spy:
        @staticmethod
        def from_pretrained(path, **kwargs):
            seen.update(kwargs)
            return real.from_pretrained(path, **kwargs)

    monkeypatch.setattr(hf_vlm, "_auto_model_class", lambda: Spy)
    d = DESCRIBERS.create("hf-vlm", model=str(tiny_llava), device="cpu", max_tokens=2)
    # device_map: each weight shard is placed on the device as it is read (no whole-model copy in host RAM).
    assert seen["device_map"] == "cpu" and seen["dtype"] == torch.float32 and seen["local_files_only"] is True
    assert {p.device.type for p in d.model.parameters()} == {"cpu"} and d.dtype == torch.float32


def test_hf_vlm_qwen2_vl(tiny_qwen2_vl, tmp_path):
    params = {"model": str(tiny_qwen2_vl), "device": "cpu", "max_tokens": 3, "batch_size": 2, "threads": 1}
    if not _torchvision_works():
        # Qwen2-VL's processor needs torchvision even for images: the error says exactly what to install.
        with pytest.raises(ImportError, match=r"describe backend 'hf-vlm'.*needs torchvision.*torchvision==0\.28\.0"):
            DESCRIBERS.create("hf-vlm", **params)
        return
    d = DESCRIBERS.create("hf-vlm", **params)
    assert "<|image_pad|>" in d.rendered[0]
    paths = [str(tmp_path / "x.png"), str(tmp_path / "y.png")]
    Image.new("RGB", (64, 48), (0, 200, 0)).save(paths[0])
    Image.new("RGB", (900, 700), (200, 0, 0)).save(paths[1])
    out = d.describe(paths)
    assert len(out) == 2 and all(len(v) == 3 and all(isinstance(t, str) for t in v) for v in out)


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


class _FakeLLM:
    """Stands in for vllm.LLM: records its keyword arguments and answers each request with its index."""

    calls: list[dict] = []

    def __init__(self, **kwargs):
        _FakeLLM.calls.append(kwargs)

    def generate(self, requests, sampling, use_tqdm=False):
        return [types.SimpleNamespace(outputs=[types.SimpleNamespace(text=f" answer {i} ")])
                for i, _ in enumerate(requests)]


@pytest.fixture
def fake_vllm(monkeypatch, tiny_qwen2_vl):
    module = types.ModuleType("vllm")
    module.LLM = _FakeLLM
    module.SamplingParams = lambda **kw: kw
    monkeypatch.setitem(sys.modules, "vllm", module)
    _FakeLLM.calls = []
    if not _torchvision_works():
        # Without torchvision the Qwen2-VL processor cannot be built here; its tokenizer renders the same template.
        # (The vLLM env has torchvision: vllm 0.32.0 requires torchvision==0.28.0.)
        from transformers import AutoTokenizer

        import ccr.describe.vllm_backend as backend

        real = backend.load_processor
        monkeypatch.setattr(backend, "load_processor", lambda folder, *a, **k: (
            AutoTokenizer.from_pretrained(folder) if Path(folder) == tiny_qwen2_vl else real(folder, *a, **k)))
    return _FakeLLM


def test_qwen_vl_max_pixels_fits_max_model_len():
    assert qwen_vl_max_pixels(4096, 60, 50, 28) == 1280 * 28 * 28  # Qwen's suggested cap
    assert qwen_vl_max_pixels(1024, 60, 50, 28) == (1024 - 60 - 50) * 28 * 28  # what is left of max_model_len
    assert qwen_vl_max_pixels(4096, 60, 50, 32, max_pixels=1024 * 32 * 32) == 1024 * 32 * 32
    with pytest.raises(ValueError, match="param 'max_pixels'=12845056 allows 16384 image tokens"):
        qwen_vl_max_pixels(4096, 60, 50, 28, max_pixels=12845056)  # Qwen2-VL's processor default
    with pytest.raises(ValueError, match="raise param 'max_model_len'"):
        qwen_vl_max_pixels(100, 60, 50, 28)


def test_vllm_qwen_gets_a_local_folder_and_a_max_pixels_that_fits(fake_vllm, tiny_qwen2_vl, tmp_path):
    d = DESCRIBERS.create("vllm", model=str(tiny_qwen2_vl), max_model_len=512, max_tokens=40, batch_size=2)
    kw = fake_vllm.calls[-1]
    assert kw["model"] == str(tiny_qwen2_vl) and kw["limit_mm_per_prompt"] == {"image": 1}
    pixels = kw["mm_processor_kwargs"]["max_pixels"]
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen2_vl)
    longest = max(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in d.rendered)
    assert pixels % (28 * 28) == 0 and pixels // (28 * 28) + longest + 40 == 512  # image + prompt + answer fit
    assert pixels // (28 * 28) > 400  # the budget is used, not a token or two
    paths = [str(tmp_path / f"{i}.png") for i in range(3)]
    for p in paths:
        Image.new("RGB", (40, 30), (9, 9, 9)).save(p)
    assert d.describe(paths) == [[f"answer {i * 3 + k}" for k in range(3)] for i in range(2)] + [
        ["answer 0", "answer 1", "answer 2"]]  # 2 images per generate call, views in order
    DESCRIBERS.create("vllm", model=str(tiny_qwen2_vl), extra={"mm_processor_kwargs": {"max_pixels": 3136}})
    assert fake_vllm.calls[-1]["mm_processor_kwargs"] == {"max_pixels": 3136}  # the user's own setting wins
    with pytest.raises(ValueError, match="param 'max_pixels'"):
        DESCRIBERS.create("vllm", model=str(tiny_qwen2_vl), max_pixels=28 * 28 * 5000)


def test_vllm_other_models_get_no_max_pixels(fake_vllm, tiny_llava):
    DESCRIBERS.create("vllm", model=str(tiny_llava))
    assert "mm_processor_kwargs" not in fake_vllm.calls[-1]
    with pytest.raises(ValueError, match="Qwen-VL models only"):
        DESCRIBERS.create("vllm", model=str(tiny_llava), max_pixels=1000000)


def test_vllm_default_model_offline_is_refused_before_vllm_starts(fake_vllm, tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(FileNotFoundError, match="hf download Qwen/Qwen2-VL-2B-Instruct"):
        DESCRIBERS.create("vllm")  # the default model, not pre-downloaded
    assert fake_vllm.calls == []  # vLLM was never handed a hub id


def test_vllm_missing_package_is_a_clear_error():
    try:
        import vllm  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="vllm"):
            DESCRIBERS.create("vllm")
    else:
        pytest.skip("vllm is installed; the missing-package error cannot be shown")
