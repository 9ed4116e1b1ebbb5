"""A trained student as one self-contained file: weights, architecture, the encoders that feed it, metrics.

A bundle is what ``ccr index`` / ``ccr search`` / ``ccr serve`` need to embed new images and queries
without the workflow's feature tables.  It is a :mod:`ccr.models.checkpoint` file of kind ``bundle``
(tensors + plain JSON meta, read with ``torch.load(weights_only=True)``):

* ``state_dict``: the student's weights (:class:`ccr.models.CrossModalStudent`);
* ``meta``: ``arch`` (constructor arguments), ``params`` (the student params it was trained with),
  ``image_encoder`` / ``text_encoder`` / ``describer`` (registry backend name + params: the frozen
  models that make the student's inputs; ``describer`` is null when the student has no semantic
  slots), ``embed_dim`` (length of the fused vectors), ``slot_fusion``, ``query_languages``,
  ``trained_on`` (the training text), ``metrics`` (the evaluation of each query set), ``source``
  (what it was exported from);
* ``checksum``: ``sha256`` over the canonical JSON of ``meta`` and every tensor (name, dtype, shape,
  bytes).  A bundle changed after export is refused by :func:`load_bundle`.

An ensemble's bundle (a query set answered by several students) holds ``meta["members"]`` instead of one
student's ``arch`` / ``params`` / ``slot_fusion`` / ``student``, each with its relative ``weight``, and
their weights as ``member<i>.*``; it embeds by the members' fused vectors, as the evaluation did.
A bundle evaluated with language centering also holds its block means (``meta["centering"]``,
tensors ``centering.*``), applied to queries whose language is given. A bundle evaluated with querybank
normalisation holds its banks as the evaluation embedded them (``meta["querybank"]``: beta and the bank
sizes; tensors ``querybank.texts`` / ``querybank.images``) and folds their biases into every embedding
(:mod:`ccr.evaluate.querybank`), so a search ranks as the evaluation ranked; its vectors are then 4 wider
than the students' (``dim = embed_dim + 4``).

A describer that works from tables (``knn-captions``: the captions of the nearest *training* photos)
travels with what it reads: the training images' pooled features (tensor ``describer_pool.features``)
and their English captions (``meta["describer_pool"]``), so a new photo is described by its nearest
training photos exactly as the workflow described the gallery.

Images are embedded as the workflow embeds its gallery: image encoder on the pixels (pooled + grid
tokens), and for a student with slots the describer's views of the image through the text encoder
with the descriptions' role (``passage``, or ``query`` for knn-captions views); queries go through
the text encoder with role ``query``.  The vectors are the
fused, L2-normalised embeddings of :mod:`ccr.models.fusion`, so inner product = the trained score.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ccr.evaluate.metrics import l2_normalise
from ccr.keys import canonical, canonical_json, encoder_key
from ccr.models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ccr.models.factory import create_student, embedding_dim, pick_device
from ccr.models.fusion import embed_image_arrays, embed_text_arrays
from ccr.params import resolve_student_params

log = logging.getLogger("ccr.search")

KIND = "bundle"
BUNDLE_FORMAT = 1
# Image backends that read features shipped with a dataset: they cannot embed a new image.
NOT_FOR_NEW_IMAGES = frozenset({"precomputed"})
# Rows per forward pass of the heads.
HEAD_BATCH = 256

ImageInput = str | os.PathLike | Image.Image


class BundleError(ValueError):
    """A bundle that cannot be used (the message names the bundle file and what is wrong)."""


def tensor_checksum(meta: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor]) -> str:
    """``sha256:<hex>`` over the canonical JSON of ``meta`` and every tensor (sorted by name)."""
    digest = hashlib.sha256()
    digest.update(canonical_json(meta).encode("utf-8"))
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        header = canonical_json([name, str(tensor.dtype), list(tensor.shape)])
        digest.update(b"\0" + header.encode("utf-8") + b"\0")
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return "sha256:" + digest.hexdigest()


def _spec(what: str, spec: Mapping[str, Any] | None, required: bool = True) -> dict[str, Any] | None:
    """``{"backend", "params"}`` of an encoder/describer, checked (a ValueError names ``what``)."""
    if spec is None:
        if required:
            raise ValueError(f"export_bundle: {what} is required")
        return None
    if not isinstance(spec, Mapping) or not isinstance(spec.get("backend"), str) or not spec["backend"]:
        raise ValueError(f"export_bundle: {what} must be a mapping with a 'backend' name, got {spec!r}")
    try:
        params = canonical(dict(spec.get("params") or {}))
    except TypeError as err:
        raise ValueError(f"export_bundle: {what} params must be JSON values: {err}") from err
    return {"backend": spec["backend"], "params": params}


POOL_TENSOR = "describer_pool.features"
# language centering's block means (ccr.evaluate.centering.bundle_centering): English's, and one per language
CENTERING_TENSOR = "centering.{}"
QUERYBANK_TENSOR = "querybank.{}"  # texts, images


def describer_pool(images_path: str | os.PathLike, captions_path: str | os.PathLike,
                   image_features_path: str | os.PathLike) -> tuple[dict[str, Any], torch.Tensor]:
    """What a table describer (knn-captions) reads of the training data: the train images' pooled
    features and their English human captions (never a val or test caption)."""
    import pyarrow.compute as pc

    from ccr.data.tables import read_captions, read_images
    from ccr.evaluate.run import human_captions
    from ccr.features.store import read_features

    images = read_images(images_path)
    train_ids = images.filter(pc.equal(images["split"], "train"))["image_id"].to_pylist()
    feats = read_features(image_features_path, with_tokens=False).take(train_ids)
    caps = human_captions(read_captions(captions_path), "train", "en")
    pool = {"image_ids": train_ids, "caption_ids": caps["caption_id"].to_pylist(),
            "caption_image_ids": caps["image_id"].to_pylist(), "caption_texts": caps["text"].to_pylist()}
    return pool, torch.from_numpy(np.ascontiguousarray(feats.pooled, dtype=np.float32))


def _member(student_path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """One trained student as a bundle records it: its meta fields and its weights."""
    ckpt = load_checkpoint(student_path, "student")
    meta = ckpt["meta"]
    for field in ("arch", "params"):
        if field not in meta:
            raise CheckpointError(f"{student_path}: field '{field}' is missing from the checkpoint meta")
    params = resolve_student_params(dict(meta["params"]))
    beta = float(params.slot_fusion) if meta["arch"].get("use_slots") else 0.0
    fields = {
        "arch": meta["arch"],
        "params": params.to_dict(),
        "embed_dim": embedding_dim(meta["arch"], beta),  # a linear student's is its text block's width
        "slot_fusion": beta,
        "trained_on": meta.get("lang"),
        "student": {k: meta.get(k) for k in ("epoch", "val_mr", "seed", "fingerprint", "has_mt", "distilled")},
    }
    return fields, {k: v.detach().cpu() for k, v in ckpt["state_dict"].items()}


def export_bundle(student_path: str | os.PathLike | Sequence[str | os.PathLike], out_path: str | os.PathLike, *,
                  image_encoder: Mapping[str, Any], text_encoder: Mapping[str, Any],
                  describer: Mapping[str, Any] | None, query_languages: Sequence[str],
                  metrics: Mapping[str, Mapping[str, Any]] | None = None,
                  source: Mapping[str, Any] | None = None, description_role: str = "passage",
                  pool: tuple[dict[str, Any], torch.Tensor] | None = None,
                  centering: Mapping[str, Any] | None = None, weights: Sequence[float] | None = None,
                  querybank: Mapping[str, Any] | None = None) -> Path:
    """Write the bundle of the trained student at ``student_path`` to ``out_path`` (atomically).

    ``image_encoder`` / ``text_encoder`` / ``describer`` are ``{"backend", "params"}`` as in the
    config (``describer`` only for a student with slots); ``metrics`` maps a query set to its
    evaluation (metrics.json); ``source`` is free JSON saying what the bundle was made from.
    ``description_role``: the text encoder role the descriptions were embedded with; ``pool``
    (:func:`describer_pool`): what a table describer reads, required for one. ``centering``
    (:func:`ccr.evaluate.centering.bundle_centering`): the language centering its queries were evaluated
    with, applied by :meth:`Bundle.embed_texts` to queries of a language it holds. ``querybank``:
    ``{"beta", "texts", "images"}``, the evaluation's banks embedded by this model ((n, embed_dim) arrays,
    either may be None), folded into the bundle's embeddings as the evaluation folded them.

    With ``weights``, ``student_path`` lists the students of an ensemble (ccr.train.EnsembleRetriever):
    the bundle holds each one (``meta.members``, weights ``member<i>.*``) and embeds by their fused
    vectors, as the ensemble's evaluation did.
    """
    ensemble = weights is not None
    paths = list(student_path) if ensemble else [student_path]
    if ensemble and (len(paths) < 2 or len(paths) != len(weights)):
        raise ValueError(f"export_bundle: an ensemble needs two or more students, one weight each; got "
                         f"{len(paths)} student(s) and {len(weights)} weight(s)")
    members = [_member(path) for path in paths]
    slots = any(fields["arch"].get("use_slots") for fields, _ in members)
    if slots and describer is None:
        raise ValueError(f"export_bundle: the student {paths[0] if len(paths) == 1 else paths} uses semantic slots, "
                         "so 'describer' (the backend that wrote its description views) is required")
    langs = sorted({str(lang) for lang in query_languages})
    if not langs:
        raise ValueError("export_bundle: query_languages is empty")
    if ensemble:
        total = float(sum(weights))
        model_fields = {
            "members": [{**fields, "weight": float(w) / total} for (fields, _), w in zip(members, weights, strict=True)],
            "embed_dim": sum(fields["embed_dim"] for fields, _ in members),
            "trained_on": members[0][0]["trained_on"],
        }
        state = {f"member{i}.{k}": v for i, (_, weights_i) in enumerate(members) for k, v in weights_i.items()}
    else:
        model_fields, state = members[0]
    banks = _querybank_banks(querybank, int(model_fields["embed_dim"]))
    bundle_meta = canonical({
        "bundle_format": BUNDLE_FORMAT,
        **model_fields,
        "image_encoder": _spec("image_encoder", image_encoder),
        "text_encoder": _spec("text_encoder", text_encoder),
        "describer": _spec("describer", describer, required=False) if slots else None,
        "description_role": description_role,
        "describer_pool": pool[0] if slots and pool is not None else None,
        "query_languages": langs,
        "metrics": dict(metrics or {}),
        "source": dict(source or {}),
        "centering": None if not centering else {
            "spans": [[int(a), int(b)] for a, b in centering["spans"]],
            "languages": {code: {"alpha": float(c["alpha"]), "has_mean": [bool(x) for x in c["has_mean"]]}
                          for code, c in centering["languages"].items()}},
    })
    from ccr.jobs import describer_needs

    if (slots and pool is None and describer is not None
            and "captions" in describer_needs(describer["backend"], describer.get("params"))):
        raise ValueError(f"export_bundle: describer '{describer['backend']}' reads the training tables: "
                         "pass pool=describer_pool(images, captions, image_features)")
    state = dict(state)
    if slots and pool is not None:
        state[POOL_TENSOR] = pool[1]
    if querybank is not None:
        bundle_meta["querybank"] = {"beta": float(querybank["beta"]), **{name: len(b) for name, b in banks.items()}}
        state.update({QUERYBANK_TENSOR.format(name): torch.from_numpy(b) for name, b in banks.items()})
    if centering:
        state[CENTERING_TENSOR.format("en")] = torch.from_numpy(np.asarray(centering["english"], np.float32))
        for code, c in centering["languages"].items():
            state[CENTERING_TENSOR.format(code)] = torch.from_numpy(np.asarray(c["mean"], np.float32))
    checksum = tensor_checksum(bundle_meta, state)
    save_checkpoint(out_path, KIND, bundle_meta, state, checksum=checksum)
    log.info("exported bundle %s (%s) from %s: embed dim %d, slots %s, languages %s", out_path, checksum[:19],
             ", ".join(map(str, paths)), bundle_meta["embed_dim"], "yes" if slots else "no", ", ".join(langs))
    return Path(out_path)


def _querybank_banks(querybank: Mapping[str, Any] | None, dim: int) -> dict[str, np.ndarray]:
    """The querybank's embedded banks, checked: (n, dim) finite float32 rows, at least one bank."""
    if querybank is None:
        return {}
    banks = {name: np.ascontiguousarray(querybank[name], np.float32) for name in ("texts", "images")
             if querybank.get(name) is not None}
    if not banks:
        raise ValueError("export_bundle: a querybank needs its text bank, its image bank or both")
    for name, bank in banks.items():
        if bank.ndim != 2 or bank.shape[1] != dim or not len(bank) or not np.isfinite(bank).all():
            raise ValueError(f"export_bundle: querybank '{name}' must be finite (n, {dim}) rows (the students' "
                             f"embedding dim), got shape {bank.shape}")
    return banks


class Bundle:
    """A loaded bundle: embeds images (file paths or PIL images) and texts into the student's space.

    Encoders are created on first use (a text query needs no image model).  Every output is float32,
    L2-normalised, (n, :attr:`dim`).
    """

    def __init__(self, path: Path, meta: dict[str, Any], state_dict: dict[str, torch.Tensor], checksum: str,
                 device: str = "cpu", threads: int | None = None):
        self.path, self.meta, self.checksum = path, meta, checksum
        self.querybank = meta.get("querybank") or None
        # folded querybank biases make every vector 4 wider (ccr.evaluate.querybank)
        self.dim = int(meta["embed_dim"]) + (4 if self.querybank else 0)
        self.device = pick_device(device)
        self.threads = threads
        state_dict = dict(state_dict)
        self.pool_features = state_dict.pop(POOL_TENSOR, None)
        self.querybank_banks = {name: state_dict.pop(QUERYBANK_TENSOR.format(name)).numpy()
                                for name in ("texts", "images") if QUERYBANK_TENSOR.format(name) in state_dict}
        self.centering = meta.get("centering") or None
        self.centering_means = {name: state_dict.pop(CENTERING_TENSOR.format(name)).numpy()
                                for name in ["en", *(self.centering or {}).get("languages", {})]
                                if CENTERING_TENSOR.format(name) in state_dict}
        # (model, slot fusion weight, embedding dim, ensemble weight) per student; one for a plain bundle
        self.members: list[tuple[Any, float, int, float]] = []
        specs = meta.get("members") or [meta]
        for i, spec in enumerate(specs):
            prefix = f"member{i}." if "members" in meta else ""
            model = create_student(spec["arch"])
            try:
                model.load_state_dict({k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)})
            except RuntimeError as err:
                raise BundleError(f"{path}: weights do not fit the architecture in its meta: {err}") from err
            model.to(self.device).eval()
            self.members.append((model, float(spec["slot_fusion"]), int(spec["embed_dim"]),
                                 float(spec.get("weight", 1.0))))
        self.use_slots = any(model.slot_module is not None for model, *_ in self.members)
        self._image_encoder: Any = None
        self._text_encoder: Any = None
        self._describer: Any = None

    def __repr__(self) -> str:
        return f"Bundle({str(self.path)!r}, dim={self.dim}, checksum={self.checksum[:19]}...)"

    @property
    def query_languages(self) -> list[str]:
        return list(self.meta["query_languages"])

    # ---- encoders ---------------------------------------------------------------------------------

    def _create(self, role: str, registry: Any, spec: Mapping[str, Any]) -> Any:
        hints = {"threads": self.threads} if self.threads else None
        try:
            return registry.create(spec["backend"], hints=hints, **dict(spec["params"]))
        except Exception as err:  # a missing package (ImportError), bad params, a model file not found...
            raise BundleError(f"{self.path}: cannot create the bundle's {role} '{spec['backend']}' with params "
                              f"{dict(spec['params'])}: {type(err).__name__}: {err}. Install what it needs "
                              "(see docs/search.md) or use a bundle whose encoders are installed here") from err

    @property
    def image_encoder(self) -> Any:
        if self._image_encoder is None:
            from ccr.features import IMAGE_ENCODERS

            self._image_encoder = self._create("image encoder", IMAGE_ENCODERS, self.meta["image_encoder"])
        return self._image_encoder

    @property
    def text_encoder(self) -> Any:
        if self._text_encoder is None:
            from ccr.features import TEXT_ENCODERS

            self._text_encoder = self._create("text encoder", TEXT_ENCODERS, self.meta["text_encoder"])
        return self._text_encoder

    @property
    def describer(self) -> Any:
        if self._describer is None:
            from ccr.describe import DESCRIBERS

            self._describer = self._create("describer", DESCRIBERS, self.meta["describer"])
        return self._describer

    def load_encoders(self, images: bool = True) -> None:
        """Create every encoder now (fail before hours of work rather than at the first image)."""
        _ = self.text_encoder
        if images:
            _ = self.image_encoder
            if self.use_slots:
                _ = self.describer

    # ---- embeddings -------------------------------------------------------------------------------

    def embed_image_features(self, pooled: np.ndarray, tokens: np.ndarray | None, desc: np.ndarray | None,
                             desc_mask: np.ndarray | None) -> np.ndarray:
        """Image features (as in the feature tables: pooled (n, Di), tokens (n, T, Di), description views
        (n, V, Dt) + mask (n, V)) -> fused embeddings (n, dim)."""
        if self.use_slots and desc is None:
            raise ValueError(f"{self.path}: the student uses semantic slots: description views are needed")
        pooled = np.asarray(pooled, np.float32)
        fused = self._fused([
            embed_image_arrays(model, pooled, tokens, desc if model.slot_module is not None else None,
                               desc_mask if model.slot_module is not None else None, beta, HEAD_BATCH, self.device)
            for model, beta, _, _ in self.members], len(pooled), "image embeddings")
        return self._with_querybank(fused, image_side=True)

    def embed_text_features(self, pooled: np.ndarray) -> np.ndarray:
        """Pooled sentence features (n, Dt) -> embeddings (n, dim)."""
        pooled = np.asarray(pooled, np.float32)
        fused = self._fused([embed_text_arrays(model, pooled, beta, HEAD_BATCH, self.device)
                             for model, beta, _, _ in self.members], len(pooled), "text embeddings")
        return self._with_querybank(fused, image_side=False)

    def _with_querybank(self, rows: np.ndarray, image_side: bool) -> np.ndarray:
        """Unit rows with the querybank's bias folded in, as the evaluation folded them (as they are without
        one): an image is normalised by the text bank, a text by the image bank."""
        if not self.querybank:
            return rows
        from ccr.evaluate.querybank import fold_images, fold_texts, querybank_scale

        beta = float(self.querybank["beta"])
        bank = self.querybank_banks.get("texts" if image_side else "images")
        scale = querybank_scale(0 if bank is None else len(bank), beta)
        return (fold_images if image_side else fold_texts)(rows, bank, beta, scale)

    def _fused(self, outputs: list[np.ndarray], n: int, what: str) -> np.ndarray:
        """One student's unit rows, or an ensemble's fused rows (ccr.train.retriever.fuse_embeddings)."""
        parts = [l2_normalise(out.reshape(n, dim), what) for out, (_, _, dim, _) in zip(outputs, self.members,
                                                                                         strict=True)]
        if len(parts) == 1:
            return parts[0]
        from ccr.train.retriever import fuse_embeddings

        return fuse_embeddings(parts, [weight for *_, weight in self.members], what)

    def _describe_from_pool(self, pooled: np.ndarray) -> list[list[str]]:
        """Views of new images by a table describer: their nearest photos among the training images."""
        import pyarrow as pa

        from ccr.data.tables import CAPTIONS_SCHEMA
        from ccr.features.store import Features

        pool = self.meta.get("describer_pool")
        if pool is None or self.pool_features is None:
            raise BundleError(f"{self.path}: describer '{self.meta['describer']['backend']}' needs the training "
                              "pool, which this bundle lacks; re-export it")
        new_ids = [f"new-{i}" for i in range(len(pooled))]
        images = pa.table({"image_id": pool["image_ids"] + new_ids,
                           "path": ["bundle"] * (len(pool["image_ids"]) + len(new_ids)),
                           "split": ["train"] * len(pool["image_ids"]) + ["test"] * len(new_ids)})
        n = len(pool["caption_ids"])
        captions = pa.table({"caption_id": pool["caption_ids"], "image_id": pool["caption_image_ids"],
                             "lang": ["en"] * n, "text": pool["caption_texts"], "origin": ["human"] * n,
                             "split": ["train"] * n, "source_id": [None] * n}, schema=CAPTIONS_SCHEMA)
        feats = Features(ids=pool["image_ids"] + new_ids,
                         pooled=np.concatenate([self.pool_features.numpy(), np.asarray(pooled, np.float32)]))
        table = self.describer.describe_table(images, captions, feats, image_ids=new_ids)
        views: dict[str, list[str]] = {}
        for iid, text in zip(table["image_id"].to_pylist(), table["text"].to_pylist(), strict=True):
            views.setdefault(iid, []).append(text)
        return [views.get(i, []) for i in new_ids]

    def describe(self, paths: Sequence[str], pooled: np.ndarray | None = None,
                 images: Sequence[Image.Image] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Description views of image files through the text encoder: (n, V, Dt) and mask (n, V).

        A describer that reads the image features takes the images' ``pooled`` features: knn-captions
        instead of the files, imagenet-tags beside the pixels (``images``, decoded, else the files).
        """
        needs = getattr(self.describer, "needs", ())
        if needs and pooled is None:
            raise ValueError("describe: this bundle's describer needs the images' pooled features")
        if "captions" in needs:
            views = self._describe_from_pool(pooled)
        elif needs:
            from ccr.describe.images import load_rgb

            pixels = list(images) if images is not None else [load_rgb(p) for p in paths]
            views = self.describer.describe_pooled(pixels, pooled, self.meta["image_encoder"]["backend"])
        else:
            views = self.describer.describe([str(p) for p in paths])
        if len(views) != len(paths):
            raise RuntimeError(f"describer '{self.meta['describer']['backend']}' returned {len(views)} results "
                               f"for {len(paths)} images")
        # the describe stage stores each view with its whitespace collapsed: embed the same text
        texts = [[" ".join(v.split()) for v in per_image] for per_image in views]
        flat = [t for per_image in texts for t in per_image]
        vecs = self.text_encoder.encode(flat, role=self.meta.get("description_role", "passage"),
                                        langs=["en"] * len(flat))
        width = max((len(t) for t in texts), default=1)
        desc = np.zeros((len(paths), width, vecs.shape[1]), np.float32)
        mask = np.zeros((len(paths), width), bool)
        row = 0
        for i, per_image in enumerate(texts):
            k = len(per_image)
            desc[i, :k], mask[i, :k] = vecs[row: row + k], True
            row += k
        return desc, mask

    def embed_images(self, images: Sequence[ImageInput]) -> np.ndarray:
        """Image files (raises :class:`ccr.features.ImageLoadError` naming an unreadable one) or PIL
        images -> (n, dim)."""
        from ccr.features import load_image

        pils = [im.convert("RGB") if isinstance(im, Image.Image) else load_image(im) for im in images]
        files = None if any(isinstance(im, Image.Image) for im in images) else [str(p) for p in images]
        return self.embed_loaded(pils, files)

    def embed_loaded(self, images: Sequence[Image.Image], paths: Sequence[str] | None = None) -> np.ndarray:
        """Decoded RGB images -> (n, dim); ``paths``: their files, which the describer reads (without
        them, images go to the describer through temporary PNG files)."""
        if not images:
            return np.zeros((0, self.dim), np.float32)
        pooled, tokens = self.image_encoder.encode(list(images))
        desc = mask = None
        if self.use_slots:
            if getattr(self.describer, "needs", ()):  # it reads the features (and the decoded pixels)
                desc, mask = self.describe([f"image-{i}" for i in range(len(images))], pooled, images)
            elif paths is not None:
                desc, mask = self.describe(list(paths))
            else:  # describers read files
                with tempfile.TemporaryDirectory(prefix="ccr-bundle-") as tmp:
                    files = []
                    for i, im in enumerate(images):
                        files.append(str(Path(tmp) / f"{i}.png"))
                        im.save(files[-1])
                    desc, mask = self.describe(files)
        return self.embed_image_features(pooled, tokens, desc, mask)

    def embed_texts(self, texts: Sequence[str], langs: Sequence[str] | None = None) -> np.ndarray:
        """Query texts (any language the text encoder handles) -> (n, dim)."""
        texts = [str(t) for t in texts]
        empty = [i for i, t in enumerate(texts) if not t.strip()]
        if empty:
            raise ValueError(f"query #{empty[0]} is empty")
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        langs = list(langs) if langs else None
        if langs is not None and len(langs) != len(texts):
            raise ValueError(f"{len(texts)} queries but {len(langs)} languages")
        pooled = self.text_encoder.encode(texts, role="query", langs=langs)
        return self.embed_text_features(self.centred(pooled, langs))

    def centred(self, pooled: np.ndarray, langs: Sequence[str] | None) -> np.ndarray:
        """Query features of a language the bundle holds a centering for, moved toward English as its
        evaluation moved them (docs/methods.md, "Language centering"); others, and queries of unknown
        language, as they are."""
        if not self.centering or langs is None:
            return pooled
        from ccr.evaluate.centering import centre_rows

        out = np.array(pooled, np.float32, copy=True)
        for code, c in self.centering["languages"].items():
            rows = [i for i, lang in enumerate(langs) if lang.lower() == code]
            if rows:
                out[rows] = centre_rows(out[rows], self.centering["spans"], self.centering_means["en"],
                                        self.centering_means[code], c["alpha"], c["has_mean"])
        return out

    def summary(self) -> dict[str, Any]:
        """What the bundle is, in a few fields (for logs, index folders and the search page)."""
        m = self.meta
        return {"path": str(self.path), "checksum": self.checksum, "embed_dim": self.dim,
                "querybank": dict(self.querybank) if self.querybank else None,
                "image_encoder": encoder_key(m["image_encoder"]["backend"], m["image_encoder"]["params"]),
                "text_encoder": encoder_key(m["text_encoder"]["backend"], m["text_encoder"]["params"]),
                "describer": m["describer"]["backend"] if m["describer"] else None,
                "query_languages": m["query_languages"], "trained_on": m["trained_on"]}


def _check_backends(path: Path, meta: Mapping[str, Any]) -> None:
    """Refuse a bundle whose encoder names this installation does not know (before any model loads)."""
    from ccr.describe import DESCRIBERS
    from ccr.features import IMAGE_ENCODERS, TEXT_ENCODERS

    wanted = [("image encoder", IMAGE_ENCODERS, meta["image_encoder"]),
              ("text encoder", TEXT_ENCODERS, meta["text_encoder"])]
    if meta["describer"] is not None:
        wanted.append(("describer", DESCRIBERS, meta["describer"]))
    for role, registry, spec in wanted:
        backend = spec["backend"]
        if backend in NOT_FOR_NEW_IMAGES:
            raise BundleError(f"{path}: the bundle's {role} is '{backend}' (features that came with a dataset): "
                              "it cannot embed new images; export a student trained on an image encoder")
        if backend not in registry.names():
            raise BundleError(f"{path}: the bundle's {role} '{backend}' is not installed in this ccr "
                              f"(known: {', '.join(registry.names())}); install the ccr version or extra "
                              "that provides it")


def load_bundle(path: str | os.PathLike, device: str = "cpu", threads: int | None = None) -> Bundle:
    """Read and verify a bundle (``weights_only`` load, checksum, known encoders) -> :class:`Bundle`.

    Raises :class:`BundleError` (or :class:`ccr.models.CheckpointError`) naming the file and the problem.
    """
    path = Path(path)
    try:
        ckpt = load_checkpoint(path, KIND)
    except FileNotFoundError as err:
        raise BundleError(f"bundle not found: {path}") from err
    meta, state, stored = ckpt["meta"], ckpt["state_dict"], ckpt.get("checksum")
    if not isinstance(stored, str) or not stored.startswith("sha256:"):
        raise BundleError(f"{path}: no checksum in the bundle (field 'checksum'); re-export it")
    if meta.get("bundle_format") != BUNDLE_FORMAT:
        raise BundleError(f"{path}: bundle format {meta.get('bundle_format')!r}, this ccr reads {BUNDLE_FORMAT}")
    actual = tensor_checksum(meta, state)
    if actual != stored:
        raise BundleError(f"{path}: checksum mismatch: the bundle was changed after export (stored {stored}, "
                          f"computed {actual}); refusing to use it. Re-export it from the student checkpoint")
    model_fields = ("members",) if "members" in meta else ("arch", "slot_fusion")  # an ensemble's, or one student's
    missing = [k for k in (*model_fields, "image_encoder", "text_encoder", "describer", "embed_dim",
                           "query_languages") if k not in meta]
    if missing:
        raise BundleError(f"{path}: field(s) {missing} missing from the bundle meta")
    _check_backends(path, meta)
    bundle = Bundle(path, meta, state, stored, device=device, threads=threads)
    log.info("loaded bundle %s (%s): embed dim %d, trained on %s", path, stored[:19], bundle.dim, meta["trained_on"])
    return bundle
