"""The Snakemake workflow end to end on the tiny config: outputs, config errors before the first job,
rerun-only-what-changed, content-keyed outputs (a data change retrains, two configs keep apart,
key order does not matter) and SIGKILLed jobs that resume to byte-identical outputs."""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from conftest import REPO

SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
CCR = str(Path(sys.executable).with_name("ccr"))


def make_workdir(tmp: Path, config: dict) -> Path:
    """A working directory with the repo's workflow (catalog layout) and ``config`` as config/config.yaml."""
    tmp.mkdir(parents=True, exist_ok=True)
    shutil.copytree(REPO / "workflow", tmp / "workflow", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp / "config").mkdir(exist_ok=True)
    (tmp / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    return tmp


def snakemake(workdir: Path, *args: str, check: bool = True, cores: int = 2) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [SNAKEMAKE, "--cores", str(cores), "--directory", str(workdir), *args],
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


def with_config(workdir: Path, config: dict):
    """Context: ``config`` as the workdir's config, the tiny config again afterwards."""
    from contextlib import contextmanager

    @contextmanager
    def swap():
        (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        try:
            yield
        finally:
            (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(tiny_config()))

    return swap()


def digests(root: Path) -> dict[str, str]:
    """relative path -> SHA-256 of every file under ``root``."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# ---- config errors: refused by `snakemake -n`, naming the key, before any job runs ------------------

@pytest.mark.parametrize("edit, message", [
    (lambda c: c.update(langauges=c.pop("languages")), r"'langauges' was unexpected"),
    (lambda c: c["features"]["image"].update(parms={}), r"'parms' was unexpected"),
    (lambda c: c["languages"]["fr"].update(backend="apertum"), r"'apertum' is not one of \['apertium'"),
    (lambda c: c["describe"]["params"].update(veiws=3), r"'veiws' was unexpected"),
    (lambda c: c["train"]["teacher"].update(epochs=0), r"0 is less than the minimum of 1"),
    (lambda c: c["train"]["student"].update(embed_dim=30, attn_heads=4), r"'embed_dim' \(30\) must be divisible"),
])
def test_config_errors_are_refused_before_the_first_job(tmp_path, edit, message):
    config = tiny_config()
    edit(config)
    workdir = make_workdir(tmp_path / "wd", config)
    proc = snakemake(workdir, "--dry-run", check=False)
    assert proc.returncode != 0
    assert re.search(message, proc.stdout + proc.stderr), (proc.stdout + proc.stderr)[-3000:]
    assert not (workdir / "results").exists()


# ---- one tiny run, then what reruns ----------------------------------------------------------------

@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    workdir = make_workdir(tmp_path_factory.mktemp("e2e") / "wd", tiny_config())
    snakemake(workdir)
    return workdir


def report_dir(workdir: Path, run_name: str = "main") -> Path:
    (found,) = (workdir / "results" / "report" / "tiny").glob(f"{run_name}-*")
    return found


@pytest.mark.slow
def test_end_to_end_tiny_run(finished_run):
    rows = {r["system"]: r for r in pq.read_table(report_dir(finished_run) / "metrics.parquet").to_pylist()}
    assert set(rows) == {"zero-shot", "full"}
    for row in rows.values():
        assert row["lang"] == "fr" and row["dataset"] == "tiny" and row["seed"] == 0
        assert len(row["config_hash"]) == 10 and row["code_version"]
        assert 0.0 <= row["mr"] <= 100.0
    # the evaluation files hold the same numbers
    evals = list((finished_run / "results" / "runs").glob("tiny-*/evals/*/metrics.json"))
    assert len(evals) == 2
    assert sorted(json.loads(p.read_text())["mr"] for p in evals) == pytest.approx(sorted(r["mr"] for r in rows.values()))
    # 24 test images: chance mR is about (1+5+10)/3/24*100 = 22; the trained system must beat chance.
    assert rows["full"]["mr"] > 30.0
    html = (report_dir(finished_run) / "report.html").read_text()
    assert "data:image/png;base64" in html and "full" in html
    # every output carries the fingerprint of what made it
    from ccr.io import read_fingerprint

    for table in (finished_run / "results").rglob("*.parquet"):
        if "report" not in table.parts and "evals" not in table.parts and table.name != "history.parquet":
            assert not read_fingerprint(table).startswith("sha256:"), table
    # nothing incomplete left behind
    assert not list((finished_run / "results").rglob("*.shards"))
    assert not list((finished_run / "results").rglob(".*.tmp-*"))
    assert not list((finished_run / "results").rglob("last.pt"))


@pytest.mark.slow
def test_nothing_to_do_after_a_run(finished_run):
    assert planned_jobs(finished_run) == set()


@pytest.mark.slow
def test_reordered_config_keys_plan_nothing(finished_run):
    def reverse(value):
        if isinstance(value, dict):
            return {k: reverse(value[k]) for k in reversed(list(value))}
        return value

    with with_config(finished_run, reverse(tiny_config())):
        assert planned_jobs(finished_run) == set()


@pytest.mark.slow
def test_student_param_change_reruns_only_downstream(finished_run):
    config = tiny_config()
    config["systems"]["full"] = {"student": {"epochs": 2}}
    with with_config(finished_run, config):
        jobs = planned_jobs(finished_run)
    assert jobs == {"train_student", "evaluate", "report"}


@pytest.mark.slow
def test_describe_param_change_reruns_descriptions_and_below(finished_run):
    config = tiny_config()
    config["describe"]["params"]["views"] = 2
    with with_config(finished_run, config):
        jobs = planned_jobs(finished_run)
    assert "describe_images" in jobs and "embed_texts" in jobs
    assert not jobs & {"prepare_dataset", "translate_captions", "embed_images", "train_teacher"}


# A long rule -> its script, and the folder pattern (under results/) where its progress shows.
LONG_RULES = {
    "translate_captions": ("translate_captions.py", "data/*/translations/*/*.shards"),
    "describe_images": ("describe_images.py", "data/*/descriptions/*.shards"),
    "embed_images": ("embed_images.py", "features/*/images/*.shards"),
    "embed_texts": ("embed_texts.py", "features/*/texts/*/*.shards"),
    "train_teacher": ("train_teacher.py", "runs/*/teachers/*/*/seed*/last.pt"),
    "train_student": ("train_student.py", "runs/*/students/*/*/seed*/last.pt"),
}


def sigkill_a_job(workdir: Path, rng: random.Random, killed: set[str]) -> str | None:
    """Run snakemake (one job at a time) and SIGKILL the first job of a long rule not yet in ``killed``,
    at a random point of its work: after 1 or 2 (seeded) more finished shards or epochs."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([SNAKEMAKE, "--cores", "1", "--directory", str(workdir)], cwd=workdir, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        while proc.poll() is None:
            job = _running_job(workdir, killed)
            if job is None:
                time.sleep(0.01)
                continue
            rule, pid = job
            if _wait_for_progress(workdir, rule, pid, rng.randint(1, 2)):
                os.kill(pid, signal.SIGKILL)
                proc.wait(timeout=300)
                return rule
            # the job finished before: look for the next long job
        return None
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def _running_job(workdir: Path, killed: set[str]) -> tuple[str, int] | None:
    """(rule, pid) of the Python process of a running long-rule job in ``workdir`` (read from /proc)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            if not Path(argv[0]).name.startswith("python") or Path(os.readlink(entry / "cwd")) != workdir:
                continue
        except OSError:
            continue
        cmd = " ".join(argv)
        for rule, (script, _) in LONG_RULES.items():
            if ".snakemake/scripts/" in cmd and cmd.endswith(f".{script} ") and rule not in killed:
                return rule, int(entry.name)
    return None


def _progress(workdir: Path, rule: str) -> set:
    """What marks progress of ``rule``: its finished shards, or the successive last.pt files of a training."""
    pattern = LONG_RULES[rule][1]
    marks = set()
    for path in (workdir / "results").glob(pattern):
        try:
            if path.name == "last.pt":
                marks.add(path.stat().st_ino)  # replaced (new inode) after every epoch
            else:
                marks.update(p.name for p in path.glob("part-*.parquet"))
        except FileNotFoundError:
            pass
    return marks


def _wait_for_progress(workdir: Path, rule: str, pid: int, more: int) -> bool:
    """Wait until the job has made ``more`` new progress marks; False if it ended before."""
    seen = _progress(workdir, rule)
    new: set = set()
    while Path(f"/proc/{pid}").exists():
        new |= _progress(workdir, rule) - seen
        if len(new) >= more:
            return True
        time.sleep(0.005)
    return False


@pytest.mark.slow
def test_sigkilled_jobs_resume_to_byte_identical_outputs(finished_run, tmp_path):
    """SIGKILL each long stage's job at a random (seeded) point, rerun: every output is byte for byte
    the uninterrupted run's, and the reruns resumed (their logs say so)."""
    workdir = make_workdir(tmp_path / "wd", tiny_config())
    rng = random.Random(20261201)
    killed: set[str] = set()
    for _ in range(12):
        name = sigkill_a_job(workdir, rng, killed)
        if name is None:
            break
        killed.add(name)
    assert killed == {"translate_captions", "describe_images", "embed_images", "embed_texts", "train_teacher",
                      "train_student"}
    snakemake(workdir)
    logs = "\n".join(p.read_text() for p in (workdir / "logs").rglob("*.log"))
    assert "rows already done" in logs and "resuming from" in logs
    ours, reference = digests(workdir / "results"), digests(finished_run / "results")
    assert ours.keys() == reference.keys()
    different = sorted(k for k in ours if ours[k] != reference[k])
    assert not different, different


@pytest.mark.slow
def test_data_change_retrains_teacher_and_student(finished_run):
    """The issue's case: the default dataset's seed changes, training params do not."""
    config = tiny_config()
    config["seed"] = 1
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
              for p in (finished_run / "results" / "runs").rglob("*.pt")}
    with with_config(finished_run, config):
        snakemake(finished_run)
    after = {}
    for p in (finished_run / "results" / "runs").rglob("*.pt"):
        after.setdefault(p.name, set()).add(hashlib.sha256(p.read_bytes()).hexdigest())
    assert {"teacher.pt", "student.pt"} <= set(before)
    for name in ("teacher.pt", "student.pt"):
        assert len(after[name]) == 2 and before[name] in after[name]  # the old model kept, a new one trained


@pytest.mark.slow
def test_two_configs_keep_separate_outputs(finished_run):
    """Another config on the same dataset writes its own files; `ccr results` shows both runs."""
    other = tiny_config()
    other["run_name"] = "fewer-epochs"
    other["systems"]["full"] = {"student": {"epochs": 2}}
    before = digests(finished_run / "results")
    with with_config(finished_run, other):
        snakemake(finished_run)
    after = digests(finished_run / "results")
    changed = sorted(k for k in before if after.get(k) != before[k])
    assert not changed, changed  # nothing of the first config was overwritten
    proc = subprocess.run([CCR, "results", "--root", str(finished_run / "results" / "report"), "--format", "json",
                           "--sql", "SELECT run_name, config_hash, system, mr FROM metrics WHERE dataset = 'tiny' "
                                    "ORDER BY run_name, system"],
                          capture_output=True, text=True, check=True)
    rows = [r for r in json.loads(proc.stdout) if r["run_name"] in ("main", "fewer-epochs")]
    assert {(r["run_name"], r["system"]) for r in rows} >= {("main", "full"), ("main", "zero-shot"),
                                                           ("fewer-epochs", "full"), ("fewer-epochs", "zero-shot")}
    assert len({r["config_hash"] for r in rows}) >= 2
