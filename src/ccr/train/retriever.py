"""Retrievers: turn image ids and caption ids into L2-normalised float32 embeddings for FAISS search."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow.parquet as pq
import torch

from ccr.evaluate.metrics import l2_normalise
from ccr.evaluate.run import IMAGE_BATCH
from ccr.models.factory import embedding_dim, load_student, pick_device
from ccr.models.fusion import embed_image_arrays, embed_text_arrays
from ccr.params import resolve_student_params
from ccr.train.inputs import TrainInputs, load_descriptions, read_feature_rows

log = logging.getLogger("ccr.train")

# Params that may differ at inference from training (everything else comes from the checkpoint).
INFERENCE_KEYS = ("slot_fusion", "device", "eval_batch_size", "num_threads")


# A query-side transform of raw pooled text features before a model reads them (ids, rows) -> rows, e.g.
# ccr.evaluate.centering's language centering; None: the features as stored.
TextShift = Callable[[list[str], np.ndarray], np.ndarray]


class Retriever(Protocol):
    dim: int

    def embed_images(self, image_ids: list[str]) -> np.ndarray: ...

    def embed_texts(self, caption_ids: list[str]) -> np.ndarray: ...


def text_features(inputs: TrainInputs, caption_ids: list[str]) -> np.ndarray:
    """Pooled text features of ``caption_ids`` from caption_features, falling back to translation_features."""
    ids = list(caption_ids)
    found: dict[str, np.ndarray] = {}
    sources = [inputs.caption_features] + ([inputs.translation_features] if inputs.translation_features else [])
    for path in sources:
        missing = [i for i in ids if i not in found]
        if not missing:
            break
        feats = read_feature_rows(path, missing, False, "text features", allow_missing=True)
        found.update(zip(feats.ids, feats.pooled, strict=True))
    missing = [i for i in ids if i not in found]
    if missing:
        raise KeyError(f"{len(missing)} caption id(s) have no text features in {[str(p) for p in sources]}, "
                       f"e.g. {missing[:3]}")
    if not ids:
        return np.zeros((0, pq.read_schema(inputs.caption_features).field("pooled").type.list_size), np.float32)
    return np.stack([found[i] for i in ids]).astype(np.float32)


def shifted(shift: TextShift | None, caption_ids: list[str], pooled: np.ndarray) -> np.ndarray:
    return pooled if shift is None else shift(caption_ids, pooled)


class ZeroShotRetriever:
    """No training: image = mean of its description views' text features; text = its frozen feature.

    The descriptions are English sentences embedded by the same frozen multilingual encoder as the
    queries, so image->text matching happens entirely in that text space.
    """

    def __init__(self, inputs: TrainInputs):
        self.inputs = inputs
        if inputs.description_features is None:
            raise ValueError("zero-shot system needs TrainInputs.description_features")
        self.dim = pq.read_schema(inputs.caption_features).field("pooled").type.list_size
        self.text_shift: TextShift | None = None

    def embed_images(self, image_ids: list[str]) -> np.ndarray:
        desc, mask = load_descriptions(self.inputs, list(image_ids), split=None)
        desc = desc / np.maximum(np.linalg.norm(desc, axis=-1, keepdims=True), 1e-12)
        mean = (desc * mask[..., None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1)
        return l2_normalise(mean, "zero-shot image embeddings")

    def embed_texts(self, caption_ids: list[str]) -> np.ndarray:
        ids = list(caption_ids)
        return l2_normalise(shifted(self.text_shift, ids, text_features(self.inputs, ids)), "text embeddings")


class StudentRetriever:
    """A trained student: image = (slot-fused) global embedding, text = target text head."""

    def __init__(self, ckpt_path: Path, inputs: TrainInputs, params: dict[str, Any] | None):
        given = dict(params or {})
        given.pop("preset", None)
        overrides = {k: v for k, v in given.items() if k in INFERENCE_KEYS}
        device = pick_device(overrides.get("device", "auto"))
        self.model, ckpt = load_student(ckpt_path, device)
        self.params = resolve_student_params({**ckpt["params"], **overrides})
        if self.params.num_threads:
            torch.set_num_threads(self.params.num_threads)
        self.device = device
        self.inputs = inputs
        self.beta = self.params.slot_fusion if self.params.use_slots else 0.0
        self.dim = embedding_dim(ckpt["arch"], self.beta)
        if inputs.image_features is None:
            raise ValueError("TrainInputs.image_features is None: a trained student needs image features")
        self.has_tokens = "tokens" in pq.read_schema(inputs.image_features).names
        self.text_shift: TextShift | None = None
        log.info("loaded student %s (epoch %d, val mR %.2f, slot fusion %.2f)", ckpt_path, ckpt["epoch"],
                 ckpt["val_mr"], self.beta)

    def embed_images(self, image_ids: list[str]) -> np.ndarray:
        ids = list(image_ids)
        p = self.params
        out = [np.zeros((0, self.dim), np.float32)]
        # bounded memory: grid tokens are large (the evaluation's calls are this size already)
        for start in range(0, len(ids), IMAGE_BATCH):
            chunk = ids[start: start + IMAGE_BATCH]
            feats = read_feature_rows(self.inputs.image_features, chunk, self.has_tokens, "image features")
            desc = mask = None
            if p.use_slots:
                desc, mask = load_descriptions(self.inputs, chunk, split=None)
            emb = embed_image_arrays(self.model, feats.pooled, feats.tokens, desc, mask, self.beta,
                                     p.eval_batch_size, self.device)
            out.append(emb.reshape(len(chunk), self.dim))
        return l2_normalise(np.concatenate(out), "image embeddings")

    def embed_texts(self, caption_ids: list[str]) -> np.ndarray:
        ids = list(caption_ids)
        pooled = shifted(self.text_shift, ids, text_features(self.inputs, ids))
        out = embed_text_arrays(self.model, pooled, self.beta, self.params.eval_batch_size, self.device)
        return l2_normalise(out.reshape(len(pooled), self.dim), "text embeddings")


def fuse_embeddings(parts: Sequence[np.ndarray], weights: Sequence[float], what: str) -> np.ndarray:
    """Rows ``[sqrt(w_1) e_1 ; sqrt(w_2) e_2 ; ...]`` of the members' unit rows ``parts`` (weights summing
    to 1): the inner product of two such rows is ``sum_i w_i e_i . e_i'``, and they are unit rows again."""
    scaled = [np.sqrt(w) * l2_normalise(np.asarray(e, np.float32), what) for w, e in zip(weights, parts, strict=True)]
    return np.concatenate(scaled, axis=1).astype(np.float32, copy=False)


class EnsembleRetriever:
    """Score fusion of several retrievers: ``score(q, g) = sum_i w_i s_i(q, g)`` with the weights
    normalised to sum to 1, computed exactly as the inner product of ``[sqrt(w_1) e_1; sqrt(w_2) e_2; ...]``
    on both sides. The members' unit vectors make a unit vector again, so the cached gallery, FAISS and
    the querybank (which folds into unit vectors) take an ensemble like any one student."""

    def __init__(self, members: Sequence[Retriever], weights: Sequence[float]):
        if len(members) != len(weights) or len(members) < 2:
            raise ValueError(f"an ensemble needs two or more members, each with a weight; got {len(members)} "
                             f"member(s) and {len(weights)} weight(s)")
        if not all(math.isfinite(w) and w > 0 for w in weights):
            raise ValueError(f"ensemble weights must be finite and > 0, got {list(weights)}")
        total = float(sum(weights))
        self.members = list(members)
        self.weights = [float(w) / total for w in weights]
        self.dim = sum(m.dim for m in self.members)

    def embed_images(self, image_ids: list[str]) -> np.ndarray:
        return fuse_embeddings([m.embed_images(image_ids) for m in self.members], self.weights, "image embeddings")

    def embed_texts(self, caption_ids: list[str]) -> np.ndarray:
        return fuse_embeddings([m.embed_texts(caption_ids) for m in self.members], self.weights, "text embeddings")


def load_retriever(system_dir: Path | str | None, inputs: TrainInputs, params: dict[str, Any] | None) -> Retriever:
    """The retriever of a trained system (``system_dir`` holding ``student.pt``, or its parent holding
    ``student/student.pt``), or the zero-shot system when ``system_dir`` is None.

    Architecture and weights come from the checkpoint; of ``params`` only the inference keys
    (``slot_fusion``, ``device``, ``eval_batch_size``, ``num_threads``) are used.
    """
    if system_dir is None:
        return ZeroShotRetriever(inputs)
    system_dir = Path(system_dir)
    for cand in (system_dir / "student.pt", system_dir / "student" / "student.pt"):
        if cand.exists():
            return StudentRetriever(cand, inputs, params)
    raise FileNotFoundError(f"no student.pt in {system_dir} (nor {system_dir / 'student'})")


def load_job_retriever(mapping: Any, lang: str, params: dict[str, Any] | Sequence[dict[str, Any]] | None,
                       weights: Sequence[float] | None = None) -> tuple[TrainInputs, Retriever]:
    """The inputs of a job (a mapping of TrainInputs field -> path, e.g. Snakemake's ``input``) and the
    retriever of the student its ``student`` entry names (the checkpoint file), or the zero-shot one.

    With ``weights``, ``student`` is a list of checkpoints and ``params`` a list of their params: the
    retriever is their :class:`EnsembleRetriever`.
    """
    inputs = TrainInputs.from_mapping(mapping, lang=lang)
    student = mapping.get("student")
    if weights is None:
        if isinstance(student, list | tuple) or not isinstance(params, Mapping | None):
            raise ValueError("several students (or params lists) but no ensemble weights")
        return inputs, load_retriever(Path(student).parent if student else None, inputs, params)
    paths, member_params = list(student or []), list(params or [])
    if not len(paths) == len(member_params) == len(weights):
        raise ValueError(f"an ensemble of {len(paths)} student(s) with {len(member_params)} params and "
                         f"{len(weights)} weights")
    members = [load_retriever(Path(path).parent, inputs, prm) for path, prm in zip(paths, member_params, strict=True)]
    return inputs, EnsembleRetriever(members, weights)
