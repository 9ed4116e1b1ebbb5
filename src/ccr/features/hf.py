"""transformers backends (GPU runs): CLIP/SigLIP/SigLIP2 vision towers and multilingual text encoders.

Imported only when the config picks ``hf-clip`` or ``hf-text``.  ``model`` is a local folder or a hub
id already in the local cache: with ``local_files_only`` (default) nothing is downloaded and a model that
is not there is an error saying what to pre-fetch (``ccr.hf_loading.local_model``).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
from PIL import Image

from ccr.hf_loading import load_kwargs, local_model, resolve_device, resolve_dtype
from ccr.io import batched

log = logging.getLogger("ccr.features")


def _device_dtype(device: str, dtype: str, what: str) -> tuple[Any, Any]:
    import torch

    device = resolve_device(device)
    return torch.device(device), resolve_dtype(dtype, device, what)


def _load(loader: Any, model: str, what: str, **kwargs: Any) -> Any:
    try:
        return loader.from_pretrained(model, **kwargs)
    except OSError as err:
        raise FileNotFoundError(f"{what}: cannot load '{model}' (local folder or cached hub id): {err}") from err


class HFVisionEncoder:
    """CLIP / SigLIP / SigLIP2 vision tower.

    pooled = the model's pooler output (CLIP: post-layernormed CLS; SigLIP/SigLIP2: attention-pool head);
    tokens = the last hidden patch states (CLS dropped).  With ``projection=True`` and a checkpoint
    that has a ``visual_projection`` (full CLIP models), both go through it (tokens after the same
    post-layernorm as CLS), so pooled and tokens share the joint image-text space.

    SigLIP2 NaFlex checkpoints (``google/siglip2-*-naflex``) have no fixed ``image_size``: their processor
    cuts each image into at most ``max_num_patches`` patches at its own aspect ratio, padded to that length.
    The feature store needs the same token count for every image, so each image is resized (whole, no crop,
    like the offline encoder) to a square of ``isqrt(max_num_patches)`` patches a side: every patch is real
    and ``n_tokens = isqrt(max_num_patches)**2`` (256 for the released checkpoints).
    """

    def __init__(self, model: str, device: str = "auto", dtype: str = "float32", batch_size: int = 32,
                 projection: bool = False, threads: int | None = None, local_files_only: bool = True):
        import torch
        from transformers import AutoImageProcessor, AutoModel

        what = f"hf-clip '{model}'"
        if threads:
            torch.set_num_threads(int(threads))
        self.device, self.dtype = _device_dtype(device, dtype, what)
        folder = local_model(model, local_files_only, what)
        self.processor = _load(AutoImageProcessor, folder, what, local_files_only=local_files_only)
        full = _load(AutoModel, folder, what, **load_kwargs(str(self.device), self.dtype, local_files_only)).eval()
        # Full CLIPModel / SiglipModel: use the vision tower; a vision-only checkpoint is the tower.
        self.vision = getattr(full, "vision_model", full)
        self.proj = getattr(full, "visual_projection", None) if projection else None
        if projection and self.proj is None:
            raise ValueError(f"{what}: projection=True but the checkpoint has no visual_projection")
        self.post_ln = getattr(self.vision, "post_layernorm", None)
        vcfg = getattr(full.config, "vision_config", full.config)
        self.square: int | None = None  # NaFlex: side in pixels every image is resized to
        self.proc_kwargs: dict[str, Any] = {}
        if getattr(vcfg, "image_size", None):
            side = vcfg.image_size // vcfg.patch_size
            self.n_tokens = side * side
        else:
            max_patches = getattr(self.processor, "max_num_patches", None) or getattr(vcfg, "num_patches", None)
            if not max_patches:
                raise ValueError(f"{what}: the vision config has neither 'image_size' nor 'num_patches' (and the "
                                 f"image processor no 'max_num_patches'): cannot tell the number of patch tokens")
            grid = math.isqrt(int(max_patches))
            self.n_tokens = grid * grid
            self.square = grid * int(vcfg.patch_size)
            self.proc_kwargs = {"max_num_patches": self.n_tokens}
        self.dim = int(self.proj.out_features if self.proj is not None else vcfg.hidden_size)
        self.batch_size = int(batch_size)
        self.torch = torch

    def encode(self, images: list[Image.Image]) -> tuple[np.ndarray, np.ndarray | None]:
        torch = self.torch
        pooled_out, token_out = [], []
        with torch.no_grad():
            for chunk in batched(images, self.batch_size):
                rgb = [im.convert("RGB") for im in chunk]
                if self.square is not None:
                    rgb = [im.resize((self.square, self.square), Image.BICUBIC) for im in rgb]
                batch = self.processor(images=rgb, return_tensors="pt", **self.proc_kwargs)
                inputs = {"pixel_values": batch["pixel_values"].to(self.device, self.dtype)}
                for key in ("pixel_attention_mask", "spatial_shapes"):  # SigLIP2 NaFlex
                    if key in batch:
                        inputs[key] = batch[key].to(self.device)
                mask = batch.get("pixel_attention_mask")
                if mask is not None and not bool(mask.all()):
                    raise RuntimeError(f"hf-clip: {int((mask == 0).sum())} padding patches after resizing to a "
                                       f"{self.square}px square; expected {self.n_tokens} real patches per image")
                out = self.vision(**inputs)
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
                 max_length: int = 128, max_tokens: int = 16, threads: int | None = None,
                 local_files_only: bool = True):
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
        folder = local_model(model, local_files_only, what)
        self.tokenizer = _load(AutoTokenizer, folder, what, local_files_only=local_files_only)
        weights = load_kwargs(str(self.device), self.dtype, local_files_only)
        self.model = _load(AutoModel, folder, what, **weights).eval()
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
