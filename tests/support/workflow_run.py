"""Helpers of the workflow tests: a working directory with the workflow, running Snakemake, the tiny
config, the jobs a dry run plans, and digests of every output."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
CCR = str(Path(sys.executable).with_name("ccr"))


def make_workdir(tmp: Path, config: dict, profiles: bool = False) -> Path:
    """A working directory with the repo's workflow (catalog layout) and ``config`` as config/config.yaml."""
    tmp.mkdir(parents=True, exist_ok=True)
    shutil.copytree(REPO / "workflow", tmp / "workflow", ignore=shutil.ignore_patterns("__pycache__"))
    if profiles:
        shutil.copytree(REPO / "profiles", tmp / "profiles")
    (tmp / "config").mkdir(exist_ok=True)
    (tmp / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    return tmp


def snakemake(workdir: Path, *args: str, check: bool = True, cores: int | None = 2,
              timeout: float = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [SNAKEMAKE, *(["--cores", str(cores)] if cores else []), "--directory", str(workdir), *args]
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, env=env, timeout=timeout)
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


@contextmanager
def with_config(workdir: Path, config: dict):
    """``config`` as the workdir's config inside the block, the tiny config again afterwards."""
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    try:
        yield
    finally:
        (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(tiny_config()))


def digests(root: Path) -> dict[str, str]:
    """relative path -> SHA-256 of every file under ``root``."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}
