"""A generic manifest: one row per caption, in CSV, JSONL or Parquet.

Columns: ``image_path`` (or ``path``), ``caption``, ``lang``, ``split``; optional ``image_id``
(default: the file stem), ``origin`` (default ``human``), ``caption_id`` (default
``f"{image_id}#{lang}{k}"``, k counting per image and language in file order) and ``source_id``.
Relative image paths are resolved against ``image_root`` (default: the manifest's folder).
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from pathlib import Path, PurePath

import pyarrow as pa
import pyarrow.parquet as pq

from ccr.data.importers._common import (
    REQUIRE_IMAGES,
    ImporterError,
    ImportReport,
    assemble,
    check_choice,
    filter_available,
    need_file,
    read_text,
)
from ccr.data.tables import ORIGINS, SPLITS

REQUIRED = ("caption", "lang", "split")
OPTIONAL = ("image_id", "origin", "caption_id", "source_id")


def read_manifest(path: Path) -> tuple[list[str], list[dict]]:
    """(column names, rows as dicts) of a manifest; format from the suffix (.csv/.tsv, .jsonl, .parquet).

    CSV cells stay strings (no type guessing: an image_id "000123" keeps its zeros).
    """
    need_file(path, "manifest")
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        reader = csv.DictReader(io.StringIO(read_text(path, "manifest"), newline=""),
                                delimiter="\t" if suffix == ".tsv" else ",")
        rows = list(reader)
        columns = list(reader.fieldnames or [])
        for n, row in enumerate(rows, start=2):
            if None in row or any(v is None for v in row.values()):
                raise ImporterError(f"manifest {path} line {n}: wrong number of fields")
        return columns, rows
    if suffix in (".jsonl", ".ndjson"):
        rows = []
        for n, line in enumerate(read_text(path, "manifest").splitlines(), start=1):
            if line.strip():
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ImporterError(f"manifest {path}:{n}: invalid JSON: {err}") from err
                if not isinstance(obj, dict):
                    raise ImporterError(f"manifest {path}:{n}: not a JSON object")
                rows.append(obj)
        columns = sorted({k for row in rows for k in row})
        return columns, rows
    if suffix == ".parquet":
        try:
            table = pq.read_table(path)
        except (pa.ArrowInvalid, OSError) as err:
            raise ImporterError(f"manifest {path}: cannot be read as Parquet: {err}") from err
        return table.column_names, table.to_pylist()
    raise ImporterError(f"manifest {path}: unknown format '{suffix}'; use .csv, .tsv, .jsonl or .parquet")


def _text(value: object) -> str | None:
    return None if value is None else str(value).strip()


def build(
    out_dir: Path,
    seed: int,
    path: str | Path,
    image_root: str | Path | None = None,
    require_images: str = "available",
) -> tuple[pa.Table, pa.Table]:
    """Images + captions of a manifest. ``seed`` is unused (no sampling)."""
    del out_dir, seed
    check_choice(require_images, REQUIRE_IMAGES, "require_images")
    path = Path(path)
    columns, table = read_manifest(path)
    path_col = "image_path" if "image_path" in columns else "path"
    missing = [c for c in (path_col, *REQUIRED) if c not in columns]
    if missing:
        raise ImporterError(f"manifest {path}: missing column(s) {missing} (image_path or path, caption, lang, split); "
                            f"it has {columns}")
    root = Path(image_root).resolve() if image_root is not None else path.resolve().parent
    report = ImportReport(f"manifest {path.name}")
    report.add_found("manifest rows", len(table))

    image_path: dict[str, str] = {}
    image_split: dict[str, str] = {}
    rows: list[dict] = []
    counter: Counter[tuple[str, str]] = Counter()
    for r, raw in enumerate(table):
        where = f"manifest {path} row {r + 1}"
        val = {c: _text(raw.get(c)) for c in (path_col, *REQUIRED, *OPTIONAL)}
        for c in (path_col, *REQUIRED):
            if not val[c]:
                raise ImporterError(f"{where}: field '{c}' is empty")
        file = Path(val[path_col])
        file = file if file.is_absolute() else root / file
        image_id = val["image_id"] or PurePath(file).stem
        split, lang, origin = val["split"], val["lang"], val["origin"] or "human"
        if split not in SPLITS:
            raise ImporterError(f"{where}: field 'split' is {split!r}; allowed {SPLITS}")
        if origin not in ORIGINS:
            raise ImporterError(f"{where}: field 'origin' is {origin!r}; allowed {ORIGINS}")
        if image_path.setdefault(image_id, str(file)) != str(file):
            raise ImporterError(f"{where}: image_id {image_id!r} has two paths: {image_path[image_id]} and {file}")
        if image_split.setdefault(image_id, split) != split:
            raise ImporterError(f"{where}: image {image_id!r} is in split '{image_split[image_id]}' and '{split}'")
        k = counter[image_id, lang]
        counter[image_id, lang] += 1
        rows.append({"caption_id": val["caption_id"] or f"{image_id}#{lang}{k}", "image_id": image_id,
                     "lang": lang, "text": val["caption"], "origin": origin, "split": split,
                     "source_id": val["source_id"] or None})

    available = filter_available(image_path, require_images, report)
    captions = []
    for row in rows:
        if row["image_id"] in available:
            captions.append(row)
        else:
            report.skip("caption of a missing image")
    images = [(i, image_path[i], image_split[i])
              for i in sorted(available, key=lambda i: (SPLITS.index(image_split[i]), i))]
    return assemble(images, captions, report, where=f"manifest {path}")
