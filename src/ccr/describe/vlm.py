"""What the MLLM describers (``hf-vlm``, ``vllm``) share: the per-view prompts and chat-template prompt building."""

from __future__ import annotations

from typing import Any

# One prompt per view (LECCR: several descriptions, each about a different aspect of the image).
DEFAULT_PROMPTS: tuple[str, ...] = (
    "Describe the main objects in this image and their attributes (colour, size, material, count) in one sentence.",
    "Describe the scene and the background of this image (place, setting, time of day, weather) in one sentence.",
    "Describe the actions in this image and the spatial relations between the people and objects in one sentence.",
)


def check_prompts(prompts: list[str] | tuple[str, ...] | None, backend: str) -> list[str]:
    """Validated list of view prompts (``None`` -> :data:`DEFAULT_PROMPTS`)."""
    prompts = list(DEFAULT_PROMPTS if prompts is None else prompts)
    if not prompts or any(not isinstance(p, str) or not p.strip() for p in prompts):
        raise ValueError(f"describe backend '{backend}': param 'prompts' must be a non-empty list of non-empty strings")
    return prompts


def chat_messages(prompt: str) -> list[dict[str, Any]]:
    """One user turn holding the image and the prompt, in the multimodal chat format processors expect."""
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]


def build_prompt(processor: Any, prompt: str) -> str:
    """The model's own chat template applied to (image, prompt), ending with the assistant turn opener.

    ``processor`` is the model's AutoProcessor (or a tokenizer with a chat template). The rendered
    prompt contains the model's image placeholder (``<image>``, ``<|image_pad|>``, ...) that both
    transformers and vLLM expand into the image tokens.
    """
    if getattr(processor, "chat_template", None) is None and getattr(
        getattr(processor, "tokenizer", None), "chat_template", None
    ) is None:
        raise ValueError("describe: the model's processor has no chat template; cannot build the view prompt")
    return processor.apply_chat_template(chat_messages(prompt), add_generation_prompt=True, tokenize=False)


def clean_output(text: str) -> str:
    """Generated text -> one line (descriptions are stored one per row)."""
    return " ".join(text.split())
