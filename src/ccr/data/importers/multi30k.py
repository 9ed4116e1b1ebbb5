"""Multi30K as published (task1 + task2), optionally re-split by image lists (the M30K-F8K protocol).

Layout under ``root`` (https://github.com/multi30k/dataset, ``data/``)::

    task1/raw/{split}.{lang}.gz            line i describes image i of task1/image_splits/{split}.txt
    task1/image_splits/{split}.txt
    task2/raw/{split}.{1..5}.{en,de}.gz    five independent captions per image
    task2/image_splits/{split}.txt | {split}_images.txt

task2 names its splits ``train``, ``val``, ``test_2016``; a task1 name such as ``test_2016_flickr``
is looked up in task2 without its ``_flickr``/``_mscoco`` suffix.  Every caption keeps its
language and ``origin='human'``: the training loaders, not this importer, keep the human
de/fr/cs captions out of training (they select ``lang == 'en' and origin == 'human'``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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
from ccr.data.tables import SPLITS

DEFAULT_SPLITS = {"train": "train", "val": "val", "test_2016_flickr": "test"}
TASKS = ("task1", "task2")
TASK2_LANGS = ("en", "de")
TASK2_CAPTIONS_PER_IMAGE = 5


def _file_name(entry: str, image_ext: str) -> str:
    """A split-file entry -> image file name (``test_2017_mscoco`` entries carry ``#<annotation id>``)."""
    name = entry.strip().split("#", 1)[0]
    return name if PurePosixPath(name).suffix else name + image_ext


def _image_id(file_name: str) -> str:
    return PurePosixPath(file_name).stem


def _read_image_list(path: Path, image_ext: str, what: str) -> list[str]:
    names = [_file_name(line, image_ext) for line in read_lines(path, what) if line.strip()]
    if not names:
        raise ImporterError(f"{what} {path} is empty")
    return names


def _task2_split_files(root: Path, split: str) -> tuple[str, Path]:
    """(task2 split name, its image list) for a Multi30K split name; error names every path tried."""
    candidates = [split]
    for suffix in ("_flickr", "_mscoco"):
        if split.endswith(suffix):
            candidates.append(split[: -len(suffix)])
    tried = []
    for name in candidates:
        for list_name in (f"{name}.txt", f"{name}_images.txt"):
            path = root / "task2" / "image_splits" / list_name
            tried.append(str(path))
            if path.is_file():
                return name, path
    raise FileNotFoundError(f"task2 image list for split '{split}' not found; tried {tried}")


def build(
    out_dir: Path,
    seed: int,
    root: str | Path,
    image_dir: str | Path,
    tasks: Sequence[str] = ("task1",),
    langs: Sequence[str] = ("en", "de", "fr", "cs"),
    splits: Mapping[str, str] | None = None,
    require_images: str = "available",
    split_files: Mapping[str, str | Path] | None = None,
    image_ext: str = ".jpg",
    task2_langs: Sequence[str] | None = None,
) -> tuple[pa.Table, pa.Table]:
    """Images + captions of Multi30K. Deterministic; ``seed`` is unused (no sampling).

    ``task2_langs`` narrows the task2 languages (default: those of ``langs`` that task2 has), e.g.
    ``[de]`` to take task2's German queries without its 31k extra English captions.
    """
    del out_dir, seed  # nothing generated, nothing random
    root, image_dir = Path(root), Path(image_dir).resolve()
    tasks, langs = tuple(tasks), tuple(langs)
    for task in tasks:
        check_choice(task, TASKS, "tasks")
    if not tasks or not langs:
        raise ImporterError("parameters 'tasks' and 'langs' must not be empty")
    check_choice(require_images, REQUIRE_IMAGES, "require_images")
    split_map = check_split_map(DEFAULT_SPLITS if splits is None else splits)
    if not root.is_dir():
        raise FileNotFoundError(f"Multi30K root not found: {root}")
    if not image_dir.is_dir():
        raise FileNotFoundError(f"image_dir not found: {image_dir}")
    report = ImportReport("multi30k")

    # 1. Caption sources: (caption file, image list, id suffix builder, lang, m30k split).
    sources: list[tuple[Path, list[str], str, str, str]] = []
    for m30k_split in split_map:
        if "task1" in tasks:
            list_path = need_file(root / "task1" / "image_splits" / f"{m30k_split}.txt", "task1 image list")
            names = _read_image_list(list_path, image_ext, "task1 image list")
            report.add_found(f"task1 {m30k_split} images listed", len(names))
            for lang in langs:
                cap = need_file(root / "task1" / "raw" / f"{m30k_split}.{lang}.gz", "task1 caption file")
                sources.append((cap, names, f"t1-{lang}", lang, m30k_split))
        t2_langs = [lang for lang in (langs if task2_langs is None else task2_langs) if lang in TASK2_LANGS]
        if "task2" in tasks and t2_langs:
            t2_name, list_path = _task2_split_files(root, m30k_split)
            names = _read_image_list(list_path, image_ext, "task2 image list")
            report.add_found(f"task2 {t2_name} images listed", len(names))
            for lang in t2_langs:
                for k in range(1, TASK2_CAPTIONS_PER_IMAGE + 1):
                    cap = need_file(root / "task2" / "raw" / f"{t2_name}.{k}.{lang}.gz", "task2 caption file")
                    sources.append((cap, names, f"t2-{lang}{k}", lang, m30k_split))

    # 2. Split of every image: the Multi30K split it is listed in, or the split_files list.
    file_names: dict[str, str] = {}
    for _, names, _, _, _ in sources:
        for name in names:
            file_names.setdefault(_image_id(name), name)
    image_split: dict[str, str] = {}
    if split_files is None:
        for _, names, _, _, m30k_split in sources:
            for name in names:
                image_id, target = _image_id(name), split_map[m30k_split]
                if image_split.setdefault(image_id, target) != target:
                    raise ImporterError(f"image {name} is listed in Multi30K splits mapped to both "
                                        f"'{image_split[image_id]}' and '{target}' (parameter 'splits')")
    else:
        bad = sorted(set(split_files) - set(SPLITS))
        if bad:
            raise ImporterError(f"parameter 'split_files' has unknown split(s) {bad}; allowed {SPLITS}")
        for split, list_file in split_files.items():
            path = need_file(Path(list_file), f"split_files[{split!r}] list")
            for name in _read_image_list(path, image_ext, f"split_files[{split!r}] list"):
                image_id = _image_id(name)
                if image_split.setdefault(image_id, split) != split:
                    raise ImporterError(f"{path}: image {name} is also in the '{image_split[image_id]}' list")
            report.add_found(f"split_files {split} images listed", sum(v == split for v in image_split.values()))
        for image_id in sorted(set(file_names) - set(image_split)):
            report.skip("image in no split_files list (dropped with its captions)", file_names[image_id])
        for image_id in sorted(set(image_split) - set(file_names)):
            report.skip("split_files image in none of the selected Multi30K splits", image_id)

    # 3. Which of those images exist on disk.
    candidates = {i: str(image_dir / file_names[i]) for i in sorted(image_split) if i in file_names}
    available = filter_available(candidates, require_images, report)

    # 4. Captions, aligned line by line with their image list.
    captions: list[dict] = []
    for cap_path, names, suffix, lang, _ in sources:
        lines = read_lines(cap_path, "caption file")
        while lines and not lines[-1].strip():  # a trailing blank line is not a caption
            lines.pop()
        if len(lines) != len(names):
            raise ImporterError(f"{cap_path} has {len(lines)} captions but its image list has {len(names)} "
                                "images; line i of the caption file must describe image i")
        report.add_found(f"captions in {cap_path.name}", len(lines))
        for lineno, (name, text) in enumerate(zip(names, lines, strict=True), start=1):
            image_id = _image_id(name)
            if image_id not in available:
                reason = "image missing" if image_id in image_split else "image not in any split"
                report.skip(f"caption of an excluded image ({reason})")
                continue
            text = text.strip()
            if not text:
                raise ImporterError(f"{cap_path}:{lineno}: field 'text' is empty (image {name})")
            captions.append({"caption_id": f"{image_id}#{suffix}", "image_id": image_id, "lang": lang,
                             "text": text, "origin": "human", "split": image_split[image_id], "source_id": None})

    images = [(i, candidates[i], image_split[i]) for i in sorted(available, key=lambda i: (SPLITS.index(image_split[i]), i))]
    return assemble(images, captions, report, where=f"multi30k {root}")
