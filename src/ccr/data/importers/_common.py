"""Shared helpers for the dataset importers: import reports, image checks, table assembly."""

from __future__ import annotations

import gzip
import logging
import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path

import pyarrow as pa

from ccr.data.tables import IMAGES_SCHEMA, SPLITS, validate_captions, validate_images
from ccr.io import Progress

log = logging.getLogger("ccr.data.importers")

REQUIRE_IMAGES = ("all", "available")
N_EXAMPLES = 5  # how many example ids a report lists per skip reason


class ImporterError(ValueError):
    """Bad importer input; the message names the file (and line/field) at fault."""


class ImportReport:
    """Counts of what an importer found, kept and skipped (with reasons and a few examples)."""

    def __init__(self, name: str):
        self.name = name
        self.found: Counter[str] = Counter()
        self.skipped: Counter[str] = Counter()
        self.examples: dict[str, list[str]] = defaultdict(list)

    def add_found(self, what: str, n: int = 1) -> None:
        self.found[what] += n

    def skip(self, reason: str, example: str | None = None, n: int = 1) -> None:
        self.skipped[reason] += n
        if example is not None and len(self.examples[reason]) < N_EXAMPLES:
            self.examples[reason].append(example)

    def log(self, images: pa.Table, captions: pa.Table, logger: logging.Logger = log) -> None:
        logger.info("%s import report:", self.name)
        for what, n in sorted(self.found.items()):
            logger.info("  found %-40s %d", what, n)
        for reason, n in sorted(self.skipped.items()):
            examples = ", ".join(self.examples.get(reason, []))
            more = f" (e.g. {examples}{', ...' if n > len(self.examples.get(reason, [])) else ''})" if examples else ""
            logger.warning("  skipped %d: %s%s", n, reason, more)
        split_counts = Counter(images.column("split").to_pylist())
        logger.info("  kept %d images: %s", images.num_rows, dict(sorted(split_counts.items())))
        groups = Counter(zip(captions.column("split").to_pylist(), captions.column("lang").to_pylist(),
                             captions.column("origin").to_pylist(), strict=True))
        logger.info("  kept %d captions:", captions.num_rows)
        for (split, lang, origin), n in sorted(groups.items()):
            logger.info("    %-5s %-3s %-11s %d", split, lang, origin, n)


def check_choice(value: str, allowed: Iterable[str], param: str) -> str:
    allowed = tuple(allowed)
    if value not in allowed:
        raise ImporterError(f"parameter '{param}' is {value!r}; allowed: {', '.join(allowed)}")
    return value


def check_split_map(splits: Mapping[str, str], param: str = "splits") -> dict[str, str]:
    """``splits`` maps source split names to ours; every target must be one of train/val/test."""
    bad = {k: v for k, v in splits.items() if v not in SPLITS}
    if bad:
        raise ImporterError(f"parameter '{param}' maps to unknown split(s) {bad}; allowed targets: {SPLITS}")
    return dict(splits)


def need_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


def read_text(path: Path, what: str = "file") -> str:
    """A UTF-8 text file (``.gz`` transparently, a leading BOM dropped).

    A wrong encoding is an :class:`ImporterError` naming the file, the line and the bad bytes, so a
    Latin-1 or UTF-16 manifest is found at once.
    """
    need_file(path, what)
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as err:
        raise ImporterError(f"{what} {path}: cannot be read: {err}") from err
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        bad = data[err.start: err.end + 3]
        raise ImporterError(f"{what} {path} line {line}, column {column}: not UTF-8 (bytes {bad!r}); "
                            "save the file as UTF-8") from err


def read_lines(path: Path, what: str = "file") -> list[str]:
    """Lines of a text file (``.gz`` transparently), newline stripped; clear error on bad encoding."""
    return read_text(path, what).splitlines()


def filter_available(paths: Mapping[str, str], require_images: str, report: ImportReport,
                     what: str = "images") -> set[str]:
    """Ids whose file exists. ``require_images='all'``: any missing file is an error naming it."""
    check_choice(require_images, REQUIRE_IMAGES, "require_images")
    progress = Progress(len(paths), f"checking {what} exist", every_s=10.0, logger=log)
    available: set[str] = set()
    missing: list[str] = []
    for image_id, path in paths.items():
        if os.path.isfile(path):
            available.add(image_id)
        else:
            missing.append(path)
        progress.update(1)
    if missing:
        if require_images == "all":
            raise FileNotFoundError(
                f"{len(missing)} image file(s) missing (require_images=all), e.g. {missing[0]}"
                + (f" and {missing[1:N_EXAMPLES]}" if len(missing) > 1 else ""))
        for path in missing:
            report.skip("image file missing (require_images=available); its captions skipped", path)
    report.add_found(f"{what} with an existing file", len(available))
    return available


def assemble(images: list[tuple[str, str, str]], captions: list[dict], report: ImportReport,
             where: str) -> tuple[pa.Table, pa.Table]:
    """Validated (images, captions) tables; logs the report. ``images``: (image_id, path, split)."""
    if not images:
        raise ImporterError(f"{where}: no images left to import (see the skip counts above)")
    img = pa.table({"image_id": [r[0] for r in images], "path": [r[1] for r in images],
                    "split": [r[2] for r in images]}, schema=IMAGES_SCHEMA)
    cols = ("caption_id", "image_id", "lang", "text", "origin", "split", "source_id")
    cap = pa.table({c: pa.array([r.get(c) for r in captions], pa.string()) for c in cols})
    images_t = validate_images(img, where=f"{where} images")
    captions_t = validate_captions(cap, where=f"{where} captions")
    known = set(images_t.column("image_id").to_pylist())
    orphans = [i for i in captions_t.column("image_id").to_pylist() if i not in known]
    if orphans:  # a bug in an importer, never expected from data
        raise ImporterError(f"{where}: {len(orphans)} caption(s) refer to unknown images, e.g. {orphans[:3]}")
    report.log(images_t, captions_t)
    return images_t, captions_t
