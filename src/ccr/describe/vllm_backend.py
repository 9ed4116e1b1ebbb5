"""Backend ``vllm``: an MLLM served in-process by vLLM on a GPU node (fast batched generation).

Each image gets one request per view prompt: ``{"prompt": <chat-templated prompt with the image
placeholder>, "multi_modal_data": {"image": PIL.Image}}``, generated greedily (temperature 0).
vLLM is imported only when this backend is created.

Two things a first run on a GPU node would otherwise hit:

- Offline nodes: with ``local_files_only`` (default) the model (also the default hub id) is resolved to a
  local folder (or its snapshot in the Hugging Face cache) before vLLM sees it, so vLLM never tries the hub;
  a model that is not there is an error saying what to pre-download.
- Image size: Qwen2-VL's processor allows up to 16,384 image tokens per image (``max_pixels`` 12.8 M),
  far beyond ``max_model_len`` 4096, so one large photo fails the whole batch. For Qwen-VL models
  ``mm_processor_kwargs.max_pixels`` is set so that image tokens + the longest prompt + ``max_tokens`` fit
  ``max_model_len`` (at most 1280 image tokens, Qwen's own suggested cap, by default).
"""

from __future__ import annotations

import logging
from typing import Any

from ccr.describe.hf_vlm import load_processor
from ccr.describe.images import load_rgb
from ccr.describe.vlm import build_prompt, check_prompts, clean_output
from ccr.hf_loading import local_model, read_config
from ccr.io import batched

log = logging.getLogger("ccr.describe")

WHAT = "describe backend 'vllm'"

# Qwen-VL families: each image token covers (patch_size * spatial_merge_size)^2 pixels (28^2 for Qwen2-VL).
QWEN_VL_MODEL_TYPES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe")
DEFAULT_IMAGE_TOKENS = 1280  # Qwen's suggested max_pixels = 1280 * 28 * 28 (about 1 megapixel)
MIN_IMAGE_TOKENS = 4  # Qwen-VL's own min_pixels (56 * 56) is 4 tokens


def qwen_vl_unit(config: dict[str, Any]) -> int | None:
    """Pixels per side of one image token for a Qwen-VL ``config.json`` (28 for Qwen2-VL), else None."""
    if not str(config.get("model_type", "")).startswith(QWEN_VL_MODEL_TYPES):
        return None
    vision = config.get("vision_config") or {}
    return int(vision.get("patch_size", 14)) * int(vision.get("spatial_merge_size", 2))


def qwen_vl_max_pixels(max_model_len: int, max_tokens: int, prompt_tokens: int, unit: int,
                       max_pixels: int | None = None) -> int:
    """``max_pixels`` such that one image's tokens + ``prompt_tokens`` + ``max_tokens`` fit in ``max_model_len``.

    ``max_pixels=None``: the largest that fits, capped at :data:`DEFAULT_IMAGE_TOKENS` image tokens. An explicit
    value that does not fit is a ``ValueError`` naming the params to change.
    """
    budget = max_model_len - max_tokens - prompt_tokens
    if budget < MIN_IMAGE_TOKENS:
        raise ValueError(f"{WHAT}: max_model_len={max_model_len} leaves {budget} tokens for the image after the prompt "
                         f"({prompt_tokens} tokens) and max_tokens={max_tokens}; raise param 'max_model_len'")
    if max_pixels is None:
        return min(DEFAULT_IMAGE_TOKENS, budget) * unit * unit
    image_tokens = max_pixels // (unit * unit)
    if image_tokens > budget:
        raise ValueError(f"{WHAT}: param 'max_pixels'={max_pixels} allows {image_tokens} image tokens per image, but "
                         f"max_model_len={max_model_len} leaves {budget} after the prompt and max_tokens: lower "
                         f"'max_pixels' to <= {budget * unit * unit} or raise 'max_model_len'")
    if image_tokens < MIN_IMAGE_TOKENS:
        raise ValueError(f"{WHAT}: param 'max_pixels'={max_pixels} is below {MIN_IMAGE_TOKENS * unit * unit} "
                         f"({MIN_IMAGE_TOKENS} image tokens of {unit}x{unit} pixels)")
    return int(max_pixels)


def _prompt_tokens(processor: Any, rendered: list[str]) -> int:
    """Length in tokens of the longest rendered prompt (the image placeholder counts as one)."""
    tokenizer = getattr(processor, "tokenizer", processor)
    return max(len(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in rendered)


class VLLMDescriber:
    """Params: ``model`` (default "Qwen/Qwen2-VL-2B-Instruct"; must be a local folder or already in the Hugging
    Face cache while ``local_files_only``), ``prompts`` (one per view), ``max_tokens`` (60), ``temperature`` (0.0),
    ``batch_size`` (images per ``LLM.generate`` call, 64), ``tensor_parallel_size`` (1),
    ``gpu_memory_utilization`` (0.9), ``max_model_len`` (4096), ``seed`` (0), ``trust_remote_code`` (False),
    ``max_pixels`` (Qwen-VL only; None = the largest that fits ``max_model_len``, at most 1280 image tokens),
    ``local_files_only`` (True), ``extra`` (more ``vllm.LLM`` keyword arguments; an ``mm_processor_kwargs``
    there wins over the computed one).
    """

    def __init__(self, model: str = "Qwen/Qwen2-VL-2B-Instruct", prompts: list[str] | None = None,
                 max_tokens: int = 60, temperature: float = 0.0, batch_size: int = 64, tensor_parallel_size: int = 1,
                 gpu_memory_utilization: float = 0.9, max_model_len: int = 4096, seed: int = 0,
                 trust_remote_code: bool = False, max_pixels: int | None = None, local_files_only: bool = True,
                 extra: dict[str, Any] | None = None):
        self.prompts = check_prompts(prompts, "vllm")
        self.views = len(self.prompts)
        if max_tokens < 1 or batch_size < 1:
            raise ValueError(f"{WHAT}: params 'max_tokens' and 'batch_size' must be >= 1")
        try:
            import vllm
        except ImportError as err:
            raise ImportError(f"{WHAT} needs the vllm package on a GPU node: use workflow/envs/describe-vllm.yaml "
                              "or pip install 'ccr[vllm]'") from err

        # A local folder from here on: vLLM (and its worker processes) never look the model up on the hub.
        folder = local_model(model, local_files_only, WHAT)
        processor = load_processor(folder, model, WHAT, local_files_only, trust_remote_code)
        self.rendered = [build_prompt(processor, p) for p in self.prompts]
        kwargs: dict[str, Any] = {"limit_mm_per_prompt": {"image": 1}}
        config = read_config(folder, local_files_only)
        unit = qwen_vl_unit(config)
        if unit is not None:
            pixels = qwen_vl_max_pixels(max_model_len, max_tokens, _prompt_tokens(processor, self.rendered), unit,
                                        max_pixels)
            kwargs["mm_processor_kwargs"] = {"max_pixels": pixels}
            log.info("vllm: Qwen-VL images capped at max_pixels=%d (%d image tokens)", pixels, pixels // unit ** 2)
        elif max_pixels is not None:
            raise ValueError(f"{WHAT}: param 'max_pixels' applies to Qwen-VL models only; model '{model}' is "
                             f"{config.get('model_type')!r} (use 'extra: {{mm_processor_kwargs: ...}}')")
        kwargs.update(extra or {})
        self.batch_size = batch_size
        self.llm = vllm.LLM(model=folder, tensor_parallel_size=tensor_parallel_size,
                            gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len, seed=seed,
                            trust_remote_code=trust_remote_code, **kwargs)
        self.sampling = vllm.SamplingParams(temperature=temperature, max_tokens=max_tokens, seed=seed)
        log.info("vllm: loaded %s (tp=%d), %d views", model, tensor_parallel_size, self.views)

    def describe(self, paths: list[str]) -> list[list[str]]:
        out: list[list[str]] = []
        for chunk in batched(paths, self.batch_size):
            images = [load_rgb(p) for p in chunk]
            requests = [{"prompt": self.rendered[k], "multi_modal_data": {"image": im}}
                        for im in images for k in range(self.views)]
            results = self.llm.generate(requests, self.sampling, use_tqdm=False)
            texts = [clean_output(r.outputs[0].text) for r in results]  # vLLM keeps request order
            out.extend(texts[i * self.views:(i + 1) * self.views] for i in range(len(images)))
        return out
