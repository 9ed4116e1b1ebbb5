"""Backend ``vllm``: an MLLM served in-process by vLLM on a GPU node (fast batched generation).

Each image gets one request per view prompt: ``{"prompt": <chat-templated prompt with the image
placeholder>, "multi_modal_data": {"image": PIL.Image}}``, generated greedily (temperature 0).
vLLM is imported only when this backend is created.
"""

from __future__ import annotations

import logging
from typing import Any

from ccr.describe.images import load_rgb
from ccr.describe.vlm import build_prompt, check_prompts, clean_output
from ccr.io import batched

log = logging.getLogger("ccr.describe")


class VLLMDescriber:
    """Params: ``model`` (default "Qwen/Qwen2-VL-2B-Instruct"), ``prompts`` (one per view), ``max_tokens`` (60),
    ``temperature`` (0.0), ``batch_size`` (images per ``LLM.generate`` call, 64), ``tensor_parallel_size`` (1),
    ``gpu_memory_utilization`` (0.9), ``max_model_len`` (4096), ``seed`` (0),
    ``trust_remote_code`` (False), ``extra`` (more ``vllm.LLM`` keyword arguments).
    """

    def __init__(self, model: str = "Qwen/Qwen2-VL-2B-Instruct", prompts: list[str] | None = None,
                 max_tokens: int = 60, temperature: float = 0.0, batch_size: int = 64, tensor_parallel_size: int = 1,
                 gpu_memory_utilization: float = 0.9, max_model_len: int = 4096, seed: int = 0,
                 trust_remote_code: bool = False, extra: dict[str, Any] | None = None):
        self.prompts = check_prompts(prompts, "vllm")
        self.views = len(self.prompts)
        if max_tokens < 1 or batch_size < 1:
            raise ValueError("describe backend 'vllm': params 'max_tokens' and 'batch_size' must be >= 1")
        try:
            import vllm
        except ImportError as err:
            raise ImportError("describe backend 'vllm' needs the vllm package on a GPU node: "
                              "pip install 'ccr[gpu]' (or pip install vllm)") from err
        from transformers import AutoProcessor

        self.batch_size = batch_size
        self.llm = vllm.LLM(model=model, tensor_parallel_size=tensor_parallel_size,
                            gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len, seed=seed,
                            trust_remote_code=trust_remote_code, limit_mm_per_prompt={"image": 1}, **(extra or {}))
        self.sampling = vllm.SamplingParams(temperature=temperature, max_tokens=max_tokens, seed=seed)
        processor = AutoProcessor.from_pretrained(model, trust_remote_code=trust_remote_code)
        self.rendered = [build_prompt(processor, p) for p in self.prompts]
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
