"""The Snakemake workflow end to end on a tiny config, config validation, and rerun-only-what-changed."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from conftest import REPO

SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def make_workdir(tmp: Path, config: dict) -> Path:
    """A working directory with the repo's workflow and ``config`` as config/config.yaml."""
    tmp.mkdir(parents=True, exist_ok=True)
    for name in ("Snakefile", "workflow"):
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp / name)
    # The envs moved to workflow/envs; rules that still name them as ../../envs/ resolve through this link
    # (Snakemake records the env file of every job it runs, conda or not).
    if any("../../envs/" in smk.read_text() for smk in (tmp / "workflow" / "rules").glob("*.smk")):
        (tmp / "envs").symlink_to(tmp / "workflow" / "envs", target_is_directory=True)
    (tmp / "config").mkdir(exist_ok=True)
    (tmp / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    return tmp


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [SNAKEMAKE, "--cores", "2", "--directory", str(workdir), *args],
        cwd=workdir, capture_output=True, text=True, env=env, timeout=900,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def tiny_config() -> dict:
    return yaml.safe_load((REPO / ".test" / "config" / "config.yaml").read_text())


def planned_jobs(workdir: Path, *args: str) -> set[str]:
    """Rule names a dry run would execute."""
    out = snakemake(workdir, "--dry-run", "--quiet", "rules", *args).stdout
    jobs = set()
    for line in out.splitlines():
        match = re.match(r"^\s*([a-z_]+)\s+\d+\s*$", line)
        if match and match.group(1) not in ("total", "job", "count", "all"):
            jobs.add(match.group(1))
    return jobs


def test_misspelt_config_key_is_named(tmp_path):
    config = tiny_config()
    config["langauges"] = config.pop("languages")
    workdir = make_workdir(tmp_path / "wd", config)
    proc = snakemake(workdir, "--dry-run", check=False)
    assert proc.returncode != 0
    message = proc.stdout + proc.stderr
    assert "langauges" in message and "was unexpected" in message


def test_misspelt_nested_key_is_named(tmp_path):
    config = tiny_config()
    config["features"]["image"]["parms"] = {}
    workdir = make_workdir(tmp_path / "wd", config)
    proc = snakemake(workdir, "--dry-run", check=False)
    assert proc.returncode != 0
    assert "parms" in proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    workdir = make_workdir(tmp_path_factory.mktemp("e2e") / "wd", tiny_config())
    snakemake(workdir)
    return workdir


@pytest.mark.slow
def test_end_to_end_tiny_run(finished_run):
    runs = finished_run / "results" / "runs" / "tiny"
    rows = {}
    for system in ("zero-shot", "full"):
        path = runs / system / "fr" / "seed0" / "metrics.parquet"
        row = pq.read_table(path).to_pylist()[0]
        assert row["system"] == system and row["lang"] == "fr"
        assert 0.0 <= row["mr"] <= 100.0
        rows[system] = row
        assert json.loads((path.parent / "metrics.json").read_text())["mr"] == pytest.approx(row["mr"])
    # 24 test images: chance mR is about (1+5+10)/3/24*100 = 22; the trained system must beat chance.
    assert rows["full"]["mr"] > 30.0
    report = finished_run / "results" / "report" / "tiny" / "main"
    html = (report / "report.html").read_text()
    assert "data:image/png;base64" in html and "full" in html
    # nothing incomplete left behind
    assert not list((finished_run / "results").rglob("*.shards"))
    assert not list((finished_run / "results").rglob(".*.tmp-*"))


@pytest.mark.slow
def test_nothing_to_do_after_a_run(finished_run):
    assert planned_jobs(finished_run) == set()


@pytest.mark.slow
def test_student_param_change_reruns_only_downstream(finished_run, tmp_path):
    config = tiny_config()
    config["systems"]["full"] = {"student": {"epochs": 2}}
    (finished_run / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    try:
        jobs = planned_jobs(finished_run)
    finally:
        (finished_run / "config" / "config.yaml").write_text(yaml.safe_dump(tiny_config()))
    assert jobs == {"train_student", "evaluate", "report"}


@pytest.mark.slow
def test_describe_param_change_reruns_descriptions_and_below(finished_run):
    config = tiny_config()
    config["describe"]["params"]["views"] = 2
    (finished_run / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    try:
        jobs = planned_jobs(finished_run)
    finally:
        (finished_run / "config" / "config.yaml").write_text(yaml.safe_dump(tiny_config()))
    assert "describe_images" in jobs and "embed_texts" in jobs
    assert not jobs & {"prepare_dataset", "translate_captions", "embed_images"}
