"""How the Hugging Face backends (``hf-seq2seq``, ``hf-vlm``, ``vllm``, ``hf-clip``, ``hf-text``) find and load a model.

Shared so that every backend behaves the same on a GPU node:

- ``local_model``: with ``local_files_only`` (the default everywhere) a hub id is resolved to its folder in
  the local Hugging Face cache *before* anything is loaded, so an offline node fails at once with a message
  saying what to pre-download, instead of waiting for hub time-outs (or, for vLLM, trying the hub first).
- ``resolve_dtype``: ``"auto"`` is bfloat16 on a GPU that supports it, float32 otherwise. Never float16:
  T5/mT5 weights overflow in float16 (NaN logits, empty translations), and an fp16-only GPU gets float32.
- ``load_kwargs``: weights are loaded with ``device_map=<device>`` so each shard goes straight to the GPU;
  a 7B model in bf16 (~15 GB) is never staged whole in host RAM first (the rules ask for ~8 GB).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger("ccr")

DTYPES = ("auto", "float32", "float16", "bfloat16")

# Model families whose weights overflow in float16 (activations beyond 65504 in the feed-forward blocks).
FP16_UNSAFE_MODEL_TYPES = frozenset({"t5", "mt5", "umt5", "longt5", "switch_transformers"})


def resolve_device(device: str) -> str:
    """``"auto"`` -> ``"cuda"`` when a GPU is visible, else ``"cpu"``; any other value is kept."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def bf16_supported(device: str) -> bool:
    """Whether ``device`` computes in bfloat16 natively (CUDA compute capability >= 8.0, e.g. A100/H100/L4)."""
    import torch

    if not device.startswith("cuda") or not torch.cuda.is_available():
        return False
    return bool(torch.cuda.is_bf16_supported())


def resolve_dtype(dtype: str, device: str, what: str, model_type: str | None = None) -> Any:
    """The torch dtype to load a model in.

    ``"auto"``: bfloat16 where the GPU supports it, else float32 (never float16, see the module doc).
    An explicit ``"float16"`` is refused on CPU and for T5-family models (``model_type``), naming ``what``.
    """
    import torch

    if dtype not in DTYPES:
        raise ValueError(f"{what}: param 'dtype' must be one of {DTYPES}, got {dtype!r}")
    if dtype == "auto":
        return torch.bfloat16 if bf16_supported(device) else torch.float32
    if dtype == "float16":
        if not device.startswith("cuda"):
            raise ValueError(f"{what}: dtype float16 needs a GPU (device resolved to {device!r}); use float32")
        if model_type in FP16_UNSAFE_MODEL_TYPES:
            raise ValueError(f"{what}: dtype float16 is refused for {model_type} models (their activations overflow "
                             f"float16: NaN / empty output); use bfloat16 (or 'auto') or float32")
    return getattr(torch, dtype)


def load_kwargs(device: str, torch_dtype: Any, local_files_only: bool) -> dict[str, Any]:
    """Keyword arguments for ``from_pretrained``: dtype, ``device_map`` (load straight onto ``device``), offline flag.

    ``dtype=`` needs transformers >= 4.56 (it replaced ``torch_dtype``); a single-device ``device_map`` needs
    no accelerate.
    """
    return {"dtype": torch_dtype, "device_map": device, "local_files_only": local_files_only}


def hub_offline() -> bool:
    """True when the environment forbids hub access (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``)."""
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(name, "").strip().upper() in ("1", "ON", "YES", "TRUE"):
            return True
    return False


def hub_cache_dir() -> str:
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except ImportError:  # pragma: no cover - huggingface_hub comes with transformers
        return os.environ.get("HF_HUB_CACHE", "~/.cache/huggingface/hub")


def local_model(model: str, local_files_only: bool, what: str) -> str:
    """``model`` as a local folder: itself when it is one, else its snapshot in the Hugging Face cache.

    With ``local_files_only`` false (and the hub not switched off by ``HF_HUB_OFFLINE``) a hub id is returned
    unchanged and ``from_pretrained`` may download it. Otherwise a model that is neither a folder nor cached
    is a ``FileNotFoundError`` naming param ``model`` and the command that pre-fetches it.
    """
    if not isinstance(model, str) or not model.strip():
        raise ValueError(f"{what}: param 'model' must be a local folder or a Hugging Face hub id, got {model!r}")
    path = Path(model).expanduser()
    if path.is_dir():
        return str(path)
    looks_like_path = model.startswith((".", "/", "~")) or model.count("/") > 1 or path.exists()
    if looks_like_path:
        raise FileNotFoundError(f"{what}: param 'model' {model!r} is not a model folder (no such directory)")
    if not (local_files_only or hub_offline()):
        return model
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(model, local_files_only=True)
    except (OSError, ValueError) as err:  # LocalEntryNotFoundError, IncompleteSnapshotError, HFValidationError
        raise FileNotFoundError(
            f"{what}: param 'model' {model!r} is neither a local folder nor in the Hugging Face cache "
            f"({hub_cache_dir()}), and nothing is downloaded while local_files_only is true (or HF_HUB_OFFLINE=1). "
            f"Fetch it first on a machine with internet and the same HF_HOME: `hf download {model}` "
            f"(`huggingface-cli download {model}` with huggingface_hub < 1.0), or set param 'model' to its folder. "
            f"({type(err).__name__}: {err})"
        ) from err
    log.info("%s: using the cached snapshot of %s at %s", what, model, folder)
    return str(folder)


def read_config(model: str, local_files_only: bool = True) -> dict[str, Any]:
    """The model's ``config.json`` as a dict: read from the folder, or (a hub id allowed online) via ``AutoConfig``.

    Empty when there is none, so callers treat an unknown model type as "no special handling".
    """
    import json

    path = Path(model) / "config.json"
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    if Path(model).is_dir():
        return {}
    try:
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(model, local_files_only=local_files_only).to_dict()
    except (OSError, ValueError) as err:
        log.warning("cannot read the config of %s (%s); no model-specific settings applied", model, err)
        return {}
