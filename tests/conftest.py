"""Shared test helpers: repo paths, the ../shared data location, torch thread limits, and one
reference run of the tiny workflow config shared by every workflow test."""

from __future__ import annotations

import fcntl
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CCR_SHARED_DATA", REPO.parent / "shared" / "data"))
sys.path.insert(0, str(Path(__file__).parent / "support"))


# The longest modules (minutes each) first. `make test` runs them with --dist loadfile: each module
# on one worker, handed out in collection order, so a long module collected last (test_workflow_kill.py
# sorts late) would start when the others end and set the suite's wall time alone.
LONGEST_FIRST = ("test_workflow_kill.py", "test_slurm.py", "test_workflow.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


@pytest.fixture(autouse=True, scope="session")
def _few_threads():
    # Two cores are shared by pytest-xdist workers: keep each worker on one thread.
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "multi30k").is_dir():
        pytest.skip(f"benchmark data not found at {SHARED_DATA} (set CCR_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_reference(tmp_path_factory) -> Path:
    """One uninterrupted, unscattered local run of the tiny config (.test/config), made once per test
    session and shared by every xdist worker (under a file lock). Tests compare their own runs with
    it and must never change it (copy it first: ``shutil.copytree``)."""
    from workflow_run import make_workdir, snakemake, tiny_config

    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # the session's folder
    workdir = shared / "tiny-reference"
    with open(shared / "tiny-reference.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (workdir / ".finished").exists():
            make_workdir(workdir, tiny_config())
            snakemake(workdir)
            (workdir / ".finished").touch()
    return workdir


@pytest.fixture(scope="module")
def finished_run(tiny_reference, tmp_path_factory) -> Path:
    """A copy of the shared reference run, which the tests of one module may add to."""
    import shutil

    workdir = tmp_path_factory.mktemp("run") / "wd"
    shutil.copytree(tiny_reference, workdir, symlinks=True)
    return workdir


@pytest.fixture(scope="session")
def search_reference(tiny_reference, tmp_path_factory) -> Path:
    """The search scenario (.test/config_search: tiny with the student trained 12 epochs) run on a copy
    of the tiny reference, once per session and shared by the xdist workers: its exported bundle
    retrieves well. Tests must not change it (copy it first)."""
    import shutil

    import yaml
    from workflow_run import snakemake

    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    workdir = shared / "search-reference"
    with open(shared / "search-reference.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (workdir / ".finished").exists():
            shutil.rmtree(workdir, ignore_errors=True)
            shutil.copytree(tiny_reference, workdir, symlinks=True)
            shutil.rmtree(workdir / "results" / "bundles")  # the tiny config's: this run exports its own
            config = yaml.safe_load((REPO / ".test" / "config_search" / "config.yaml").read_text())
            (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(config))
            snakemake(workdir)
            (workdir / ".finished").touch()
    return workdir
