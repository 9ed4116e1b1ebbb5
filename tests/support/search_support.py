"""Helpers of the search tests: the bundle, images and French queries of a finished tiny run, the
retriever that evaluated it, a headless Chromium for the browser test."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pyarrow.parquet as pq


def only(paths: list[Path], what: str) -> Path:
    assert len(paths) == 1, f"expected one {what}, found {paths}"
    return paths[0]


def bundle_of(workdir: Path) -> Path:
    """The one model bundle a run of a one-trained-system config exported."""
    return only(sorted((workdir / "results" / "bundles").glob("*/*/bundle.pt")), "bundle")


def data_dir(workdir: Path) -> Path:
    return only(sorted((workdir / "results" / "data").glob("tiny-*")), "dataset folder")


def gallery_images(workdir: Path) -> list[tuple[str, str]]:
    """(image_id, absolute path) of the test split, in table order."""
    data = data_dir(workdir)
    rows = pq.read_table(data / "images.parquet").to_pylist()
    return [(r["image_id"], str(Path(r["path"]) if Path(r["path"]).is_absolute() else (data / r["path"]).resolve()))
            for r in rows if r["split"] == "test"]


def french_queries(workdir: Path) -> list[dict]:
    """The French human test captions (the evaluation's queries): caption_id, image_id, text."""
    rows = pq.read_table(data_dir(workdir) / "captions.parquet").to_pylist()
    return [r for r in rows if r["split"] == "test" and r["lang"] == "fr" and r["origin"] == "human"]


def copy_images(workdir: Path, dest: Path, n: int | None = None) -> dict[str, Path]:
    """The first ``n`` test images copied into ``dest``: image_id -> copy."""
    dest.mkdir(parents=True, exist_ok=True)
    out = {}
    for image_id, path in gallery_images(workdir)[:n]:
        out[image_id] = dest / Path(path).name
        shutil.copyfile(path, out[image_id])
    return out


def train_inputs(workdir: Path):
    """ccr.train.TrainInputs of the run's French system (what its evaluation read)."""
    from ccr.train import TrainInputs

    data = data_dir(workdir)
    feats = only(sorted((workdir / "results" / "features").glob("tiny-*")), "features folder")
    texts = only(sorted((feats / "texts").iterdir()), "text feature folder")
    return TrainInputs(
        images=data / "images.parquet", captions=data / "captions.parquet",
        translations=only(sorted((data / "translations" / "fr").glob("*.parquet")), "translations"),
        descriptions=only(sorted((data / "descriptions").glob("*.parquet")), "descriptions"),
        image_features=only(sorted((feats / "images").glob("*.parquet")), "image features"),
        caption_features=texts / "captions.parquet",
        translation_features=only(sorted(texts.glob("mt-fr.*.parquet")), "translation features"),
        description_features=only(sorted(texts.glob("descriptions.*.parquet")), "description features"),
        lang="fr")


def student_of(workdir: Path, key: str = "*") -> Path:
    """The run's trained student (``key``: the student key, for a run that holds several)."""
    return only(sorted((workdir / "results" / "runs").glob(f"tiny-*/students/*/{key}/seed0/student.pt")), "student")


# ---- headless Chromium -------------------------------------------------------------------------------------

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
# What this machine needs (closed network, root, no GPU): see the browser notes in docs/search.md.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1280,900")


def ensure_chromium() -> str | None:
    """Install Debian's chromium + chromium-driver when missing; None when ready, else why not."""
    if Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file():
        return None
    if not shutil.which("apt-get"):
        return "Chromium is not installed and there is no apt-get to install it"
    if os.geteuid() != 0:
        return "Chromium is not installed and installing it needs root (apt-get install chromium chromium-driver)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium", "chromium-driver"]):
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
        except subprocess.TimeoutExpired:
            return f"{' '.join(cmd)} timed out"
        if proc.returncode != 0:
            return f"{' '.join(cmd)} failed: {(proc.stdout + proc.stderr)[-500:]}"
    if not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()):
        return f"apt-get installed chromium but {CHROMIUM} or {CHROMEDRIVER} is missing"
    return None
