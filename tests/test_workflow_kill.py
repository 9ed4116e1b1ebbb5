"""Scattered jobs, SIGKILLed at random points and rerun, give outputs byte-identical to an unscattered,
uninterrupted run of the same config (the shared tiny reference run, tests/conftest.py)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
from workflow_run import SNAKEMAKE, digests, make_workdir, snakemake, tiny_config

# A long rule -> its script, and the folder pattern (under results/) where its progress shows.
LONG_RULES = {
    "translate_captions": ("translate_captions.py", "data/*/translations/**/*.shards"),
    "describe_images": ("describe_images.py", "data/*/descriptions/**/*.shards"),
    "embed_images": ("embed_images.py", "features/*/images/**/*.shards"),
    "embed_texts": ("embed_texts.py", "features/*/texts/**/*.shards"),
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
def test_scattered_and_sigkilled_jobs_give_byte_identical_outputs(tiny_reference, tmp_path):
    """Every scatterable stage in 2 parts (each its own job), and each long stage's job SIGKILLed at a
    random (seeded) point, then rerun: every output is byte for byte the unscattered, uninterrupted
    run's (metrics.json and the report included), and the reruns resumed (their logs say so)."""
    config = tiny_config()
    config["scatter"] = {"translate": 2, "describe": 2, "embed_images": 2, "embed_texts": 2}
    workdir = make_workdir(tmp_path / "wd", config)
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
    assert "(part 2 of 2)" in logs and "gathered 2 part(s)" in logs
    ours, reference = digests(workdir / "results"), digests(tiny_reference / "results")
    assert ours.keys() == reference.keys()
    different = sorted(k for k in ours if ours[k] != reference[k])
    assert not different, different
