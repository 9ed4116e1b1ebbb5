"""Stage ``describe``: several English descriptions ("views") of every image, written from its pixels (LECCR).

Every split is described (descriptions use no human text, so test images get them too). Output rows follow
the captions schema: ``caption_id = f"{image_id}#desc{k}"`` for view ``k``, ``lang = "en"``,
``origin = "description"``, the image's split, ``source_id`` null.

Backends (chosen by name in ``config.yaml``, see ``docs/backends-translate-describe.md``):

- ``imagenet-tags`` (offline default): NOT a captioning model. An ImageNet classifier (by default the head
  of the EfficientNet-Lite image encoder, on the image features: one pass over the images) plus pixel
  colour statistics turned into short template sentences; stands in for the MLLM offline.
- ``hf-vlm``: a Hugging Face image-text-to-text model (Qwen2-VL, LLaVA, ...), one prompt per view.
- ``vllm``: the same with vLLM on a GPU node (fast batched generation).
- ``knn-captions`` (offline): NOT a captioning model either. The English human captions of the image's
  nearest *training* images in image-feature space (leave-one-out, train captions only); it reads the
  captions table and the image features instead of pixels (one pass over the images).
- ``none``: no descriptions (an empty table), for datasets without pixels (pre-extracted video or image
  features); systems that need descriptions (slots, zero-shot) then stop with a clear error.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import pyarrow as pa

from ccr.data.tables import CAPTIONS_SCHEMA, read_captions, read_images, validate_captions
from ccr.features.store import read_features
from ccr.io import Part, Progress, ShardedWriter, fingerprint, plan_shards, read_fingerprint
from ccr.keys import numeric_params
from ccr.registry import Registry

log = logging.getLogger("ccr.describe")

__all__ = ["DESCRIBERS", "DescribeError", "Describer", "describe_images"]


@runtime_checkable
class Describer(Protocol):
    """Writes ``views`` different non-empty English descriptions of each image, in view order."""

    views: int

    def describe(self, paths: list[str]) -> list[list[str]]: ...


class DescribeError(RuntimeError):
    """A describer failed or returned something unusable (the message names the image file)."""


DESCRIBERS: Registry[Describer] = Registry("describe")
DESCRIBERS.register("imagenet-tags", "ccr.describe.imagenet_tags:ImageNetTagDescriber")
DESCRIBERS.register("hf-vlm", "ccr.describe.hf_vlm:HFVLMDescriber")
DESCRIBERS.register("vllm", "ccr.describe.vllm_backend:VLLMDescriber")
DESCRIBERS.register("knn-captions", "ccr.describe.knn_captions:KnnCaptionDescriber")


def describe_images(
    images_path: str | os.PathLike,
    backend: str,
    params: dict[str, Any] | None,
    out_path: str | os.PathLike,
    shard_size: int = 64,
    hints: dict | None = None,
    part: Part | None = None,
    captions_path: str | os.PathLike | None = None,
    image_features_path: str | os.PathLike | None = None,
) -> None:
    """Describe every image of ``images_path`` with ``backend``; write the description rows to ``out_path``.

    A describer that works from tables (``needs``: knn-captions the captions table ``captions_path`` and
    the image features ``image_features_path``; imagenet-tags by default the image features) gets them.

    One shard of ``shard_size`` images per :class:`ccr.io.ShardedWriter` shard, so a crashed run resumes
    where it stopped; the final table is in image order, views in order. ``part=(i, n)``: describe only
    the i-th of n parts of the images (a scattered job; :func:`ccr.io.gather_parts` joins the parts).
    """
    if shard_size < 1:
        raise ValueError(f"describe: shard_size must be >= 1, got {shard_size}")
    out_path = Path(out_path)
    images = read_images(images_path)
    inputs = {"images": read_fingerprint(images_path)}
    if backend == "none":
        if params:
            raise ValueError(f"describe backend 'none' takes no params, got {sorted(params)}")
        log.info("describe 'none': writing an empty descriptions table -> %s", out_path)
        describer, views, images = None, 0, images.slice(0, 0)
    else:
        describer = DESCRIBERS.create(backend, hints=hints, **(params or {}))
        views = int(describer.views)
        if views < 1:
            raise ValueError(f"describe backend '{backend}': views must be >= 1, got {views}")
    needs = tuple(getattr(describer, "needs", ()))
    tables: dict[str, Any] = {}
    if needs:
        given = {"captions": captions_path, "image_features": image_features_path}
        lacking = [name for name in needs if given[name] is None]
        if lacking:
            raise ValueError(f"describe backend '{backend}' needs {' and '.join(lacking)} beside the images "
                             f"(it reads {' and '.join(needs)}: the captions table, the image features)")
        inputs.update({name: read_fingerprint(given[name]) for name in needs})
        tables["captions"] = read_captions(captions_path) if "captions" in needs else None
        tables["features"] = read_features(image_features_path, with_tokens=False) if "image_features" in needs else None
    fp = fingerprint("describe", {"backend": backend, "params": numeric_params(params)}, inputs)

    image_ids = images.column("image_id").to_pylist()
    row_of = {iid: i for i, iid in enumerate(image_ids)}
    paths = images.column("path").to_pylist()
    splits = images.column("split").to_pylist()
    view_ids = {iid: [f"{iid}#desc{k}" for k in range(views)] for iid in image_ids}
    position = {cid: n for n, cid in enumerate(c for iid in image_ids for c in view_ids[iid])}
    shards = plan_shards(image_ids, shard_size, part)
    writer = ShardedWriter(out_path, key="caption_id", schema=CAPTIONS_SCHEMA, fingerprint=fp,
                           resume_key={"shard_size": shard_size, "part": part})
    done = writer.done_keys
    todo = [todo_shard for shard in shards
            if (todo_shard := [row_of[iid] for iid in shard if any(c not in done for c in view_ids[iid])])]
    mine = [iid for shard in shards for iid in shard]
    n_todo = sum(len(chunk) for chunk in todo)
    log.info("describe with '%s' (%d views): %d images%s (%d already done) from %s", backend, views, len(mine),
             f" (part {part[0] + 1} of {part[1]})" if part else "", len(mine) - n_todo, images_path)
    progress = Progress(n_todo, f"describe [{backend}]")
    for chunk in todo:
        if needs:
            # from the tables: the view texts of the chunk's images, in view order
            described = describer.describe_table(images, tables["captions"], tables["features"],
                                                 image_ids=[image_ids[i] for i in chunk])
            by_image: dict[str, list[str]] = {}
            for iid, text in zip(described.column("image_id").to_pylist(), described.column("text").to_pylist(),
                                 strict=True):
                by_image.setdefault(iid, []).append(text)
            texts = [by_image.get(image_ids[i], []) for i in chunk]
        else:
            chunk_paths = [paths[i] for i in chunk]
            for p in chunk_paths:
                if not Path(p).is_file():
                    raise FileNotFoundError(f"describe: image file not found: {p} (images table {images_path})")
            texts = describer.describe(chunk_paths)
        if len(texts) != len(chunk):
            raise DescribeError(f"describe backend '{backend}' returned {len(texts)} results for {len(chunk)} images")
        rows: dict[str, list] = {name: [] for name in CAPTIONS_SCHEMA.names}
        for i, descs in zip(chunk, texts, strict=True):
            if len(descs) != views or any(not isinstance(d, str) or not d.strip() for d in descs):
                raise DescribeError(f"describe backend '{backend}' must return {views} non-empty descriptions per "
                                    f"image; got {descs!r} for image file {paths[i]}")
            for k, text in enumerate(descs):
                cid = f"{image_ids[i]}#desc{k}"
                if cid in done:  # only possible when a previous run wrote some views of this image
                    continue
                for name, value in (("caption_id", cid), ("image_id", image_ids[i]), ("lang", "en"),
                                    ("text", " ".join(text.split())), ("origin", "description"),
                                    ("split", splits[i]), ("source_id", None)):
                    rows[name].append(value)
        writer.write(validate_captions(pa.table(rows, schema=CAPTIONS_SCHEMA), where=f"{out_path} (new shard)"))
        progress.update(len(chunk))
    writer.finish(order=[c for iid in mine for c in view_ids[iid]], part=part, positions=position if part else None)
