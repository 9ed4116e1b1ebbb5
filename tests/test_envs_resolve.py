"""Every GPU env and GPU extra resolves against the package registry (``pip install --dry-run``), as a GPU node
would install it; and a post-deploy script really installs ccr into a fresh environment.

Minutes, and it needs the registry: marked ``resolve``, left out of the default run (pyproject addopts) and run
by ``make test-resolve``. Skipped, with the reason, when the registry cannot be reached. pip runs ``--isolated``
(no local pip config, find-links or constraints) so the result is what a user's pip resolves from PyPI.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from envs_catalog import ENV_DIR, REPO, all_envs
from packaging.utils import canonicalize_name
from packaging.version import Version

pytestmark = pytest.mark.resolve

INDEX_PROBE = "https://pypi.org/simple/pip/"
GPU_ENVS = sorted(name for name in all_envs() if "-" in name)


@pytest.fixture(scope="session")
def registry():
    try:
        with urllib.request.urlopen(INDEX_PROBE, timeout=20) as response:
            response.read(64)
    except OSError as err:
        pytest.skip(f"package registry unreachable ({INDEX_PROBE}: {err}); these tests resolve against it")


def _pip_args() -> list[str]:
    args = [sys.executable, "-m", "pip", "--isolated", "--disable-pip-version-check", "--timeout", "60",
            "--retries", "2"]
    if os.environ.get("PIP_CERT"):  # --isolated ignores PIP_* variables; a custom CA must still be used
        args += ["--cert", os.environ["PIP_CERT"]]
    return args


def resolve(tmp_path: Path, requirements: list[str]) -> dict[str, str]:
    """``pip install --dry-run --ignore-installed`` of ``requirements`` (requirements-file lines) -> {name: version}."""
    req_file = tmp_path / "requirements.txt"
    req_file.write_text("\n".join(requirements) + "\n")
    report = tmp_path / "report.json"
    command = [*_pip_args(), "install", "--dry-run", "--ignore-installed", "--quiet", "--report", str(report),
               "-r", str(req_file)]
    # fast-deps reads each wheel's metadata with HTTP range requests instead of downloading the wheel (torch and
    # its CUDA libraries are GBs): 3x faster here. Same resolution; retried without it on a pip that lacks it.
    proc = subprocess.run([*command, "--use-feature=fast-deps"], capture_output=True, text=True, timeout=900)
    if proc.returncode != 0 and "fast-deps" in proc.stderr and "not ready" not in proc.stderr:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise AssertionError(f"pip could not resolve:\n{req_file.read_text()}\n{proc.stderr[-6000:]}")
    installs = json.loads(report.read_text())["install"]
    return {canonicalize_name(i["metadata"]["name"]): i["metadata"]["version"] for i in installs}


def _check_cuda_torch(resolved: dict[str, str], where: str) -> None:
    assert "+cpu" not in resolved["torch"], f"{where}: resolved a CPU torch {resolved['torch']}"
    cuda = sorted(n for n in resolved if n.startswith(("nvidia-", "cuda-toolkit")))
    assert cuda, f"{where}: torch {resolved['torch']} came without CUDA libraries"


def _check_faiss(resolved: dict[str, str], where: str) -> None:
    assert not {"faiss-cpu", "faiss-gpu"} <= set(resolved), f"{where}: faiss-cpu and faiss-gpu together"


@pytest.mark.parametrize("name", GPU_ENVS)
def test_gpu_env_resolves(registry, tmp_path, name):
    env = all_envs()[name]
    resolved = resolve(tmp_path, env.requirement_lines())
    changed = {n: (v, resolved.get(n)) for n, v in env.pins.items() if resolved.get(n) != v}
    assert not changed, f"{name}.yaml: pins resolved to other versions (pin, resolved): {changed}"
    if "torch" in env.pins:
        _check_cuda_torch(resolved, f"{name}.yaml")
    _check_faiss(resolved, f"{name}.yaml")
    if name == "describe-vllm":
        assert resolved["vllm"] == "0.32.0" and resolved["torchvision"] == "0.28.0"
        assert Version("5.16.1") <= Version(resolved["transformers"]) < Version("5.20.0")


def _project_copy(tmp_path: Path) -> Path:
    """The project's packaging files and source: pip builds metadata in the tree it is given."""
    dest = tmp_path / "ccr"
    dest.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, dest / name)
    shutil.copytree(REPO / "src", dest / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    return dest


@pytest.mark.parametrize("extras", ["gpu", "vllm"])
def test_gpu_extras_resolve(registry, tmp_path, extras):
    # As docs/gpu-node.md installs them: the matching torch/torchvision pair pinned first.
    project = _project_copy(tmp_path)
    resolved = resolve(tmp_path, ["torch==2.13.0", "torchvision==0.28.0", f"{project}[{extras}]"])
    _check_cuda_torch(resolved, f"ccr[{extras}]")
    _check_faiss(resolved, f"ccr[{extras}]")
    assert "faiss-gpu" in resolved and "faiss-cpu" not in resolved
    assert Version(resolved["transformers"]) >= Version("4.56")
    if extras == "vllm":
        assert resolved["vllm"] == "0.32.0" and Version(resolved["transformers"]) < Version("5.20.0")


def test_make_setup_extras_bring_faiss_cpu_only(registry, tmp_path):
    project = _project_copy(tmp_path)
    resolved = resolve(tmp_path, ["torch==2.13.0", f"{project}[cpu,workflow,dev]"])
    assert "faiss-cpu" in resolved and "faiss-gpu" not in resolved


def test_post_deploy_installs_ccr_into_a_fresh_env(registry, tmp_path):
    """What Snakemake does after creating a conda env: run the post-deploy script inside it (here: a venv)."""
    project = _project_copy(tmp_path)
    venv = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    pin = next(f"setuptools=={v}" for n, v in all_envs()["data"].pins.items() if n == "setuptools")
    subprocess.run([str(venv / "bin" / "python"), *_pip_args()[1:], "install", "--quiet", pin], check=True,
                   timeout=600)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON"))}
    env.update(PATH=f"{venv / 'bin'}:{os.environ['PATH']}", CCR_SOURCE=str(project), PIP_ISOLATED="1")
    deployed = tmp_path / "deployed-workflow"  # a snakedeploy-style working directory without the source
    deployed.mkdir()
    proc = subprocess.run(["bash", str(ENV_DIR / "data.post-deploy.sh")], cwd=deployed, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import ccr; print(ccr.__file__)"], cwd=deployed,
                           env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where) == project / "src" / "ccr" / "__init__.py"  # editable: follows the source tree
