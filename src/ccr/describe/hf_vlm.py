"""Backend ``hf-vlm``: a Hugging Face image-text-to-text model writes one description per view prompt.

E.g. ``model: Qwen/Qwen2-VL-2B-Instruct`` or ``llava-hf/llava-1.5-7b-hf`` (a local directory or a hub id
already in the local cache). Greedy decoding, so the output is deterministic for a given model.
"""

from __future__ import annotations

import logging
from typing import Any

from ccr.describe.images import load_rgb
from ccr.describe.vlm import build_prompt, check_prompts, clean_output
from ccr.io import batched
from ccr.translate.hf import resolve_device

log = logging.getLogger("ccr.describe")

_DTYPES = ("auto", "float32", "float16", "bfloat16")


def _auto_model_class() -> Any:
    import transformers

    # AutoModelForImageTextToText is the current name; AutoModelForVision2Seq the older one.
    for name in ("AutoModelForImageTextToText", "AutoModelForVision2Seq"):
        cls = getattr(transformers, name, None)
        if cls is not None:
            return cls
    raise ImportError("describe backend 'hf-vlm' needs transformers with AutoModelForImageTextToText")


class HFVLMDescriber:
    """Params: ``model`` (required), ``prompts`` (one per view; default: objects, scene, actions),
    ``max_tokens`` (new tokens per description, 60), ``batch_size`` ((image, prompt) pairs per generate, 8),
    ``device`` ("auto"), ``dtype`` ("auto": bfloat16 on GPU, float32 on CPU), ``threads``,
    ``local_files_only`` (True).
    """

    def __init__(self, model: str, prompts: list[str] | None = None, max_tokens: int = 60, batch_size: int = 8,
                 device: str = "auto", dtype: str = "auto", threads: int | None = None,
                 local_files_only: bool = True):
        import torch
        from transformers import AutoProcessor

        self.prompts = check_prompts(prompts, "hf-vlm")
        self.views = len(self.prompts)
        if max_tokens < 1 or batch_size < 1:
            raise ValueError("describe backend 'hf-vlm': params 'max_tokens' and 'batch_size' must be >= 1")
        if dtype not in _DTYPES:
            raise ValueError(f"describe backend 'hf-vlm': param 'dtype' must be one of {_DTYPES}, got {dtype!r}")
        if threads:
            torch.set_num_threads(int(threads))
        self.max_tokens, self.batch_size = max_tokens, batch_size
        self.device = resolve_device(device)
        if dtype == "auto":
            dtype = "bfloat16" if self.device.startswith("cuda") else "float32"
        try:
            self.processor = AutoProcessor.from_pretrained(model, local_files_only=local_files_only)
            self.model = _auto_model_class().from_pretrained(model, dtype=getattr(torch, dtype),
                                                             local_files_only=local_files_only)
        except OSError as err:
            raise OSError(f"describe backend 'hf-vlm': cannot load model '{model}' (param 'model'; no downloads "
                          f"when local_files_only=True): {err}") from err
        self.model.to(self.device).eval()
        tokenizer = getattr(self.processor, "tokenizer", None)
        if tokenizer is not None:
            tokenizer.padding_side = "left"  # batched generation of a decoder-only LM continues on the right
        # Rendered once: the prompt text is the same for every image.
        self.rendered = [build_prompt(self.processor, p) for p in self.prompts]
        log.info("hf-vlm: loaded %s on %s (%s), %d views", model, self.device, dtype, self.views)

    def _generate(self, images: list, texts: list[str]) -> list[str]:
        import torch

        inputs = self.processor(images=images, text=texts, return_tensors="pt", padding=True)
        inputs = inputs.to(self.device)
        with torch.inference_mode():
            ids = self.model.generate(**inputs, max_new_tokens=self.max_tokens, do_sample=False)
        new = ids[:, inputs["input_ids"].shape[1]:]
        return [clean_output(t) for t in self.processor.batch_decode(new, skip_special_tokens=True)]

    def describe(self, paths: list[str]) -> list[list[str]]:
        images = [load_rgb(p) for p in paths]
        pairs = [(i, k) for i in range(len(paths)) for k in range(self.views)]
        out: list[list[str]] = [[""] * self.views for _ in paths]
        for chunk in batched(pairs, self.batch_size):
            texts = self._generate([images[i] for i, _ in chunk], [self.rendered[k] for _, k in chunk])
            for (i, k), text in zip(chunk, texts, strict=True):
                out[i][k] = text
        return out
