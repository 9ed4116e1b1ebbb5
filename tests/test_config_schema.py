"""The config schema: train params mirror ccr.params, backend params mirror the backends' constructors,
and the shipped configs validate."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import pytest
import yaml
from conftest import REPO
from snakemake.utils import validate

from ccr.params import PRESETS, StudentParams, TeacherParams, params_schema

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
DEFS = yaml.safe_load(SCHEMA.read_text())["$defs"]


def test_train_params_schema_matches_the_dataclasses():
    assert DEFS["teacher_params"]["properties"] == params_schema(TeacherParams)
    student = dict(DEFS["student_params"]["properties"])
    assert student.pop("preset")["enum"] == list(PRESETS)
    assert student == params_schema(StudentParams)
    assert "stop_after_epochs" not in student  # a test hook, not a user param


def test_querybank_schema_matches_the_dataclass():
    import dataclasses

    from ccr.params import QuerybankParams

    assert set(DEFS["querybank_params"]["properties"]) == {f.name for f in dataclasses.fields(QuerybankParams)}


def test_centering_schema_matches_the_dataclass():
    import dataclasses

    from ccr.params import CenteringParams

    assert set(DEFS["centering_params"]["properties"]) == {f.name for f in dataclasses.fields(CenteringParams)}


def _registries() -> dict[str, tuple[str, object]]:
    from ccr.data.prepare import DATASETS
    from ccr.describe import DESCRIBERS
    from ccr.features import IMAGE_ENCODERS, TEXT_ENCODERS
    from ccr.translate import TRANSLATORS

    return {"translate": ("language", TRANSLATORS), "describe": ("describe", DESCRIBERS),
            "image": ("image_encoder", IMAGE_ENCODERS), "text": ("text_encoder", TEXT_ENCODERS),
            "dataset": ("", DATASETS)}


def _factory(registry, name):
    factory = registry._factories[name]
    if isinstance(factory, str):
        module, _, attr = factory.partition(":")
        factory = getattr(importlib.import_module(module), attr)
    return factory


JSON_OF = {"str": "string", "int": "integer", "float": "number", "bool": "boolean", "None": "null",
           "Path": "string", "list": "array", "Sequence": "array", "dict": "object", "Mapping": "object",
           "Any": None}


def _json_types(annotation: str) -> set[str]:
    """The JSON types an annotation (as a string) admits, e.g. 'int | None' -> {integer, null}."""
    parts, depth, current = [], 0, ""
    for ch in annotation.replace("typing.", ""):  # split on top-level "|" only
        depth += {"[": 1, "]": -1}.get(ch, 0)
        if ch == "|" and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    out = set()
    for part in [*parts, current]:
        base = part.strip().split("[")[0]
        kind = JSON_OF[base]
        if kind:
            out.add(kind)
        if kind == "integer":
            out.add("number")  # JSON Schema "number" admits integers
    return out


@pytest.mark.parametrize("stage", ["translate", "describe", "image", "text", "dataset"])
def test_backend_params_schemas_match_the_backends(stage):
    """Every backend the library registers is in the schema's enum, with exactly its constructor's params."""
    holder, registry = _registries()[stage]
    if stage == "dataset":
        enum = yaml.safe_load(SCHEMA.read_text())["properties"]["dataset"]["properties"]["source"]["enum"]
    else:
        enum = DEFS[holder]["properties"]["backend"]["enum"]
    names = set(registry.names()) | ({"none"} if stage == "describe" else set()) | (
        {"precomputed"} if stage == "image" else set())
    assert set(enum) == names
    prefix = {"translate": "translate", "describe": "describe", "image": "image", "text": "text",
              "dataset": "dataset"}[stage]
    for name in sorted(names - {"none", "precomputed"}):
        props = DEFS[f"{prefix}_{name}"]["properties"]
        params = {k: v for k, v in inspect.signature(_factory(registry, name)).parameters.items()
                  if not (stage == "dataset" and k in ("out_dir", "seed"))  # set by the workflow
                  and v.kind is not inspect.Parameter.VAR_KEYWORD}
        assert set(props) == set(params), f"{stage} backend '{name}'"
        required = set(DEFS[f"{prefix}_{name}"].get("required", []))
        assert required == {k for k, v in params.items() if v.default is inspect.Parameter.empty}, name
        for key, param in params.items():
            schema_types = props[key].get("type")
            if schema_types is None or param.annotation is inspect.Parameter.empty:
                continue
            schema_types = {schema_types} if isinstance(schema_types, str) else set(schema_types)
            annotation = param.annotation if isinstance(param.annotation, str) else str(param.annotation)
            assert schema_types <= _json_types(annotation) | {"integer"} and schema_types & _json_types(annotation), (
                f"{stage} backend '{name}' param '{key}': schema {schema_types} vs annotation {annotation}")


@pytest.mark.parametrize("path", sorted((REPO / "config").glob("*.yaml")) + sorted((REPO / ".test").glob("*/config.yaml")),
                         ids=lambda p: str(Path(p).relative_to(REPO)))
def test_shipped_configs_validate(path):
    validate(yaml.safe_load(Path(path).read_text()), str(SCHEMA))


def _tiny() -> dict:
    return yaml.safe_load((REPO / ".test/config/config.yaml").read_text())


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["train"]["student"].update(epochz=3), "epochz"),
    (lambda c: c["train"]["teacher"].update(epochs=0), "0 is less than the minimum of 1"),
    (lambda c: c["train"]["teacher"].update(n_slots=2), "n_slots"),
    (lambda c: c["languages"]["fr"].update(backend="apertum"), "'apertum' is not one of"),
    (lambda c: c["describe"]["params"].update(veiws=3), "veiws"),
    (lambda c: c["describe"]["params"].update(views=9), "9 is greater than the maximum of 4"),
    (lambda c: c["features"]["image"]["params"].update(hflip="yes"), "'yes' is not of type 'boolean'"),
    (lambda c: c["languages"]["fr"].update(backend="hf-seq2seq"), "'model' is a required property"),
    (lambda c: c["dataset"]["params"].update(n_trian=3), "n_trian"),
    (lambda c: c.setdefault("evaluate", {}).update(querybank={"texts": 100, "beta": 0}), "less than or equal to the minimum of 0"),
    (lambda c: c.setdefault("evaluate", {}).update(querybank={"sise": 100}), "sise"),
    (lambda c: c["systems"].update(qb={"preset": "full", "querybank": {"images": -1}}), "-1 is less than the minimum of 0"),
    (lambda c: c.setdefault("evaluate", {}).update(centering={"alpah": 1}), "alpah"),
    (lambda c: c["systems"].update(c={"preset": "full", "languages": {"fr": {"centering": {"alpha": 3}}}}),
     "3 is greater than the maximum of 2"),
    (lambda c: c["dataset"]["params"].update(reference_splits=["train"]), "'train' is not one of"),
])
def test_config_errors_are_refused_naming_the_key(edit, message):
    config = _tiny()
    edit(config)
    with pytest.raises(Exception, match=message):
        validate(config, str(SCHEMA))

