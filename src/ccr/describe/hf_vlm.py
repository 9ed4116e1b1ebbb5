"""Backend ``hf-vlm``: a Hugging Face image-text-to-text model writes one description per view prompt.

E.g. ``model: Qwen/Qwen2-VL-2B-Instruct`` or ``llava-hf/llava-1.5-7b-hf`` (a local directory or a hub id
already in the local cache). Greedy decoding, so the output is deterministic for a given model.

Weights load with ``device_map`` straight onto the GPU (a 7B model is not staged whole in host RAM), in
bfloat16 where the GPU supports it. Qwen2-VL / Qwen2.5-VL processors build a video processor that needs
torchvision even for images: a missing (or mismatched) torchvision is an ImportError saying what to install.
"""

from __future__ import annotations

import logging
from typing import Any

from ccr.describe.images import load_rgb
from ccr.describe.vlm import build_prompt, check_prompts, clean_output
from ccr.hf_loading import load_kwargs, local_model, read_config, resolve_device, resolve_dtype
from ccr.io import batched

log = logging.getLogger("ccr.describe")

WHAT = "describe backend 'hf-vlm'"

# torchvision is released in lockstep with torch; the build must match the installed torch exactly
# (torchvision 0.28.0 requires torch==2.13.0: read from its wheel metadata).
TORCHVISION_FOR_TORCH = {"2.13.0": "0.28.0"}


def _auto_model_class() -> Any:
    import transformers

    # AutoModelForImageTextToText is the current name; AutoModelForVision2Seq the older one.
    for name in ("AutoModelForImageTextToText", "AutoModelForVision2Seq"):
        cls = getattr(transformers, name, None)
        if cls is not None:
            return cls
    raise ImportError("describe backend 'hf-vlm' needs transformers with AutoModelForImageTextToText")


def torchvision_hint() -> str:
    """What to install so that torchvision imports beside the installed torch."""
    import torch

    base, _, local = torch.__version__.partition("+")
    vision = TORCHVISION_FOR_TORCH.get(base)
    if vision is None:
        return f"the torchvision release built for torch {torch.__version__}, from the same index as torch"
    if local == "cpu" or not torch.version.cuda:
        return (f"pip install --extra-index-url https://download.pytorch.org/whl/cpu torchvision=={vision}+cpu "
                f"(torch is {torch.__version__}, a CPU build: the PyPI torchvision is built for CUDA torch)")
    return f"pip install torchvision=={vision} (torch is {torch.__version__}; workflow/envs/describe-gpu.yaml has it)"


def load_processor(folder: str, model: str, what: str, local_files_only: bool, trust_remote_code: bool = False) -> Any:
    """``AutoProcessor`` of ``folder``; one that needs a missing or broken torchvision is a clear ImportError."""
    from transformers import AutoProcessor

    try:
        return AutoProcessor.from_pretrained(folder, local_files_only=local_files_only,
                                             trust_remote_code=trust_remote_code)
    except OSError as err:
        raise OSError(f"{what}: cannot load the processor of model '{model}' (param 'model'; no downloads when "
                      f"local_files_only=True): {err}") from err
    except (ImportError, RuntimeError, AttributeError) as err:
        # Qwen2-VL's processor builds a video processor that imports torchvision even for images; a torchvision
        # built for another torch fails with "operator torchvision::nms does not exist" (RuntimeError).
        if "torchvision" not in str(err).lower() and "video_processor" not in str(err).lower():
            raise
        raise ImportError(f"{what}: the processor of model '{model}' needs torchvision, which is missing or does not "
                          f"import beside this torch ({type(err).__name__}: {' '.join(str(err).split())[:160]}...). "
                          f"Install it: {torchvision_hint()}") from err


class HFVLMDescriber:
    """Params: ``model`` (required), ``prompts`` (one per view; default: objects, scene, actions),
    ``max_tokens`` (new tokens per description, 60), ``batch_size`` ((image, prompt) pairs per generate, 8),
    ``device`` ("auto"), ``dtype`` ("auto": bfloat16 on a GPU that supports it, else float32), ``threads``,
    ``local_files_only`` (True: a hub id must already be in the local cache).
    """

    def __init__(self, model: str, prompts: list[str] | None = None, max_tokens: int = 60, batch_size: int = 8,
                 device: str = "auto", dtype: str = "auto", threads: int | None = None,
                 local_files_only: bool = True):
        import torch

        self.prompts = check_prompts(prompts, "hf-vlm")
        self.views = len(self.prompts)
        if max_tokens < 1 or batch_size < 1:
            raise ValueError(f"{WHAT}: params 'max_tokens' and 'batch_size' must be >= 1")
        if threads:
            torch.set_num_threads(int(threads))
        self.max_tokens, self.batch_size = max_tokens, batch_size
        self.device = resolve_device(device)
        folder = local_model(model, local_files_only, WHAT)
        model_type = read_config(folder, local_files_only).get("model_type")
        self.dtype = resolve_dtype(dtype, self.device, f"{WHAT} (model '{model}')", model_type)
        # The processor first: a missing torchvision fails here, before gigabytes of weights are read.
        self.processor = load_processor(folder, model, WHAT, local_files_only)
        try:
            self.model = _auto_model_class().from_pretrained(
                folder, **load_kwargs(self.device, self.dtype, local_files_only)
            )
        except OSError as err:
            raise OSError(f"{WHAT}: cannot load model '{model}' (param 'model'; no downloads when "
                          f"local_files_only=True): {err}") from err
        self.model.eval()
        tokenizer = getattr(self.processor, "tokenizer", None)
        if tokenizer is not None:
            tokenizer.padding_side = "left"  # batched generation of a decoder-only LM continues on the right
        # Rendered once: the prompt text is the same for every image.
        self.rendered = [build_prompt(self.processor, p) for p in self.prompts]
        log.info("hf-vlm: loaded %s on %s (%s), %d views", model, self.device, str(self.dtype).replace("torch.", ""),
                 self.views)

    def _generate(self, images: list, texts: list[str]) -> list[str]:
        import torch

        inputs = self.processor(images=images, text=texts, return_tensors="pt", padding=True)
        inputs = inputs.to(self.model.device)
        if "pixel_values" in inputs:  # the vision tower runs in the model's dtype (bfloat16 on GPU)
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
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
