"""The ``prepare_dataset`` stage: build or import a dataset into the two standard tables.

A dataset source is a builder ``build(out_dir: Path, seed: int, **params) -> (images, captions)``
registered in :data:`DATASETS` under the name ``config.yaml`` uses.  The builder may write files
(e.g. rendered images) under ``out_dir``; this stage checks what it returns and writes
``out_dir/images.parquet`` and ``out_dir/captions.parquet``.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa

from ccr.data.tables import TableError, validate_captions, validate_images
from ccr.io import Progress, file_digest, fingerprint, stamp, table_digest, write_table_atomic
from ccr.keys import stable_hash
from ccr.registry import Registry

log = logging.getLogger(__name__)

DATASETS: Registry[tuple[pa.Table, pa.Table]] = Registry("dataset")
DATASETS.register("synthetic", "ccr.data.synthetic:build")
DATASETS.register("multi30k", "ccr.data.importers.multi30k:build")
DATASETS.register("nrccr", "ccr.data.importers.nrccr:build")
DATASETS.register("coco", "ccr.data.importers.coco:build")
DATASETS.register("manifest", "ccr.data.importers.manifest:build")

IMAGES_FILE = "images.parquet"
CAPTIONS_FILE = "captions.parquet"


def check_dataset(images: pa.Table, captions: pa.Table, root: Path, where: str) -> tuple[pa.Table, pa.Table]:
    """Validate both tables against each other and the files on disk; return them cast to the schemas.

    Relative image paths are resolved against ``root`` (the folder that will hold images.parquet).
    """
    images = validate_images(images, where=f"{where} images")
    captions = validate_captions(captions, where=f"{where} captions")

    split_of = dict(zip(images.column("image_id").to_pylist(), images.column("split").to_pylist(), strict=True))
    cap_ids = captions.column("caption_id").to_pylist()
    for cid, iid, split in zip(cap_ids, captions.column("image_id").to_pylist(),
                               captions.column("split").to_pylist(), strict=True):
        if iid not in split_of:
            raise TableError(f"{where} captions: field 'image_id' of caption '{cid}' is '{iid}', "
                             f"which is not in the images table")
        if split != split_of[iid]:
            raise TableError(f"{where} captions: field 'split' of caption '{cid}' is '{split}' but its image "
                             f"'{iid}' is in split '{split_of[iid]}'")

    missing = []
    for iid, p in zip(images.column("image_id").to_pylist(), images.column("path").to_pylist(), strict=True):
        path = Path(p) if Path(p).is_absolute() else root / p
        if not path.is_file():
            missing.append(f"{path} (image_id '{iid}')")
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise FileNotFoundError(f"{where} images: field 'path' names {len(missing)} missing image file(s): "
                                f"{'; '.join(missing[:3])}{more}")
    return images, captions


def _log_counts(images: pa.Table, captions: pa.Table, source: str) -> None:
    img_counts = Counter(images.column("split").to_pylist())
    log.info("dataset '%s': %d images (%s)", source, images.num_rows,
             ", ".join(f"{s}={n}" for s, n in sorted(img_counts.items())))
    keys = zip(captions.column("split").to_pylist(), captions.column("lang").to_pylist(),
               captions.column("origin").to_pylist(), strict=True)
    for (split, lang, origin), n in sorted(Counter(keys).items()):
        log.info("dataset '%s': captions split=%s lang=%s origin=%s: %d", source, split, lang, origin, n)


def prepare_dataset(source: str, params: dict[str, Any] | None, seed: int, out_dir: Path) -> None:
    """Build dataset ``source`` with ``params`` and write ``out_dir/{images,captions}.parquet``."""
    out_dir = Path(out_dir)
    params = dict(params or {})
    clash = sorted({"out_dir", "seed"} & set(params))
    if clash:
        raise ValueError(f"dataset '{source}': params may not set {clash}; they come from the workflow")
    out_dir.mkdir(parents=True, exist_ok=True)
    # Drop a previous run's tables first: a failed rebuild must never leave a stale pair that looks complete.
    for name in (IMAGES_FILE, CAPTIONS_FILE):
        (out_dir / name).unlink(missing_ok=True)

    log.info("dataset '%s': building with seed=%d params=%s into %s", source, seed, params, out_dir)
    result = DATASETS.create(source, out_dir=out_dir, seed=seed, **params)
    if not (isinstance(result, tuple) and len(result) == 2):
        raise TypeError(f"dataset '{source}': builder must return (images, captions) tables, got {type(result)}")
    images, captions = check_dataset(result[0], result[1], out_dir, where=f"dataset '{source}'")

    # Fingerprints of the content (not of the settings): every downstream output chains from them,
    # so an edited caption or a replaced image file reaches every stage that read it.
    images_fp = fingerprint("dataset.images", {}, {"table": table_digest(images),
                                                  "files": image_files_digest(images, out_dir)})
    captions_fp = fingerprint("dataset.captions", {}, {"table": table_digest(captions)})
    # Captions first, images last: images.parquet appearing means both are complete.
    write_table_atomic(stamp(captions, captions_fp), out_dir / CAPTIONS_FILE)
    write_table_atomic(stamp(images, images_fp), out_dir / IMAGES_FILE)
    _log_counts(images, captions, source)
    log.info("dataset '%s': fingerprints images %s, captions %s", source, images_fp, captions_fp)


def image_files_digest(images: pa.Table, root: Path) -> str:
    """One digest of the bytes of every image file (relative paths resolved against ``root``)."""
    paths = images.column("path").to_pylist()
    progress = Progress(len(paths), "fingerprint image files")
    digests = []
    for p in paths:
        path = Path(p) if Path(p).is_absolute() else root / p
        digests.append(file_digest(path))
        progress.update(1)
    return stable_hash(digests, length=16)
