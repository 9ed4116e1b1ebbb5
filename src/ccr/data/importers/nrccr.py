"""The NRCCR / LECCR data layout (``$HOME/VisualSearch/<collection>/...``, W2VV / dual-encoding style).

What this importer reads (layout taken from the public LiJiaBei-7/nrccr code, ``trainer_img.py``,
``trainer_vid.py`` and ``util/tag_data_provider*.py``; see ``docs/importers.md`` for assumptions)::

    <root>/<collection>/TextData/<name>.caption.txt      lines "<caption_id> <caption>"
    <root>/<collection>/FeatureData/<feature>/           BigFile: feature.bin, id.txt, shape.txt
    <root>/<collection>/ImageSets/<name>.txt | VideoSets/<name>.txt | FeatureData/<split>_id.txt  id lists

Caption ids are ``<image_id>#<tag>#<k>``:

* ``enc``                 English human caption (origin ``human``),
* ``enc2<lang>``          machine translation of ``<image_id>#enc#<k>`` (origin ``mt``, ``source_id`` set),
* ``<lang>``              human caption in ``<lang>`` (e.g. the Multi30K / MSR-VTT-CN test captions),
* ``...2enc`` tags        back-translations / translations into English: counted and skipped,
* ``<image_id>#<k>``      (no tag) is read as an English human caption.

Caption lines are split on the first whitespace; no file is ever evaluated as code.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import pyarrow as pa

from ccr.data.bigfile import bigfile_to_feature_table
from ccr.data.importers._common import (
    REQUIRE_IMAGES,
    ImporterError,
    ImportReport,
    assemble,
    check_choice,
    filter_available,
    need_file,
    read_lines,
)
from ccr.data.tables import SPLITS

_LANG = re.compile(r"^[a-z]{2,3}(?:[-_][A-Za-z]{2,4})?$")


def parse_caption_id(cap_id: str) -> tuple[str, str, str, str] | tuple[None, str, None, None]:
    """``(image_id, kind, lang, k)`` with kind human/mt; or ``(None, reason, None, None)`` to skip."""
    parts = cap_id.split("#")
    if len(parts) == 2 and parts[0] and parts[1]:
        return parts[0], "human", "en", parts[1]
    if len(parts) != 3 or not parts[0] or not parts[2]:
        return None, "caption id not '<image_id>#<tag>#<k>'", None, None
    image_id, tag, k = parts
    if tag == "enc":
        return image_id, "human", "en", k
    if "2enc" in tag:
        return None, f"translation into English ('#{tag}#', back-translation) not imported", None, None
    if tag.startswith("enc2") and _LANG.match(tag[4:]):
        return image_id, "mt", tag[4:], k
    if _LANG.match(tag):
        return image_id, "human", tag, k
    return None, f"unrecognised caption tag '#{tag}#'", None, None


def _split_from_name(name: str, collection: str) -> str | None:
    """``multi30ktrain_enc.caption.txt`` -> ``train`` (the collection prefix, then train/val/test)."""
    rest = name[len(collection):] if name.startswith(collection) else name
    rest = rest.lstrip("_-.")
    for split in SPLITS:
        if rest.startswith(split):
            return split
    return None


def _resolve(base: Path, name: str | Path) -> Path:
    path = Path(name)
    return path if path.is_absolute() else base / path


def build(
    out_dir: Path,
    seed: int,
    root: str | Path,
    collection: str,
    caption_files: Mapping[str, Sequence[str]] | Sequence[str] | None = None,
    id_lists: Mapping[str, str] | None = None,
    image_dir: str | Path | None = None,
    image_ext: str = ".jpg",
    features: str | None = None,
    frames_per_video: int | None = None,
    frame_id_sep: str = "_",
    langs: Sequence[str] | None = None,
    include_mt: bool = True,
    require_images: str = "available",
) -> tuple[pa.Table, pa.Table]:
    """Images + captions of an NRCCR collection (and, with ``features``, its BigFile as a feature table).

    ``caption_files``: {split: [files in TextData]} or a list of files (split then from ``id_lists``);
    default: every ``*.caption.txt`` whose name (after the collection name) starts with train/val/test.
    ``id_lists``: {split: id list file, relative to the collection folder}: an image's split is the
    list it is in (images in no list are dropped and counted).  ``seed`` is unused (no sampling).
    """
    del seed
    check_choice(require_images, REQUIRE_IMAGES, "require_images")
    coll_dir = Path(root) / collection
    text_dir = coll_dir / "TextData"
    if not text_dir.is_dir():
        raise FileNotFoundError(f"NRCCR TextData folder not found: {text_dir}")
    if image_dir is None and features is None:
        raise ImporterError("nrccr: give 'image_dir' (image files) and/or 'features' (a FeatureData BigFile)")
    report = ImportReport(f"nrccr {collection}")

    # 1. Which caption files, and the split each file implies (None: from id_lists).
    files: list[tuple[Path, str | None]] = []
    if caption_files is None:
        for path in sorted(text_dir.glob("*.caption.txt")):
            split = _split_from_name(path.name, collection)
            if split is None and id_lists is None:
                report.skip("caption file name gives no split (pass caption_files or id_lists)", path.name)
                continue
            files.append((path, split))
        if not files:
            raise FileNotFoundError(f"no usable *.caption.txt in {text_dir}")
    elif isinstance(caption_files, Mapping):
        bad = sorted(set(caption_files) - set(SPLITS))
        if bad:
            raise ImporterError(f"parameter 'caption_files' has unknown split(s) {bad}; allowed {SPLITS}")
        for split, names in caption_files.items():
            names = [names] if isinstance(names, str) else names
            files += [(need_file(_resolve(text_dir, n), "caption file"), split) for n in names]
    else:
        if id_lists is None:
            raise ImporterError("a plain list of 'caption_files' needs 'id_lists' to give each image its split")
        files = [(need_file(_resolve(text_dir, n), "caption file"), None) for n in caption_files]

    listed: dict[str, str] = {}
    if id_lists is not None:
        bad = sorted(set(id_lists) - set(SPLITS))
        if bad:
            raise ImporterError(f"parameter 'id_lists' has unknown split(s) {bad}; allowed {SPLITS}")
        for split, name in id_lists.items():
            path = need_file(_resolve(coll_dir, name), f"id list for {split}")
            for image_id in (w for line in read_lines(path, "id list") for w in line.split()):
                if listed.setdefault(image_id, split) != split:
                    raise ImporterError(f"{path}: id {image_id!r} is also in the '{listed[image_id]}' id list")
            report.add_found(f"ids in the {split} id list", sum(v == split for v in listed.values()))

    # 2. Parse every caption line (split on the first whitespace).
    parsed: dict[str, dict] = {}
    image_split: dict[str, str] = {}
    for path, file_split in files:
        n_file = 0
        for lineno, line in enumerate(read_lines(path, "caption file"), start=1):
            if not line.strip():
                continue
            fields = line.strip().split(maxsplit=1)
            if len(fields) != 2 or not fields[1].strip():
                raise ImporterError(f"{path}:{lineno}: field 'text' is empty (caption id {fields[0]!r})")
            cap_id, text = fields[0], fields[1].strip()
            n_file += 1
            image_id, kind, lang, k = parse_caption_id(cap_id)
            if image_id is None:
                report.skip(kind, cap_id)
                continue
            if langs is not None and lang not in langs:
                report.skip(f"language '{lang}' not in parameter 'langs'", cap_id)
                continue
            if kind == "mt" and not include_mt:
                report.skip("machine translation (include_mt=false)", cap_id)
                continue
            if id_lists is not None:
                split = listed.get(image_id)
                if split is None:
                    report.skip("caption of an image in no id list", cap_id)
                    continue
            else:
                split = file_split
                if image_split.setdefault(image_id, split) != split:
                    raise ImporterError(f"{path}:{lineno}: image {image_id!r} also has captions in a "
                                        f"'{image_split[image_id]}' file; pass id_lists to decide its split")
            image_split[image_id] = split
            source = f"{image_id}#enc#{k}"
            our_id = f"{source}#mt-{lang}" if kind == "mt" else cap_id
            if our_id in parsed:
                report.skip("duplicate caption id (kept the first)", f"{path.name}:{lineno}")
                continue
            parsed[our_id] = {"caption_id": our_id, "image_id": image_id, "lang": lang, "text": text,
                              "origin": kind, "split": split, "source_id": source if kind == "mt" else None}
        report.add_found(f"caption lines in {path.name}", n_file)

    # An MT caption needs its English source (source_id must point at a row of this table).
    for cap_id, row in list(parsed.items()):
        if row["origin"] == "mt" and row["source_id"] not in parsed:
            report.skip("MT caption whose English source '#enc#' caption is not imported", cap_id)
            del parsed[cap_id]

    # 3. Images (those with captions left): files on disk and/or rows of the BigFile.
    keep = {row["image_id"] for row in parsed.values()}
    paths: dict[str, str] = {}
    if features is not None:
        feat_dir = coll_dir / "FeatureData" / features
        feat_path = Path(out_dir) / "features" / f"{features}.parquet"
        table = bigfile_to_feature_table(feat_dir, feat_path, frames_per_video=frames_per_video,
                                         frame_id_sep=frame_id_sep, meta={"collection": collection})
        have = set(table.column("image_id").to_pylist())
        report.add_found(f"ids in BigFile {features}", len(have))
        missing = sorted(keep - have)
        if missing and require_images == "all":
            raise ImporterError(f"{feat_dir}: {len(missing)} captioned id(s) have no features, e.g. {missing[:3]}")
        for image_id in missing:
            report.skip(f"no features in BigFile {features}; its captions skipped", image_id)
        keep &= have
        paths = {i: f"{feat_path}#{i}" for i in keep}
    if image_dir is not None:
        image_dir = Path(image_dir).resolve()
        candidates = {i: str(image_dir / f"{i}{image_ext}") for i in sorted(keep)}
        keep = filter_available(candidates, require_images, report)
        paths = candidates

    captions = []
    for row in parsed.values():
        if row["image_id"] not in keep:
            report.skip("caption of an excluded image")
        else:
            captions.append(row)
    images = [(i, paths[i], image_split[i]) for i in sorted(keep, key=lambda i: (SPLITS.index(image_split[i]), i))]
    return assemble(images, captions, report, where=f"nrccr {coll_dir}")
