"""Reading workflow/envs/*.yaml, the rules' conda: lines and the Python imports each rule needs (test helpers).

Shared by tests/test_envs.py (static checks) and tests/test_envs_resolve.py (registry resolution).
"""

from __future__ import annotations

import ast
import re
import sys
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
ENV_DIR = REPO / "workflow" / "envs"
RULES_DIR = REPO / "workflow" / "rules"
SRC = REPO / "src"
CPU_INDEX = "--extra-index-url https://download.pytorch.org/whl/cpu"


@dataclass
class CondaEnv:
    name: str
    path: Path
    data: dict
    pins: dict[str, str] = field(default_factory=dict)  # canonical name -> exact version
    options: list[str] = field(default_factory=list)  # pip option lines (--extra-index-url ...)
    backends: set[str] = field(default_factory=set)  # from the "# backends:" comment

    @property
    def gpu(self) -> bool:
        return "-" in self.name  # describe-gpu, describe-vllm, evaluate-gpu, ...

    def requirement_lines(self) -> list[str]:
        """The pip section as pip reads it (conda writes it to a requirements file)."""
        return [*self.options, *(f"{n}=={v}" for n, v in self.pins.items())]


def load_env(path: Path) -> CondaEnv:
    text = path.read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    env = CondaEnv(path.stem, path, data)
    claim = re.search(r"^# backends: (.*)$", text, re.M)
    if claim and claim.group(1).strip() != "-":
        env.backends = {b.strip() for b in claim.group(1).split(",") if b.strip()}
    pip = [d["pip"] for d in data.get("dependencies", []) if isinstance(d, dict) and "pip" in d]
    for line in pip[0] if pip else []:
        if line.startswith("-"):
            env.options.append(line)
            continue
        req = Requirement(line)
        specs = list(req.specifier)
        if len(specs) != 1 or specs[0].operator != "==" or "*" in specs[0].version:
            raise AssertionError(f"{path.name}: pip entry {line!r} must be an exact pin (name==version)")
        env.pins[canonicalize_name(req.name)] = specs[0].version
    return env


@cache
def all_envs() -> dict[str, CondaEnv]:
    return {p.stem: load_env(p) for p in sorted(ENV_DIR.glob("*.yaml"))}


# ---- rules -> script and env ------------------------------------------------------------------------------

@dataclass
class Rule:
    name: str
    smk: Path
    script: Path | None
    env: str | None  # env name (file stem) from the conda: line


_STRING = re.compile(r"""^\s*(?:f?["'])(.*?)["']\s*,?\s*$""")


def _env_name(conda_value: str, smk: Path) -> str:
    """The env file a conda: path names, resolved relative to the .smk file.

    ``../envs/x.yaml`` (catalog layout) resolves to workflow/envs; the older ``../../envs/x.yaml`` pointed at a
    top-level envs/ that moved to workflow/envs, so it is read as workflow/envs/x.yaml until the rules follow.
    """
    target = (smk.parent / conda_value).resolve()
    if not target.is_file() and conda_value.startswith("../../envs/"):
        target = ENV_DIR / Path(conda_value).name
    if not target.is_file():
        raise AssertionError(f"{smk.name}: conda: {conda_value!r} names no env file (resolved to {target})")
    if target.parent != ENV_DIR.resolve():
        raise AssertionError(f"{smk.name}: conda: {conda_value!r} is outside workflow/envs")
    return target.stem


def parse_rules() -> list[Rule]:
    rules: list[Rule] = []
    for smk in sorted(RULES_DIR.glob("*.smk")):
        lines = smk.read_text(encoding="utf-8").splitlines()
        current: Rule | None = None
        for i, line in enumerate(lines):
            head = re.match(r"^\s*(?:rule|checkpoint)\s+(\w+)\s*:", line)  # rules inside `if` blocks too
            if head:
                current = Rule(head.group(1), smk, None, None)
                rules.append(current)
                continue
            key = re.match(r"^\s+(conda|script):\s*(.*)$", line)
            if not (current and key):
                continue
            value = key.group(2).strip() or (lines[i + 1] if i + 1 < len(lines) else "")
            literal = _STRING.match(value)
            if not literal:
                continue  # a function (chosen at run time): the rule's env family is read from RULE_ENV below
            if key.group(1) == "conda":
                current.env = _env_name(literal.group(1), smk)
            else:
                current.script = (smk.parent / literal.group(1)).resolve()
    return rules


# ---- imports -----------------------------------------------------------------------------------------------
# What a rule (or a backend) needs at run time: the imports that run when its module is imported, plus those
# inside the functions/classes it actually uses, followed by name through ccr modules (re-exports included).
# Other functions of a reached module are not followed: importing ccr.features does not make a rule need
# every encoder's package.

DEFS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def _module_level(tree: ast.Module) -> list[ast.AST]:
    """Top-level statements that run at import (function and class bodies excluded, if/try blocks included)."""
    return [node for node in tree.body if not isinstance(node, DEFS)]


def ccr_module_file(module: str) -> Path | None:
    base = SRC.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@cache
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _import_nodes(nodes: list[ast.AST]) -> list[ast.Import | ast.ImportFrom]:
    return [n for top in nodes for n in ast.walk(top) if isinstance(n, (ast.Import, ast.ImportFrom))]


def closure(start: list[ast.AST], start_module: str | None = None) -> set[str]:
    """Third-party top-level modules needed to run the statements ``start`` (of ccr module ``start_module``)."""
    third: set[str] = set()
    todo: list[tuple[str, frozenset[str]]] = []
    seen: set[tuple[str, frozenset[str]]] = set()

    def visit(nodes: list[ast.AST], module: str | None) -> None:
        if module:  # importing a module imports the packages above it
            parts = module.split(".")
            todo.extend((".".join(parts[:i]), frozenset()) for i in range(1, len(parts)))
        for node in _import_nodes(nodes):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == "ccr":
                        todo.append((alias.name, frozenset()))
                    else:
                        third.add(alias.name.split(".")[0])
            elif node.level == 0 and node.module:
                if node.module.split(".")[0] != "ccr":
                    third.add(node.module.split(".")[0])
                    continue
                names = set()
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    if ccr_module_file(sub) is not None:
                        todo.append((sub, frozenset()))
                    else:
                        names.add(alias.name)
                todo.append((node.module, frozenset(names)))

    visit(start, start_module)
    while todo:
        module, names = todo.pop()
        if (module, names) in seen:
            continue
        seen.add((module, names))
        path = ccr_module_file(module)
        if path is None:
            continue
        tree = _tree(path)
        defs = [n for n in tree.body if isinstance(n, DEFS) and n.name in names]
        visit(_module_level(tree) + defs, module)
        # A name this module only re-exports: follow it to where it is defined.
        defined = {n.name for n in tree.body if isinstance(n, DEFS)}
        for node in _import_nodes(_module_level(tree)):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("ccr"):
                wanted = {a.name for a in node.names} & (names - defined)
                if wanted:
                    todo.append((node.module, frozenset(wanted)))
    return {t for t in third if t not in sys.stdlib_module_names and t not in ("__future__", "snakemake")}


def script_imports(script: Path) -> set[str]:
    """Third-party modules a workflow script needs (all of it runs)."""
    return closure(list(_tree(script).body))


# ---- backends ----------------------------------------------------------------------------------------------

@dataclass
class Backend:
    registry: str
    name: str
    module: str
    attr: str


def registered_backends() -> list[Backend]:
    """Every ``REGISTRY.register("name", factory)`` call in src/ccr."""
    out: list[Backend] = []
    for path in sorted(SRC.rglob("*.py")):
        module = ".".join(path.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")
        for node in ast.walk(_tree(path)):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "register" and isinstance(node.func.value, ast.Name)
                    and len(node.args) == 2 and isinstance(node.args[0], ast.Constant)):
                continue
            target = node.args[1]
            if isinstance(target, ast.Constant) and isinstance(target.value, str):
                mod, _, attr = target.value.partition(":")
            elif isinstance(target, ast.Name):
                mod, attr = module, target.id
            else:
                continue
            out.append(Backend(node.func.value.id, node.args[0].value, mod, attr))
    return out


def backend_imports(backend: Backend) -> set[str]:
    """Third-party modules a backend needs: its module at import, and its factory (class or function) run."""
    path = ccr_module_file(backend.module)
    assert path is not None, f"backend {backend.name}: module {backend.module} not found"
    tree = _tree(path)
    defs = [n for n in tree.body if isinstance(n, DEFS) and n.name == backend.attr]
    assert defs, f"backend {backend.name}: {backend.module} defines no {backend.attr}"
    return closure(_module_level(tree) + defs, backend.module)


# ---- module -> distribution ----------------------------------------------------------------------------------

# Modules of packages that the tested venv may not have (GPU-only) or that several distributions provide.
MODULE_DISTS: dict[str, set[str]] = {
    "faiss": {"faiss-cpu", "faiss-gpu"},
    "vllm": {"vllm"},
    "torchvision": {"torchvision"},
    "sentencepiece": {"sentencepiece"},
    "pycountry": {"pycountry"},
    "accelerate": {"accelerate"},
    "huggingface_hub": {"huggingface-hub"},
}


@cache
def _installed_modules() -> dict[str, list[str]]:
    from importlib.metadata import packages_distributions

    return packages_distributions()


def distributions_of(module: str) -> set[str]:
    """Canonical names of the distributions that provide top-level ``module``."""
    found = {canonicalize_name(d) for d in _installed_modules().get(module, [])}
    return found | MODULE_DISTS.get(module, set())
