"""Named systems of the ablation table: preset name -> overrides of :class:`ccr.train.params.TrainParams`.

Use them as ``params = {"preset": "mt+teacher", ...}`` or ``{**PRESETS[name], ...}``.
"""

from __future__ import annotations

from typing import Any

_NONE = {"use_teacher": False, "use_slots": False, "use_soft": False}

PRESETS: dict[str, dict[str, Any]] = {
    # No training: images = mean of their description views' text features, queries = frozen text features.
    "zero-shot": {"train": False, **_NONE},
    # No MT: the target branch is trained on the English caption (cross-lingual transfer via the encoder).
    "english-only": {"use_mt": False, **_NONE},
    "mt": dict(_NONE),
    "mt+teacher": {**_NONE, "use_teacher": True},
    "mt+slots": {**_NONE, "use_slots": True},
    "mt+soft": {**_NONE, "use_soft": True},
    "full": {"use_teacher": True, "use_slots": True, "use_soft": True},
}


def preset_params(name: str, **overrides: Any) -> dict[str, Any]:
    """The params dict of a preset plus overrides (KeyError names the unknown preset)."""
    if name not in PRESETS:
        raise KeyError(f"unknown preset '{name}'; known: {', '.join(PRESETS)}")
    return {**PRESETS[name], **overrides}


def needs_training(params: dict[str, Any]) -> bool:
    from ccr.train.params import resolve_params

    return resolve_params(params).train


def needs_teacher(params: dict[str, Any]) -> bool:
    """True when the student of these params distils from a teacher (so train_teacher must run first)."""
    from ccr.train.params import resolve_params

    p = resolve_params(params)
    return p.train and p.use_teacher
