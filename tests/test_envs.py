"""The per-rule conda envs (workflow/envs): they parse, pin what the tested venv runs, cover each rule's imports
(and each backend's, in the envs that claim it), install ccr through a post-deploy script; pyproject's extras
keep faiss-cpu and faiss-gpu apart. Registry resolution of the GPU envs: tests/test_envs_resolve.py."""

from __future__ import annotations

import os
import re
import subprocess
from importlib.metadata import PackageNotFoundError, version

import pytest
from envs_catalog import (
    CPU_INDEX,
    ENV_DIR,
    REPO,
    all_envs,
    backend_imports,
    distributions_of,
    parse_rules,
    registered_backends,
    script_imports,
)
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version


def _read_pyproject() -> dict:
    import tomllib  # here, not at the top: ruff sorts it as stdlib only for target-version >= py311

    return tomllib.loads((REPO / "pyproject.toml").read_text())


PYPROJECT = _read_pyproject()

# Pins that differ from the tested venv on purpose, with the reason.
KNOWN_DIFFERENCES = {
    ("describe-vllm", "transformers"): "vllm 0.32.0 requires transformers>=5.16.1,<5.20.0",
    ("describe-vllm", "numpy"): "vllm 0.32.0 pulls mistral_common, which requires numpy<2.4",
}

# Which registry's backends each rule runs (the rule's env family must serve all of them).
RULE_REGISTRIES = {
    "prepare_dataset": "DATASETS",
    "translate_captions": "TRANSLATORS",
    "mt_quality": "TRANSLATORS",
    "describe_images": "DESCRIBERS",
    "embed_images": "IMAGE_ENCODERS",
    "embed_texts": "TEXT_ENCODERS",
}
# A rule whose conda: is a function (the env chosen at run time): its env family by name.
RULE_ENV = {"prepare_dataset": "data", "translate_captions": "translate", "mt_quality": "translate",
            "describe_images": "describe", "embed_images": "features", "embed_texts": "features",
            "train_teacher": "train", "train_student": "train", "evaluate": "evaluate", "embed_gallery": "evaluate", "embed_text_bank": "evaluate", "embed_image_bank": "evaluate",
            "back_translate_captions": "translate", "combine_backtranslations": "data", "report": "report"}


def declared_requirements() -> dict[str, list[Requirement]]:
    """Every requirement pyproject declares (dependencies, extras, build-system), by canonical name."""
    lines = [*PYPROJECT["project"]["dependencies"], *PYPROJECT["build-system"]["requires"]]
    for extra in PYPROJECT["project"]["optional-dependencies"].values():
        lines += extra
    out: dict[str, list[Requirement]] = {}
    for line in lines:
        req = Requirement(line)
        out.setdefault(canonicalize_name(req.name), []).append(req)
    return out


def extra_closure(name: str) -> set[str]:
    """Canonical distribution names an extra installs directly, self-references (ccr[hf]) expanded."""
    out: set[str] = set()
    for line in PYPROJECT["project"]["optional-dependencies"][name]:
        req = Requirement(line)
        if canonicalize_name(req.name) == "ccr":
            for sub in req.extras:
                out |= extra_closure(sub)
        else:
            out.add(canonicalize_name(req.name))
    return out


def family(env: str) -> list[str]:
    """An env and its variants: describe -> describe, describe-gpu, describe-vllm."""
    return [name for name in all_envs() if name == env or name.startswith(f"{env}-")]


@pytest.fixture(scope="module")
def rules():
    found = parse_rules()
    assert found, "no rules found in workflow/rules/*.smk"
    for rule in found:
        if rule.env is None:
            assert rule.name in RULE_ENV, f"rule {rule.name}: conda: is not a literal path and not in RULE_ENV"
            rule.env = RULE_ENV[rule.name]
    return found


# ---- the env files -----------------------------------------------------------------------------------------

def test_every_env_parses_and_installs_ccr_through_its_post_deploy_script():
    envs = all_envs()
    assert {"data", "translate", "describe", "features", "train", "evaluate", "report"} <= set(envs)
    assert {"describe-gpu", "describe-vllm", "translate-gpu", "features-gpu", "evaluate-gpu"} <= set(envs)
    reference = (ENV_DIR / "data.post-deploy.sh").read_text()
    for env in envs.values():
        deps = env.data["dependencies"]
        assert env.data["channels"] == ["conda-forge", "nodefaults"], env.name
        assert "python=3.11" in deps and "pip" in deps, f"{env.name}: python=3.11 and pip expected"
        assert env.pins, f"{env.name}: no pip pins"
        # Snakemake copies the env file to .snakemake/conda/<hash>.yaml before conda reads it, so a relative
        # path (the old "-e ..") would point into .snakemake/: the library comes from the post-deploy script.
        assert not [o for o in env.options if o != CPU_INDEX], f"{env.name}: unexpected pip options {env.options}"
        assert "setuptools" in env.pins, f"{env.name}: setuptools builds ccr in the post-deploy script"
        script = env.path.with_suffix(".post-deploy.sh")
        assert script.is_file(), f"{script.name} missing: it installs ccr into {env.name}"
        assert script.read_text() == reference, f"{script.name} differs from data.post-deploy.sh"
        assert os.access(script, os.X_OK) and reference.startswith("#!/usr/bin/env bash\n")


def test_torch_builds_and_faiss_flavours():
    for env in all_envs().values():
        torch = env.pins.get("torch")
        if torch is None:
            assert not env.options, f"{env.name}: the CPU index is only for torch"
            continue
        if env.gpu:  # CUDA torch from PyPI
            assert "+" not in torch and CPU_INDEX not in env.options, f"{env.name}: GPU env with a CPU torch"
        else:  # never the multi-GB CUDA build on a CPU rule
            assert torch.endswith("+cpu") and CPU_INDEX in env.options, f"{env.name}: torch must be the +cpu build"
        vision = env.pins.get("torchvision")
        if vision:  # released in lockstep: torchvision 0.28.0 requires torch==2.13.0, same build flavour
            assert Version(vision).public == "0.28.0" and Version(torch).public == "2.13.0", env.name
            assert Version(vision).local == Version(torch).local, f"{env.name}: torch {torch} vs torchvision {vision}"
        assert not {"faiss-cpu", "faiss-gpu"} <= set(env.pins), f"{env.name}: faiss-cpu and faiss-gpu together"
        if env.backends & {"hf-vlm", "vllm"}:  # Qwen2-VL processors import torchvision even for images
            assert "torchvision" in env.pins, f"{env.name}: serves a VLM backend without torchvision"
        if env.name.startswith("evaluate"):
            assert ("faiss-gpu" if env.gpu else "faiss-cpu") in env.pins, env.name


def test_pins_agree_with_the_tested_venv_and_pyproject():
    declared = declared_requirements()
    problems = []
    for env in all_envs().values():
        for name, pinned in env.pins.items():
            try:
                installed = version(name)
            except PackageNotFoundError:
                installed = None
            if installed is not None:
                if Version(pinned).public != Version(installed).public and (env.name, name) not in KNOWN_DIFFERENCES:
                    problems.append(f"{env.name}: {name}=={pinned} but the tested venv has {installed}")
            elif name not in declared:
                problems.append(f"{env.name}: {name} is neither in the tested venv nor declared in pyproject.toml")
            for req in declared.get(name, []):
                if not req.specifier.contains(pinned, prereleases=True):
                    problems.append(f"{env.name}: {name}=={pinned} does not satisfy pyproject's {req}")
    # make's venv is installed with constraints.txt: each of its pins is what every env pins
    constraints = dict(line.split("==") for line in (ENV_DIR.parents[1] / "constraints.txt").read_text().splitlines()
                       if line.strip() and not line.startswith("#"))
    for env in all_envs().values():
        for name, pinned in env.pins.items():
            if name in constraints and Version(pinned).public != Version(constraints[name]).public \
                    and (env.name, name) not in KNOWN_DIFFERENCES:
                problems.append(f"{env.name}: {name}=={pinned} but constraints.txt has {constraints[name]}")
    unused = sorted(set(constraints) - {name for env in all_envs().values() for name in env.pins})
    if unused:
        problems.append(f"constraints.txt pins {unused}, which no env pins")
    assert not problems, "\n".join(problems)
    for (env, name), why in KNOWN_DIFFERENCES.items():
        assert name in all_envs()[env].pins, f"stale KNOWN_DIFFERENCES entry ({env}, {name}): {why}"


def test_rule_imports_are_covered_by_their_envs(rules):
    problems = []
    for rule in rules:
        assert rule.script is not None and rule.script.is_file(), f"rule {rule.name}: script not found"
        needed = script_imports(rule.script)
        for env_name in family(rule.env):
            env = all_envs()[env_name]
            for module in sorted(needed):
                dists = distributions_of(module)
                assert dists, f"rule {rule.name}: which distribution provides module {module!r}? (MODULE_DISTS)"
                if not dists & set(env.pins):
                    problems.append(f"rule {rule.name} imports {module} (from {', '.join(sorted(dists))}), "
                                    f"not pinned in {env_name}.yaml")
    assert not problems, "\n".join(problems)


def test_every_backend_is_served_by_an_env_that_has_its_packages(rules):
    backends = registered_backends()
    assert {b.name for b in backends} >= {"imagenet-tags", "hf-vlm", "vllm", "hf-seq2seq", "hf-clip", "hf-text"}
    problems = []
    for rule in rules:
        registry = RULE_REGISTRIES.get(rule.name)
        mine = {b.name: b for b in backends if b.registry == registry}
        envs = [all_envs()[n] for n in family(rule.env)]
        offered = set().union(*(e.backends for e in envs))
        if registry is None:
            continue
        problems += [f"rule {rule.name}: backend {b} is served by none of {family(rule.env)}"
                     for b in sorted(set(mine) - offered)]
        for env in envs:
            for name in sorted(env.backends & set(mine)):
                for module in sorted(backend_imports(mine[name])):
                    if not distributions_of(module) & set(env.pins):
                        problems.append(f"{env.name}.yaml offers backend {name}, which imports {module}: not pinned")
    # A claim that names no backend of the env's rules is a typo.
    for env in all_envs().values():
        rule_names = [r.name for r in rules if env.name in family(r.env)]
        known = {b.name for b in backends if b.registry in {RULE_REGISTRIES.get(r) for r in rule_names}}
        problems += [f"{env.name}.yaml: '# backends:' names unknown backend {b}" for b in sorted(env.backends - known)]
    assert not problems, "\n".join(problems)


def test_vllm_env_has_the_versions_vllm_requires():
    pins = all_envs()["describe-vllm"].pins
    assert pins["vllm"] == "0.32.0" and pins["torch"] == "2.13.0" and pins["torchvision"] == "0.28.0"
    assert Version("5.16.1") <= Version(pins["transformers"]) < Version("5.20.0")
    assert {"vllm", "torchvision"} <= set(all_envs()["describe-vllm"].pins)


# ---- pyproject / Makefile ----------------------------------------------------------------------------------

def test_faiss_cpu_and_gpu_are_never_installed_together():
    base = {canonicalize_name(Requirement(r).name) for r in PYPROJECT["project"]["dependencies"]}
    assert not base & {"faiss-cpu", "faiss-gpu"}, "faiss belongs in the cpu/gpu extras, not the base dependencies"
    assert "faiss-cpu" in extra_closure("cpu") and "faiss-gpu" not in extra_closure("cpu")
    for extra in ("gpu", "vllm"):
        assert "faiss-gpu" in extra_closure(extra) and "faiss-cpu" not in extra_closure(extra), extra
    assert "vllm" in extra_closure("vllm") and "torchvision" in extra_closure("gpu")
    # `make setup` installs the CPU flavour.
    install = re.findall(r'pip install[^\n]*-e "\.\[([a-z,]+)\]"', (REPO / "Makefile").read_text())
    assert install and all("cpu" in extras.split(",") for extras in install), install


def test_transformers_floor_has_the_dtype_argument():
    # from_pretrained(dtype=...) replaced torch_dtype in transformers 4.56.0 (4.55.4 still pops "torch_dtype").
    for req in declared_requirements()["transformers"]:
        floor = [s.version for s in req.specifier if s.operator == ">="]
        assert floor and Version(floor[0]) >= Version("4.56"), str(req)


# ---- the post-deploy script --------------------------------------------------------------------------------

@pytest.fixture
def stub_python(tmp_path):
    """A ``python`` first on PATH that records its arguments (the script's pip call) instead of installing."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.txt"
    stub = bin_dir / "python"
    stub.write_text(f'#!/bin/sh\necho "$*" >> {log}\n')
    stub.chmod(0o755)
    return bin_dir, log


def _post_deploy(cwd, bin_dir, **env):
    base = {k: v for k, v in os.environ.items() if k != "CCR_SOURCE"}
    return subprocess.run(["bash", str(ENV_DIR / "data.post-deploy.sh")], cwd=cwd, capture_output=True, text=True,
                          env={**base, "PATH": f"{bin_dir}:{os.environ['PATH']}", **env}, timeout=60)


def test_post_deploy_installs_from_ccr_source_or_the_clone(stub_python, tmp_path):
    bin_dir, log = stub_python
    elsewhere = tmp_path / "deployed"
    elsewhere.mkdir()
    # A deployed workflow (snakedeploy): the Snakefile / user says where the source is.
    assert _post_deploy(elsewhere, bin_dir, CCR_SOURCE=str(REPO)).returncode == 0
    assert f"-e {REPO}" in log.read_text().splitlines()[0] and "--no-deps" in log.read_text()
    log.unlink()
    assert _post_deploy(elsewhere, bin_dir, CCR_SOURCE="git+https://example.org/ccr@v0.1.0").returncode == 0
    first = log.read_text().splitlines()[0]
    assert first.endswith(" git+https://example.org/ccr@v0.1.0") and " -e " not in first
    log.unlink()
    # Snakemake run from a clone: the working directory is the source.
    assert _post_deploy(REPO, bin_dir).returncode == 0
    assert f"-e {REPO}" in log.read_text().splitlines()[0]
    log.unlink()
    # Neither: a clear error, nothing installed.
    proc = _post_deploy(elsewhere, bin_dir)
    assert proc.returncode == 1 and "Set CCR_SOURCE" in proc.stderr and not log.exists()
