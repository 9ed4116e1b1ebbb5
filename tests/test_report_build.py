"""build_report on metrics/examples written by the real evaluate stage, plus hand-made history tables."""

from __future__ import annotations

import base64
import re
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from ccr.evaluate import evaluate
from ccr.report import aggregate_metrics, build_report

sys.path.insert(0, str(Path(__file__).parent))
from test_evaluate_stage import IdentityRetriever, RandomRetriever, make_dataset  # noqa: E402


def write_metrics(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def row(system, lang, seed, r1, mr, **extra):
    return {"dataset": "toy", "system": system, "lang": lang, "seed": seed, "n_queries": 10, "n_images": 5,
            "t2i_r1": r1, "t2i_r5": r1 + 10, "t2i_r10": r1 + 20, "i2t_r1": r1, "i2t_r5": r1 + 5,
            "i2t_r10": r1 + 6, "mr": mr, "t2i_medr": 2.0, "i2t_medr": 3.0, **extra}


def test_aggregate_mean_std_over_seeds(tmp_path):
    paths = [write_metrics(tmp_path / f"a{s}" / "metrics.parquet", [row("a", "fr", s, r1, mr)])
             for s, r1, mr in ((0, 10.0, 20.0), (1, 20.0, 30.0), (2, 30.0, 40.0))]
    paths.append(write_metrics(tmp_path / "b" / "metrics.parquet", [row("b", "fr", 0, 50.0, 60.0, run="x")]))
    agg = aggregate_metrics(paths).to_pylist()
    assert [(r["system"], r["lang"], r["n_seeds"]) for r in agg] == [("a", "fr", 3), ("b", "fr", 1)]
    assert agg[0]["t2i_r1_mean"] == pytest.approx(20.0) and agg[0]["t2i_r1_std"] == pytest.approx(10.0)
    assert agg[0]["mr_mean"] == pytest.approx(30.0) and agg[0]["t2i_r10_mean"] == pytest.approx(40.0)
    assert agg[1]["mr_mean"] == 60.0 and agg[1]["mr_std"] is None  # one seed: no std


def _images(root: Path, n: int) -> None:
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        arr = rng.integers(0, 255, size=(100, 150, 3), dtype=np.uint8)
        Image.fromarray(arr).save(root / "images" / f"img{i:04d}.jpg")


def _history(path: Path, seed: int, with_run_cols: bool) -> Path:
    rows = []
    for stage in ("teacher", "student"):
        for epoch in range(3):
            for step in range(4):
                rows.append({"stage": stage, "epoch": epoch, "step": epoch * 4 + step, "train_loss": 2.0 / (1 + step),
                             "val_mr": float(10 * epoch + seed) if step == 3 else None, "lr": 1e-3})
    table = pa.Table.from_pylist(rows)
    if with_run_cols:
        table = table.append_column("system", pa.array(["cl2cm"] * len(rows))).append_column(
            "seed", pa.array([seed] * len(rows)))
    return write_metrics(path, table.to_pylist())


def test_build_report_end_to_end(tmp_path):
    n = 30
    data = tmp_path / "data"
    data.mkdir()
    inputs = make_dataset(data, n_test=n - 10)
    _images(data, n)
    runs, examples = [], []
    for system, make in (("identity", lambda s: IdentityRetriever(n)), ("random", RandomRetriever)):
        for seed in (0, 1):
            out = tmp_path / "runs" / system / "fr" / f"seed{seed}"
            evaluate(make(seed), inputs, "fr", (1, 5, 10), out)
            runs.append({"system": system, "lang": "fr", "seed": seed, "eval": str(out)})
            examples.append(out / "examples.parquet")
    # the first example's true image is broken: shown as a visible placeholder, the report is still built
    first = pq.read_table(examples[0]).to_pylist()[0]
    Path(first["true_image_path"]).write_bytes(b"not a jpeg")
    history = [_history(tmp_path / "h" / f"seed{s}" / "history.parquet", s, True) for s in (0, 1)]
    history.append(_history(tmp_path / "h" / "plain" / "history.parquet", 5, False))

    out = tmp_path / "report"
    tags = {"dataset": "toy", "run_name": "main", "config_hash": "0123456789", "code_version": "abc"}
    build_report(runs, tags, history, out)
    rows = pq.read_table(out / "metrics.parquet").to_pylist()
    assert [(r["system"], r["seed"], r["config_hash"], r["code_version"]) for r in rows][:2] == [
        ("identity", 0, "0123456789", "abc"), ("identity", 1, "0123456789", "abc")]
    assert list(rows[0])[:7] == ["dataset", "system", "lang", "seed", "run_name", "config_hash", "code_version"]
    for name in ("metrics_table.parquet", "metrics_table.md", "recall_at_k.png", "training_curves.png",
                 "examples.html", "report.html"):
        assert (out / name).stat().st_size > 0, name
    md = (out / "metrics_table.md").read_text()
    assert "| toy | identity | fr | test | 2 | 100.0 ± 0.0 |" in md
    assert "T2I R@1" in md and "I2T R@10" in md and "mR" in md
    agg = pq.read_table(out / "metrics_table.parquet").to_pylist()
    assert [r["system"] for r in agg] == ["identity", "random"] and agg[0]["mr_mean"] == 100.0
    assert agg[1]["mr_std"] is not None and agg[1]["mr_mean"] < 50

    for png in ("recall_at_k.png", "training_curves.png"):
        with Image.open(out / png) as im:
            assert im.format == "PNG" and im.width > 300

    report = (out / "report.html").read_text()
    assert "<table" in report and "100.0 ± 0.0" in report
    # self-contained: no references to external files
    assert not re.search(r'(src|href)="(?!data:)', report)
    assert report.count("data:image/png;base64,") == 2
    assert report.count("data:image/jpeg;base64,") > 10
    # thumbnails decode as ~96 px JPEGs
    uri = re.search(r'data:image/jpeg;base64,([^"]+)"', report).group(1)
    from io import BytesIO

    with Image.open(BytesIO(base64.b64decode(uri))) as thumb:
        assert thumb.format == "JPEG" and max(thumb.size) == 96
    from ccr.report.plots import run_label
    from ccr.report.tables import load_history

    labels = {run_label(r, ["system", "seed"]) for r in load_history(history).to_pylist()}
    assert {lab for lab in labels if lab.startswith("cl2cm")} == {"cl2cm / seed=0", "cl2cm / seed=1"}
    assert any(lab.endswith("/h/plain") for lab in labels) and len(labels) == 3
    ex = (out / "examples.html").read_text()
    assert 'class="hit"' in ex and "identity" in ex and "random" in ex
    assert f"missing:<br>{first['true_image_id']}" in ex


def _eval_dir(path: Path, metrics_rows: list[dict]) -> dict:
    write_metrics(path / "metrics.parquet", metrics_rows)
    pq.write_table(pa.table({"caption_id": pa.array([], pa.string())}), path / "examples.parquet")
    return {"system": "zs", "lang": "de", "seed": 0, "eval": str(path)}


def test_build_report_without_history_or_examples(tmp_path):
    run = _eval_dir(tmp_path / "m", [row("zs", "de", 0, 5.0, 9.0)])
    build_report([run], {}, [], tmp_path / "out")
    assert "No retrieval examples" in (tmp_path / "out" / "report.html").read_text()
    assert (tmp_path / "out" / "training_curves.png").exists()


def test_build_report_bad_inputs(tmp_path):
    run = _eval_dir(tmp_path / "m", [row("zs", "de", 0, 5.0, 9.0)])
    with pytest.raises(FileNotFoundError, match="nope"):
        build_report([run, {**run, "eval": str(tmp_path / "nope")}], {}, [], tmp_path / "out")
    bad_hist = write_metrics(tmp_path / "h.parquet", [{"stage": "teacher", "epoch": 0}])
    with pytest.raises(ValueError, match=r"h\.parquet.*step"):
        build_report([run], {}, [bad_hist], tmp_path / "out")
    with pytest.raises(ValueError, match="no metrics"):
        build_report([], {}, [], tmp_path / "out")
    not_metrics = _eval_dir(tmp_path / "x", [{"a": 1}])
    with pytest.raises(ValueError, match="no metric columns"):
        build_report([not_metrics], {}, [], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_history_tags_label_runs_by_file(tmp_path):
    """The workflow's tags (systems sharing a trained model) land on the rows of their history file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ccr.report import _tag_history
    from ccr.report.tables import load_history

    paths = []
    for name in ("a", "b"):
        path = tmp_path / name / "history.parquet"
        path.parent.mkdir()
        pq.write_table(pa.table({"stage": ["student"], "epoch": [1], "step": [10], "train_loss": [1.0],
                                 "val_mr": [50.0]}), path)
        paths.append(path)
    history = _tag_history(load_history(paths), {str(paths[0]): {"system": "mt, mt+teacher", "seed": 0}})
    rows = {r["filename"]: r for r in history.to_pylist()}
    assert rows[str(paths[0])]["system"] == "mt, mt+teacher" and rows[str(paths[0])]["seed"] == 0
    assert rows[str(paths[1])]["system"] is None
