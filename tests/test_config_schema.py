"""The config schema: train params mirror ccr.train.TrainParams; the shipped configs validate."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest
import yaml
from conftest import REPO
from snakemake.utils import validate

from ccr.train.params import TrainParams
from ccr.train.presets import PRESETS

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
JSON_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string", int | None: ["integer", "null"]}


def test_train_params_schema_matches_the_dataclass():
    props = yaml.safe_load(SCHEMA.read_text())["$defs"]["train_params"]["properties"]
    hints = typing.get_type_hints(TrainParams)
    fields = {f.name for f in dataclasses.fields(TrainParams)}
    assert set(props) == fields | {"preset"}
    for name in fields:
        assert props[name]["type"] == JSON_TYPES[hints[name]], name
    assert props["preset"]["enum"] == list(PRESETS)


@pytest.mark.parametrize("path", sorted((REPO / "config").glob("*.yaml")) + [REPO / ".test/config/config.yaml"],
                         ids=lambda p: str(Path(p).relative_to(REPO)))
def test_shipped_configs_validate(path):
    validate(yaml.safe_load(Path(path).read_text()), str(SCHEMA))


def test_unknown_train_param_is_named():
    config = yaml.safe_load((REPO / ".test/config/config.yaml").read_text())
    config["train"]["student"]["epochz"] = 3
    with pytest.raises(Exception, match="epochz"):
        validate(config, str(SCHEMA))
