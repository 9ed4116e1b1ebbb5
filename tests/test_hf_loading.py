"""ccr.hf_loading: dtype choice on GPUs with/without bf16, device_map loading, offline model resolution."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ccr.hf_loading import load_kwargs, local_model, resolve_dtype


@pytest.fixture
def gpu(monkeypatch):
    """Pretend a CUDA device is visible; the test sets whether it has bfloat16."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)

    def set_bf16(supported: bool) -> None:
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: supported)

    return set_bf16


def test_auto_dtype_is_bf16_where_supported_else_float32(gpu):
    gpu(True)
    assert resolve_dtype("auto", "cuda", "x") == torch.bfloat16
    assert resolve_dtype("auto", "cuda", "x", "t5") == torch.bfloat16
    gpu(False)  # e.g. a V100 / T4: float32, never float16 (T5/mT5 overflow in float16)
    assert resolve_dtype("auto", "cuda", "x") == torch.float32
    assert resolve_dtype("auto", "cuda", "x", "mt5") == torch.float32
    assert resolve_dtype("auto", "cpu", "x") == torch.float32


def test_explicit_dtypes_and_refusals():
    assert resolve_dtype("bfloat16", "cpu", "x") == torch.bfloat16
    with pytest.raises(ValueError, match="float16 needs a GPU"):
        resolve_dtype("float16", "cpu", "hf-x")
    with pytest.raises(ValueError, match="float16 is refused for mt5"):
        resolve_dtype("float16", "cuda", "hf-x", "mt5")
    with pytest.raises(ValueError, match="param 'dtype' must be one of"):
        resolve_dtype("fp16", "cuda", "hf-x")


def test_load_kwargs_put_weights_straight_on_the_device():
    kw = load_kwargs("cuda", torch.bfloat16, True)
    assert kw == {"dtype": torch.bfloat16, "device_map": "cuda", "local_files_only": True}


def _fake_cache(root: Path, repo: str) -> Path:
    """The Hugging Face cache layout for one cached model: refs/main -> snapshots/<commit>/."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    base = root / f"models--{repo.replace('/', '--')}"
    (base / "refs").mkdir(parents=True)
    (base / "refs" / "main").write_text(commit)
    snap = base / "snapshots" / commit
    snap.mkdir(parents=True)
    (snap / "config.json").write_text(json.dumps({"model_type": "qwen2_vl"}))
    return snap


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    return cache


def test_local_model_resolves_folders_and_cached_hub_ids(hub_cache, tmp_path):
    folder = tmp_path / "my-model"
    folder.mkdir()
    assert local_model(str(folder), True, "x") == str(folder)
    snap = _fake_cache(hub_cache, "org/cached-model")
    assert Path(local_model("org/cached-model", True, "x")) == snap


def test_local_model_offline_and_not_cached_says_what_to_download(hub_cache, monkeypatch):
    with pytest.raises(FileNotFoundError, match=r"param 'model' 'Qwen/Qwen2-VL-2B-Instruct'.*hf download Qwen/Qwen2"):
        local_model("Qwen/Qwen2-VL-2B-Instruct", True, "describe backend 'vllm'")
    # Allowed online: the hub id goes to from_pretrained unchanged (it may download) ...
    assert local_model("Qwen/Qwen2-VL-2B-Instruct", False, "x") == "Qwen/Qwen2-VL-2B-Instruct"
    # ... unless the environment switches the hub off.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="HF_HUB_OFFLINE"):
        local_model("Qwen/Qwen2-VL-2B-Instruct", False, "x")


def test_local_model_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="param 'model'.*no such directory"):
        local_model(str(tmp_path / "nothing"), True, "x")
    with pytest.raises(ValueError, match="param 'model'"):
        local_model("", True, "x")
