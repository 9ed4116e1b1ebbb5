"""The two tables every stage speaks: ``images`` and ``captions`` (explicit pyarrow schemas).

See ``docs/data-model.md``.  Feature tables live in :mod:`ccr.features.store`.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

SPLITS = ("train", "val", "test")
ORIGINS = ("human", "mt", "description")

IMAGES_SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        # Absolute path, or relative to the directory holding images.parquet.
        pa.field("path", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
    ]
)

CAPTIONS_SCHEMA = pa.schema(
    [
        pa.field("caption_id", pa.string(), nullable=False),
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("lang", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        # human: written by a person (or our reference grammar); mt: machine translation;
        # description: written by a describer (MLLM, or the offline tagger) for the image.
        pa.field("origin", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        # For mt rows: the caption_id of the English caption that was translated. Else null.
        pa.field("source_id", pa.string(), nullable=True),
    ]
)


class TableError(ValueError):
    """A table that breaks the data model; the message names the file and the field."""


def _check(table: pa.Table, schema: pa.Schema, where: str) -> pa.Table:
    missing = [f.name for f in schema if f.name not in table.column_names]
    if missing:
        raise TableError(f"{where}: missing column(s) {missing}; expected {schema.names}")
    table = table.select(schema.names)
    try:
        table = table.cast(schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
        raise TableError(f"{where}: columns do not match the schema: {err}") from err
    for field in schema:
        if not field.nullable and table.column(field.name).null_count:
            raise TableError(f"{where}: column '{field.name}' has null values")
    return table


def validate_images(table: pa.Table, where: str = "images") -> pa.Table:
    """Return ``table`` cast to :data:`IMAGES_SCHEMA`, or raise :class:`TableError`."""
    table = _check(table, IMAGES_SCHEMA, where)
    bad = set(table.column("split").to_pylist()) - set(SPLITS)
    if bad:
        raise TableError(f"{where}: field 'split' has unknown values {sorted(bad)}; allowed {SPLITS}")
    ids = table.column("image_id").to_pylist()
    if len(set(ids)) != len(ids):
        raise TableError(f"{where}: field 'image_id' has duplicate values")
    return table


def validate_captions(table: pa.Table, where: str = "captions") -> pa.Table:
    """Return ``table`` cast to :data:`CAPTIONS_SCHEMA`, or raise :class:`TableError`."""
    if "source_id" not in table.column_names:
        table = table.append_column("source_id", pa.nulls(len(table), pa.string()))
    table = _check(table, CAPTIONS_SCHEMA, where)
    bad = set(table.column("origin").to_pylist()) - set(ORIGINS)
    if bad:
        raise TableError(f"{where}: field 'origin' has unknown values {sorted(bad)}; allowed {ORIGINS}")
    bad = set(table.column("split").to_pylist()) - set(SPLITS)
    if bad:
        raise TableError(f"{where}: field 'split' has unknown values {sorted(bad)}; allowed {SPLITS}")
    ids = table.column("caption_id").to_pylist()
    if len(set(ids)) != len(ids):
        raise TableError(f"{where}: field 'caption_id' has duplicate values")
    for i, text in enumerate(table.column("text").to_pylist()):
        if not text or not text.strip():
            raise TableError(f"{where}: field 'text' is empty for caption_id '{ids[i]}'")
    return table


def description_rows(image_ids: list[str], splits: list[str], texts: list[list[str]], where: str) -> pa.Table:
    """Description rows (captions schema) of images and their views, image order then view order:
    ``caption_id = f"{image_id}#desc{v}"``, lang "en", origin "description", whitespace collapsed."""
    ids = [(iid, split, v) for iid, split, views in zip(image_ids, splits, texts, strict=True) for v in range(len(views))]
    n = len(ids)
    return validate_captions(pa.table({
        "caption_id": [f"{iid}#desc{v}" for iid, _, v in ids],
        "image_id": [iid for iid, _, _ in ids],
        "lang": ["en"] * n,
        "text": [" ".join(t.split()) for views in texts for t in views],
        "origin": ["description"] * n,
        "split": [split for _, split, _ in ids],
        "source_id": pa.nulls(n, pa.string()),
    }, schema=CAPTIONS_SCHEMA), where=where)


def empty_captions() -> pa.Table:
    return CAPTIONS_SCHEMA.empty_table()


def read_images(path: str | Path) -> pa.Table:
    """Read and validate an images table; relative ``path`` values are resolved against its folder."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"images table not found: {path}")
    table = validate_images(pq.read_table(path), where=str(path))
    root = path.parent
    resolved = [p if Path(p).is_absolute() else str(root / p) for p in table.column("path").to_pylist()]
    return table.set_column(table.schema.get_field_index("path"), "path", pa.array(resolved, pa.string()))


def read_captions(path: str | Path) -> pa.Table:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"captions table not found: {path}")
    return validate_captions(pq.read_table(path), where=str(path))


def concat_captions(tables: list[pa.Table]) -> pa.Table:
    return validate_captions(pa.concat_tables([validate_captions(t) for t in tables]) if tables else empty_captions())
