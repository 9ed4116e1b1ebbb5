"""transformers backends (GPU runs): CLIP/SigLIP vision towers and multilingual text encoders.

Imported only when the config picks ``hf-clip`` or ``hf-text``.  ``model`` is a local folder or a hub
id already in the local cache: nothing is downloaded here when the machine is offline.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from PIL import Image

from ccr.io import batched

log = logging.getLogger("ccr.features")

_DTYPES = ("float32", "float16", "bfloat16")


def _device_dtype(device: str, dtype: str, what: str) -> tuple[Any, Any]:
    import torch

    if dtype not in _DTYPES:
        raise ValueError(f"{what}: param 'dtype' must be one of {_DTYPES}, got {dtype!r}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    torch_dtype = getattr(torch, dtype)
    if device == "cpu" and torch_dtype == torch.float16:
        raise ValueError(f"{what}: dtype float16 needs a GPU (device resolved to cpu)")
    return torch.device(device), torch_dtype


def _load(loader: Any, model: str, what: str, **kwargs: Any) -> Any:
    try:
        return loader.from_pretrained(model, **kwargs)
    except OSError as err:
        raise FileNotFoundError(f"{what}: cannot load '{model}' (local folder or cached hub id): {err}") from err


class HFVisionEncoder:
    """CLIP / SigLIP vision tower.

    pooled = the model's pooler output (CLIP: post-layernormed CLS; SigLIP: attention-pool head);
    tokens = the last hidden patch states (CLS dropped).  With ``projection=True`` and a checkpoint
    that has a ``visual_projection`` (full CLIP models), both go through it (tokens after the same
    post-layernorm as CLS), so pooled and tokens share the joint image-text space.
    """

    def __init__(self, model: str, device: str = "auto", dtype: str = "float32", batch_size: int = 32,
                 projection: bool = False, threads: int | None = None):
        import torch
        from transformers import AutoImageProcessor, AutoModel

        what = f"hf-clip '{model}'"
        if threads:
            torch.set_num_threads(int(threads))
        self.device, self.dtype = _device_dtype(device, dtype, what)
        self.processor = _load(AutoImageProcessor, model, what)
        full = _load(AutoModel, model, what).to(device=self.device, dtype=self.dtype).eval()
        # Full CLIPModel / SiglipModel: use the vision tower; a vision-only checkpoint is the tower.
        self.vision = getattr(full, "vision_model", full)
        self.proj = getattr(full, "visual_projection", None) if projection else None
        if projection and self.proj is None:
            raise ValueError(f"{what}: projection=True but the checkpoint has no visual_projection")
        self.post_ln = getattr(self.vision, "post_layernorm", None)
        vcfg = getattr(full.config, "vision_config", full.config)
        side = vcfg.image_size // vcfg.patch_size
        self.n_tokens = side * side
        self.dim = int(self.proj.out_features if self.proj is not None else vcfg.hidden_size)
        self.batch_size = int(batch_size)
        self.torch = torch

    def encode(self, images: list[Image.Image]) -> tuple[np.ndarray, np.ndarray | None]:
        torch = self.torch
        pooled_out, token_out = [], []
        with torch.no_grad():
            for chunk in batched(images, self.batch_size):
                pixels = self.processor(images=[im.convert("RGB") for im in chunk], return_tensors="pt")["pixel_values"]
                out = self.vision(pixel_values=pixels.to(self.device, self.dtype))
                hidden = out.last_hidden_state
                tokens = hidden[:, -self.n_tokens:, :] if hidden.shape[1] == self.n_tokens + 1 else hidden
                if tokens.shape[1] != self.n_tokens:
                    raise RuntimeError(f"hf-clip: expected {self.n_tokens} patch tokens, model gave {hidden.shape[1]}")
                pooled = out.pooler_output
                if self.proj is not None:
                    if self.post_ln is not None and hidden.shape[1] == self.n_tokens + 1:
                        tokens = self.post_ln(tokens)  # CLIP's last_hidden_state is before post_layernorm
                    tokens, pooled = self.proj(tokens), self.proj(pooled)
                pooled_out.append(pooled.float().cpu().numpy())
                token_out.append(tokens.float().cpu().numpy())
        if not pooled_out:
            return np.zeros((0, self.dim), np.float32), np.zeros((0, self.n_tokens, self.dim), np.float32)
        return np.concatenate(pooled_out).astype(np.float32), np.concatenate(token_out).astype(np.float32)


class HFTextEncoder:
    """Sentence vectors from a transformers encoder (multilingual-e5, LaBSE, XLM-R ...).

    pooled = mean of the last hidden states over the attention mask (or the CLS state with
    ``pooling="cls"``), L2-normalised.  e5 models want ``query_prefix="query: "`` and
    ``passage_prefix="passage: "``; others leave them empty.  Token features = the last hidden
    states of the text without prefix and without special tokens, first ``max_tokens`` kept.
    """

    def __init__(self, model: str, device: str = "auto", dtype: str = "float32", batch_size: int = 64,
                 query_prefix: str = "", passage_prefix: str = "", pooling: str = "mean",
                 max_length: int = 128, max_tokens: int = 16, threads: int | None = None):
        import torch
        from transformers import AutoModel, AutoTokenizer

        what = f"hf-text '{model}'"
        if pooling not in ("mean", "cls"):
            raise ValueError(f"{what}: param 'pooling' must be 'mean' or 'cls', got {pooling!r}")
        if max_tokens < 1:
            raise ValueError(f"{what}: param 'max_tokens' must be >= 1, got {max_tokens}")
        if threads:
            torch.set_num_threads(int(threads))
        self.device, self.dtype = _device_dtype(device, dtype, what)
        self.tokenizer = _load(AutoTokenizer, model, what)
        self.model = _load(AutoModel, model, what).to(device=self.device, dtype=self.dtype).eval()
        self.prefix = {"query": query_prefix, "passage": passage_prefix}
        self.pooling, self.max_length, self.max_tokens = pooling, int(max_length), int(max_tokens)
        self.batch_size = int(batch_size)
        self.dim = self.token_dim = int(self.model.config.hidden_size)
        self.supported_langs = None  # multilingual models: every language
        self.torch = torch

    def _forward(self, texts: list[str], special_mask: bool = False) -> tuple[Any, Any, Any]:
        batch = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                               return_tensors="pt", return_special_tokens_mask=special_mask)
        special = batch.pop("special_tokens_mask", None)
        batch = {k: v.to(self.device) for k, v in batch.items()}
        hidden = self.model(**batch).last_hidden_state.float()
        return hidden, batch["attention_mask"], special

    def encode(self, texts: list[str], role: str = "query", langs: list[str] | None = None) -> np.ndarray:
        torch = self.torch
        if role not in self.prefix:
            raise ValueError(f"hf-text: role must be 'query' or 'passage', got {role!r}")
        out = []
        with torch.no_grad():
            for chunk in batched(texts, self.batch_size):
                hidden, mask, _ = self._forward([self.prefix[role] + t for t in chunk])
                if self.pooling == "cls":
                    vec = hidden[:, 0]
                else:
                    m = mask.unsqueeze(-1).to(hidden.dtype)
                    vec = (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
                vec = torch.nn.functional.normalize(vec, dim=-1)
                out.append(vec.cpu().numpy())
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, self.dim), np.float32)

    def encode_tokens(self, texts: list[str], langs: list[str] | None = None) -> list[np.ndarray]:
        torch = self.torch
        out: list[np.ndarray] = []
        with torch.no_grad():
            for chunk in batched(texts, self.batch_size):
                hidden, mask, special = self._forward(list(chunk), special_mask=True)
                keep = (mask.cpu() > 0) & (special == 0)
                hidden = hidden.cpu().numpy()
                for i in range(len(chunk)):
                    rows = np.flatnonzero(keep[i].numpy())[: self.max_tokens]
                    if len(rows) == 0:  # nothing but special tokens: keep the first state so L >= 1
                        rows = np.array([0])
                    out.append(hidden[i, rows].astype(np.float32))
        return out
