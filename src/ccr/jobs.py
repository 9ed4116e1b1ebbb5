"""What a workflow job asks of its scheduler, by the backend it runs: GPUs, memory and its conda env.

Standard library only: the Snakemake scheduler imports this at parse time (``workflow/rules/common.smk``);
the README's GPU table says the same as :data:`GPU_BACKENDS`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# What one job of a GPU backend asks for by default; the offline backends never ask for a GPU.
GPU_BACKENDS: dict[str, dict[str, int]] = {
    "vllm": {"gpu": 1, "mem_mb": 32000},
    "hf-vlm": {"gpu": 1, "mem_mb": 32000},
    "hf-seq2seq": {"gpu": 1, "mem_mb": 16000},
    "hf-clip": {"gpu": 1, "mem_mb": 16000},
    "hf-text": {"gpu": 1, "mem_mb": 16000},
}


def describer_needs(backend: str, params: Mapping[str, Any] | None = None) -> tuple[str, ...]:
    """What a describer reads beside the images table ("captions", "image_features"), as its ``needs``
    says (kept equal by tests/test_gpu_readiness.py); () for one that reads only the pixels."""
    if backend == "knn-captions":
        return ("captions", "image_features")
    if backend == "imagenet-tags" and (params or {}).get("source", "image-features") == "image-features":
        return ("image_features",)
    return ()


# Image encoders with an ImageNet head that imagenet-tags can apply to their features (the keys of
# ccr.features.images.LITE_VARIANTS, which imports numpy: the scheduler needs only Snakemake; a test
# keeps the two equal).
IMAGENET_HEAD_ENCODERS = ("efficientnet-lite0", "efficientnet-lite2")


def check_describer(describe: Mapping[str, Any], image_encoder: Mapping[str, Any]) -> None:
    """Refuse (naming the config keys) a describer that would read image features it cannot use:
    ``imagenet-tags`` from the features needs an EfficientNet-Lite encoder, whose ImageNet head it applies."""
    if (describe["backend"] == "imagenet-tags" and "image_features" in describer_needs(describe["backend"],
                                                                                      describe.get("params"))
            and image_encoder["backend"] not in IMAGENET_HEAD_ENCODERS):
        raise ValueError(f"config describe.params.source: 'image-features' (the default of imagenet-tags) applies the "
                         f"ImageNet head of an EfficientNet-Lite image encoder ({', '.join(IMAGENET_HEAD_ENCODERS)}), "
                         f"but features.image.backend is '{image_encoder['backend']}': set describe.params.source: "
                         "pixels")


def wants_gpu(spec: Mapping[str, Any] | None) -> bool:
    """True for a stage spec ({backend, params}) whose backend runs on a GPU (unless pinned to the CPU)."""
    return spec is not None and spec["backend"] in GPU_BACKENDS and spec.get("params", {}).get("device") != "cpu"


def job_resource(resources: Mapping[str, Any], rule: str, key: str, spec: Mapping[str, Any] | None = None,
                 default: Any = None) -> Any:
    """A rule's resource ``key`` from the config's ``resources`` block.

    ``resources.stages.<rule>.<key>`` wins; else a GPU backend asks for ``resources.gpu`` GPUs and at
    least its memory; else the config-wide value (or ``default``). CPU backends ask for no GPU.
    """
    override = resources.get("stages", {}).get(rule, {})
    if key in override:
        return override[key]
    if key == "gpu":
        return resources["gpu"] if wants_gpu(spec) else 0
    value = resources[key] if default is None else default
    if wants_gpu(spec) and key in GPU_BACKENDS[spec["backend"]]:
        return max(value, GPU_BACKENDS[spec["backend"]][key])
    return value


def configured_threads(config: Mapping[str, Any], rule: str) -> int:
    """The threads the config gives ``rule`` (``resources.stages.<rule>.threads``, else
    ``resources.threads``): a job's script sets its torch / encoder thread count from this, not from the
    job's ``threads``, which Snakemake lowers to ``--cores``. Sums split over another number of threads
    round differently, so the same config would otherwise give other features and models under
    ``--cores 1``."""
    return int(job_resource(config["resources"], rule, "threads"))


def conda_env(family: str, spec: Mapping[str, Any] | None = None, gpus: int = 0) -> str:
    """The rule's conda env file (relative to workflow/rules/): its family's CPU env, or the GPU variant
    when the job runs on a GPU; ``vllm`` has an env of its own, pinned to what vllm requires."""
    if spec is not None and spec["backend"] == "vllm":
        return "../envs/describe-vllm.yaml"
    return f"../envs/{family}-gpu.yaml" if gpus > 0 or wants_gpu(spec) else f"../envs/{family}.yaml"
