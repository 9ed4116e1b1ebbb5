"""Deployment like a catalog workflow: the workflow used as a Snakemake module from another folder, and
a scheduler that needs only Snakemake (parse time imports no torch, no installed ccr)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from conftest import REPO

SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
RULES = ("prepare_dataset", "translate_captions", "describe_images", "embed_images", "embed_texts",
         "train_teacher", "train_student", "evaluate", "report", "export_bundle")


def planned(out: str, prefix: str = "") -> set[str]:
    return {rule for rule in RULES if f"{prefix}{rule}" in out}


def test_deployed_as_a_module_from_another_folder(tmp_path):
    """What `snakedeploy deploy-workflow` sets up: config/ in a fresh folder and a `module` statement."""
    dest = tmp_path / "deployed"
    (dest / "config").mkdir(parents=True)
    (dest / "workflow").mkdir()
    shutil.copy(REPO / ".test" / "config" / "config.yaml", dest / "config" / "config.yaml")
    shutil.copytree(REPO / "profiles", dest / "profiles")
    (dest / "workflow" / "Snakefile").write_text(f'''configfile: "config/config.yaml"


module ccr:
    snakefile:
        "{REPO / "workflow" / "Snakefile"}"
    config:
        config


use rule * from ccr as ccr_*
''')
    proc = subprocess.run([SNAKEMAKE, "--dry-run", "--cores", "1"], cwd=dest, capture_output=True, text=True,
                          timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert planned(out, "ccr_") == set(RULES), out[-4000:]
    assert not (dest / "results").exists()


def _snakemake_only_venv(root: Path) -> Path:
    """A fresh venv with only Snakemake (and what it depends on); skip when the registry is unreachable."""
    venv.EnvBuilder(with_pip=True, clear=True).create(root)
    pip = subprocess.run([str(root / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                          "snakemake==9.27.1"], capture_output=True, text=True, timeout=600)
    if pip.returncode != 0:
        pytest.skip(f"cannot install snakemake into a fresh venv (no package registry?): {pip.stderr[-500:]}")
    return root / "bin"


@pytest.mark.slow
def test_scheduler_needs_only_snakemake(tmp_path):
    """`snakemake -n` plans the whole DAG in a venv without torch, faiss or an installed ccr."""
    bin_dir = _snakemake_only_venv(tmp_path / "venv")
    check = subprocess.run([str(bin_dir / "python"), "-c", "import torch"], capture_output=True, text=True)
    assert check.returncode != 0  # really without torch
    check = subprocess.run([str(bin_dir / "python"), "-c", "import ccr"], capture_output=True, text=True,
                           cwd=tmp_path)
    assert check.returncode != 0  # and without the library installed
    workdir = tmp_path / "wd"
    (workdir / "config").mkdir(parents=True)
    shutil.copy(REPO / ".test" / "config" / "config.yaml", workdir / "config" / "config.yaml")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.run([str(bin_dir / "snakemake"), "--dry-run", "--cores", "1", "--snakefile",
                           str(REPO / "workflow" / "Snakefile")], cwd=workdir, env=env, capture_output=True,
                          text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert planned(out) == set(RULES), out[-4000:]
