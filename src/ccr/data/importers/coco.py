"""COCO / Flickr in the Karpathy split format (``dataset_coco.json``) plus extra-language captions.

``karpathy_json``: ``{"images": [{"filepath", "filename", "split", "sentences": [{"raw"}], "cocoid"?}]}``
(``filepath`` is absent in ``dataset_flickr30k.json``).  ``restval`` maps to train by default.

``extra_captions``: ``[{path, lang, origin="human"}]`` files of captions in other languages, e.g.
STAIR Captions (ja) or COCO-CN (zh).  Accepted forms (chosen by content, never evaluated):

* COCO annotation JSON: ``{"images": [{"id", "file_name"}], "annotations": [{"image_id", "caption"}]}``
  (STAIR); ``image_id`` is the COCO id, matched to the Karpathy ``cocoid``;
* JSON ``{key: caption | [captions]}``, a JSON list or JSONL of ``{image_id|file_name|image|filename: key,
  caption: text}`` objects;
* text lines ``<key>\\t<caption>`` (or ``<key> <caption>``), with ``key`` optionally ``<key>#<k>`` (COCO-CN).

A key is an image file name, its stem, or a COCO id.  Captions of images outside the Karpathy
file are counted and skipped.  Caption ids: ``f"{image_id}#{lang}{k}"`` (k counts per image and language).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path, PurePosixPath

import pyarrow as pa

from ccr.data.importers._common import (
    REQUIRE_IMAGES,
    ImporterError,
    ImportReport,
    assemble,
    check_choice,
    check_split_map,
    filter_available,
    need_file,
    read_lines,
)
from ccr.data.tables import ORIGINS, SPLITS

DEFAULT_SPLITS = {"train": "train", "restval": "train", "val": "val", "test": "test"}
_KEY_FIELDS = ("image_id", "file_name", "filename", "image")


def _load_json(path: Path, what: str):
    try:
        return json.loads("\n".join(read_lines(path, what)))
    except json.JSONDecodeError as err:
        raise ImporterError(f"{what} {path}: invalid JSON: {err}") from err


def _object_pairs(objs, path: Path) -> Iterator[tuple[str, object]]:
    for n, obj in enumerate(objs):
        if not isinstance(obj, dict):
            raise ImporterError(f"{path}: entry {n} is not an object")
        key = next((obj[f] for f in _KEY_FIELDS if f in obj), None)
        if key is None or "caption" not in obj:
            raise ImporterError(f"{path}: entry {n} lacks field 'caption' or an image key ({'/'.join(_KEY_FIELDS)})")
        yield str(key), obj["caption"]


def read_extra_captions(path: Path) -> Iterator[tuple[str, object]]:
    """(image key, caption) pairs of one extra-caption file, in file order."""
    need_file(path, "extra caption file")
    if path.suffix == ".jsonl":
        objs = []
        for lineno, line in enumerate(read_lines(path, "extra caption file"), start=1):
            if line.strip():
                try:
                    objs.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ImporterError(f"{path}:{lineno}: invalid JSON: {err}") from err
        yield from _object_pairs(objs, path)
    elif path.suffix == ".json":
        data = _load_json(path, "extra caption file")
        if isinstance(data, dict) and "annotations" in data:  # COCO annotation format (STAIR Captions)
            names = {str(im["id"]): im.get("file_name", str(im["id"])) for im in data.get("images", [])}
            for ann in data["annotations"]:
                key = str(ann.get("image_id"))
                yield names.get(key, key), ann.get("caption")
        elif isinstance(data, dict):
            for key, caps in data.items():
                for cap in caps if isinstance(caps, list) else [caps]:
                    yield str(key), cap
        elif isinstance(data, list):
            yield from _object_pairs(data, path)
        else:
            raise ImporterError(f"{path}: expected a JSON object or list of captions")
    else:
        for lineno, line in enumerate(read_lines(path, "extra caption file"), start=1):
            if not line.strip():
                continue
            fields = line.strip().split("\t", 1) if "\t" in line else line.strip().split(maxsplit=1)
            if len(fields) != 2:
                raise ImporterError(f"{path}:{lineno}: field 'text' is empty (key {fields[0]!r})")
            yield fields[0].strip().split("#", 1)[0], fields[1]


def build(
    out_dir: Path,
    seed: int,
    karpathy_json: str | Path,
    image_root: str | Path,
    lang: str = "en",
    extra_captions: Sequence[Mapping[str, str]] = (),
    splits: Mapping[str, str] | None = None,
    require_images: str = "available",
) -> tuple[pa.Table, pa.Table]:
    """Images + captions from a Karpathy-style JSON (and extra caption files). ``seed`` is unused."""
    del out_dir, seed
    check_choice(require_images, REQUIRE_IMAGES, "require_images")
    split_map = check_split_map(DEFAULT_SPLITS if splits is None else splits)
    karpathy_json, image_root = Path(karpathy_json), Path(image_root).resolve()
    data = _load_json(need_file(karpathy_json, "Karpathy JSON"), "Karpathy JSON")
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ImporterError(f"{karpathy_json}: missing field 'images' (a list)")
    report = ImportReport("coco")

    # 1. Images of the Karpathy file and their splits.
    entries: dict[str, dict] = {}
    split_of: dict[str, str] = {}
    paths: dict[str, str] = {}
    by_key: dict[str, str] = {}
    for n, im in enumerate(data["images"]):
        for field in ("filename", "split", "sentences"):
            if field not in im:
                raise ImporterError(f"{karpathy_json}: images[{n}] lacks field '{field}'")
        image_id = PurePosixPath(im["filename"]).stem
        report.add_found(f"Karpathy images in split '{im['split']}'")
        if im["split"] not in split_map:
            report.skip("Karpathy split not in parameter 'splits'", f"{image_id} ({im['split']})")
            continue
        if image_id in entries:
            raise ImporterError(f"{karpathy_json}: images[{n}]: duplicate file name {im['filename']!r}")
        entries[image_id], split_of[image_id] = im, split_map[im["split"]]
        paths[image_id] = str(image_root / im.get("filepath", "") / im["filename"])
        for key in (image_id, im["filename"], str(im.get("cocoid", "")), str(im.get("imgid", ""))):
            if key:
                by_key.setdefault(key, image_id)
    available = filter_available(paths, require_images, report)

    # 2. Captions: the Karpathy sentences (lang), then every extra file.
    counter: Counter[tuple[str, str]] = Counter()
    captions: list[dict] = []

    def add(image_id: str, text: object, cap_lang: str, origin: str, where: str) -> None:
        if not isinstance(text, str) or not text.strip():
            raise ImporterError(f"{where}: field 'text' is empty or not a string for image {image_id!r}")
        k = counter[image_id, cap_lang]
        counter[image_id, cap_lang] += 1
        captions.append({"caption_id": f"{image_id}#{cap_lang}{k}", "image_id": image_id, "lang": cap_lang,
                         "text": text.strip(), "origin": origin, "split": split_of[image_id], "source_id": None})

    for image_id, im in entries.items():
        report.add_found(f"Karpathy captions ({lang})", len(im["sentences"]))
        if image_id not in available:
            report.skip("caption of a missing image", n=len(im["sentences"]))
            continue
        for s, sent in enumerate(im["sentences"]):
            if "raw" not in sent:
                raise ImporterError(f"{karpathy_json}: image {im['filename']!r} sentence {s} lacks field 'raw'")
            add(image_id, sent["raw"], lang, "human", f"{karpathy_json} ({im['filename']})")

    for n, spec in enumerate(extra_captions):
        unknown = sorted(set(spec) - {"path", "lang", "origin"})
        if unknown or "path" not in spec or "lang" not in spec:
            raise ImporterError(f"extra_captions[{n}]: needs fields path, lang (origin optional); unknown {unknown}")
        origin = check_choice(spec.get("origin", "human"), ORIGINS, f"extra_captions[{n}].origin")
        path = Path(spec["path"])
        for key, text in read_extra_captions(path):
            report.add_found(f"extra captions in {path.name} ({spec['lang']})")
            image_id = by_key.get(key) or by_key.get(PurePosixPath(key).stem) or by_key.get(key.lstrip("0"))
            if image_id is None:
                report.skip(f"extra caption of an image not in the Karpathy file/splits ({path.name})", key)
            elif image_id not in available:
                report.skip("caption of a missing image")
            else:
                add(image_id, text, spec["lang"], origin, str(path))

    images = [(i, paths[i], split_of[i]) for i in sorted(available, key=lambda i: (SPLITS.index(split_of[i]), i))]
    return assemble(images, captions, report, where=f"coco {karpathy_json}")
