"""Every training knob, with its default, in one dataclass (unknown keys are an error naming the key)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


class ParamError(ValueError):
    """A bad training parameter (message names the key)."""


@dataclass
class TrainParams:
    # --- what to train -------------------------------------------------------------------------
    train: bool = True               # False = zero-shot system (no training; load_retriever(None, ...))
    use_mt: bool = True              # target branch on the MT of each caption (False: on the English caption)
    use_teacher: bool = True         # relational distillation from the frozen CL2CM teacher
    use_slots: bool = True           # LECCR semantic slots
    use_soft: bool = True            # LECCR softened matching under English guidance
    # --- architecture --------------------------------------------------------------------------
    embed_dim: int = 256
    hidden_dim: int = 512
    dropout: float = 0.1
    visual_pooling: str = "mean"     # "mean" | "attention"
    attn_heads: int = 4
    share_text_head: bool = True     # one text head for s and t in the student
    teacher_shared: bool = True      # one text head for s and t in the teacher
    init_text_from_teacher: bool = True
    n_slots: int = 4
    max_text_tokens: int = 32        # word tokens kept per sentence for the teacher's OT term
    # --- optimisation --------------------------------------------------------------------------
    epochs: int = 30
    batch_size: int = 128
    sampler: str = "caption"         # student epochs: "caption" (every caption once) | "image" (one random
                                     # caption per image: each image is encoded once per epoch, ~K x cheaper)
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_frac: float = 0.1         # fraction of all steps with linear warm-up, then cosine decay to 0
    grad_clip: float = 1.0
    patience: int = 8                # epochs without a val mR gain before stopping
    device: str = "auto"             # "auto" | "cpu" | "cuda"
    amp: bool = True                 # bfloat16 autocast, CUDA only
    num_threads: int | None = None   # torch CPU threads (None: leave as is)
    eval_batch_size: int = 512
    stop_after_epochs: int | None = None  # testing hook: simulate a crash after this many epochs
    # --- losses --------------------------------------------------------------------------------
    tau: float = 0.05                # InfoNCE temperature
    w_vt: float = 1.0                # InfoNCE(v, t)
    w_vs: float = 1.0                # InfoNCE(v, s)
    # teacher (stage 1)
    w_sent: float = 1.0              # sentence-level InfoNCE(s, t)
    w_ot: float = 0.5                # token-level OT contrastive term
    ot_eps: float = 0.1              # Sinkhorn entropic regularisation
    ot_iters: int = 5
    ot_negatives: int = 7            # hardest in-batch mismatched translations per row
    tau_ot: float = 0.1
    # relational distillation (stage 2)
    w_kd: float = 1.0                # sentence level
    w_kd_fine: float = 0.5           # slot / token level
    tau_kd: float = 0.1
    # slots
    w_slot: float = 0.5              # slot-text contrastive (max over slots), for s and t
    w_div: float = 0.1               # slot diversity
    w_align: float = 0.1             # slot <-> visual-token alignment
    tau_align: float = 0.1
    slot_fusion: float = 0.2         # inference: weight of the slot similarity in the fused score
    # softened matching
    soft_alpha: float = 0.8
    soft_tau: float = 0.05
    w_soft: float = 0.5              # L_vt = (1 - w_soft) InfoNCE(v, t) + w_soft KL(soft || pred)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def validate(self) -> TrainParams:
        if self.visual_pooling not in ("mean", "attention"):
            raise ParamError(f"param 'visual_pooling' must be 'mean' or 'attention', got {self.visual_pooling!r}")
        if self.sampler not in ("caption", "image"):
            raise ParamError(f"param 'sampler' must be 'caption' or 'image', got {self.sampler!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ParamError(f"param 'device' must be 'auto', 'cpu' or 'cuda', got {self.device!r}")
        for key in ("embed_dim", "hidden_dim", "epochs", "batch_size", "n_slots", "ot_iters", "max_text_tokens",
                    "eval_batch_size", "attn_heads"):
            if int(getattr(self, key)) < 1:
                raise ParamError(f"param '{key}' must be >= 1, got {getattr(self, key)}")
        if self.embed_dim % self.attn_heads:
            raise ParamError(f"param 'embed_dim' ({self.embed_dim}) must be divisible by 'attn_heads' ({self.attn_heads})")
        for key in ("tau", "ot_eps", "tau_ot", "tau_kd", "tau_align", "soft_tau", "lr"):
            if float(getattr(self, key)) <= 0:
                raise ParamError(f"param '{key}' must be > 0, got {getattr(self, key)}")
        for key in ("soft_alpha", "w_soft", "slot_fusion", "warmup_frac", "dropout"):
            if not 0.0 <= float(getattr(self, key)) <= 1.0:
                raise ParamError(f"param '{key}' must be in [0, 1], got {getattr(self, key)}")
        if self.patience < 0 or self.ot_negatives < 0:
            raise ParamError("params 'patience' and 'ot_negatives' must be >= 0")
        return self


_FIELDS = {f.name: f for f in fields(TrainParams)}


def resolve_params(params: dict[str, Any] | TrainParams | None) -> TrainParams:
    """Build :class:`TrainParams` from a config dict.

    ``params["preset"]`` (optional) names a preset of :mod:`ccr.train.presets`, applied first; the
    other keys override it.  Unknown keys raise :class:`ParamError` naming the key.
    """
    if isinstance(params, TrainParams):
        return params.validate()
    params = dict(params or {})
    values: dict[str, Any] = {}
    preset = params.pop("preset", None)
    if preset is not None:
        from ccr.train.presets import PRESETS

        if preset not in PRESETS:
            raise ParamError(f"unknown preset '{preset}' (param 'preset'); known: {', '.join(PRESETS)}")
        values.update(PRESETS[preset])
    values.update(params)
    unknown = sorted(k for k in values if k not in _FIELDS)
    if unknown:
        raise ParamError(f"unknown training param(s) {unknown}; known params: {', '.join(sorted(_FIELDS))}")
    out = TrainParams()
    for key, value in values.items():
        default = getattr(out, key)
        if isinstance(default, bool) and not isinstance(value, bool):
            raise ParamError(f"param '{key}' must be a bool, got {value!r}")
        if isinstance(default, (int, float)) and not isinstance(default, bool):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ParamError(f"param '{key}' must be a number, got {value!r}")
            if isinstance(default, int):
                if isinstance(value, float) and not value.is_integer():
                    raise ParamError(f"param '{key}' must be an integer, got {value!r}")
                value = int(value)
            else:
                value = float(value)
        setattr(out, key, value)
    return out.validate()
