# Config validation, result paths and input functions shared by every rule file.

import hashlib
import json
from types import SimpleNamespace

from snakemake.utils import validate

from ccr.features import encoder_key
from ccr.train.params import resolve_params
from ccr.train.presets import needs_teacher, needs_training


validate(config, "../schemas/config.schema.yaml")

DATASET = config["dataset"]["name"]
LANGS = sorted(config["languages"])
SEEDS = config.get("seeds", [0])
SYSTEMS = config.get("systems", {"zero-shot": {}, "full": {}})
RES = config.get("resources", {})
HEAVY_THREADS = RES.get("threads", 2)
RUN_NAME = config.get("run_name", "main")

IMAGE_ENC = config["features"]["image"]
TEXT_ENC = config["features"]["text"]
IMAGE_KEY = encoder_key(IMAGE_ENC["backend"], IMAGE_ENC.get("params", {}))
# with_tokens changes what the table holds, so it is part of the cache key
TEXT_KEY = encoder_key(
    TEXT_ENC["backend"], {**TEXT_ENC.get("params", {}), "with_tokens": TEXT_ENC.get("with_tokens", True)}
)
DESCRIBE = config.get("describe", {"backend": "imagenet-tags", "params": {}})

DATA_DIR = f"results/data/{DATASET}"
FEAT_DIR = f"results/features/{DATASET}"
RUNS_DIR = f"results/runs/{DATASET}"
REPORT_DIR = f"results/report/{DATASET}/{RUN_NAME}"

# Training data without machine translation is the same for every language (English captions,
# zero-shot transfer through the multilingual encoder): such languages share one trained model.
NO_MT = "no-mt"


wildcard_constraints:
    lang="[a-z]{2,3}(-[A-Za-z0-9]+)?",
    trainset=r"no-mt|[a-z]{2,3}(-[A-Za-z0-9]+)?\.[A-Za-z0-9_-]+",
    system="[A-Za-z0-9_.+-]+",
    seed=r"\d+",
    tkey="[0-9a-f]{10}",
    skey="[0-9a-f]{10}",


def stable_hash(obj) -> str:
    """Short content hash of a JSON-able object (names cache folders by their settings)."""
    return hashlib.sha1(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:10]


# ---- languages and systems ---------------------------------------------------------------------


def translate_spec(lang: str) -> dict:
    """A query set's entry of ``languages`` (its key may name a subset, e.g. ``de-task2``)."""
    return config["languages"][lang]


def language_code(lang: str) -> str:
    return translate_spec(lang).get("code", lang)


def trainset_of(lang: str) -> str:
    """Which training text a language's systems learn from: its MT (``<lang>.<backend>``) or none."""
    backend = translate_spec(lang)["backend"]
    return NO_MT if backend == "none" else f"{lang}.{backend}"


def trainset_lang(trainset: str) -> str | None:
    """The language key whose translations make ``trainset`` (None for no-mt)."""
    return None if trainset == NO_MT else trainset.rsplit(".", 1)[0]


def system_spec(system: str) -> SimpleNamespace:
    """A system's preset + overrides: its teacher and student params and which stages it trains.

    The student params name the preset (``systems.<name>.preset``, default: the system's name);
    config-wide ``train.*`` overrides come first, the system's own overrides last.
    """
    entry = SYSTEMS[system] or {}
    train = config.get("train", {})
    student = {"preset": entry.get("preset", system), **train.get("student", {}), **entry.get("student", {})}
    teacher = {**train.get("teacher", {}), **entry.get("teacher", {})}
    return SimpleNamespace(
        student=student,
        teacher=teacher,
        trains_student=needs_training(student),
        needs_teacher=needs_teacher(student),
    )


def uses_teacher(system: str, trainset: str) -> bool:
    # the teacher aligns English with its translation: nothing to learn without MT
    return trainset != NO_MT and system_spec(system).needs_teacher


def student_plan(system: str, trainset: str) -> SimpleNamespace:
    """The student params a system trains with on ``trainset``, and the key of that training.

    Without MT there is no translation to train on and no teacher to distil from, so such systems
    train with use_mt/use_teacher off; systems whose effective params agree (english-only, mt and
    mt+teacher without MT) share one trained student (the key hashes the effective params).
    """
    params = dict(system_spec(system).student)
    if trainset == NO_MT:
        params.update(use_mt=False, use_teacher=False)
    effective = resolve_params(params).to_dict()
    teacher = system_spec(system).teacher if uses_teacher(system, trainset) else None
    return SimpleNamespace(params=effective, key=stable_hash([effective, teacher]))


# ---- paths of each stage's outputs -------------------------------------------------------------


def translations_path(lang: str) -> str:
    return f"{DATA_DIR}/translations/{lang}.{translate_spec(lang)['backend']}.parquet"


def descriptions_path() -> str:
    return f"{DATA_DIR}/descriptions.{DESCRIBE['backend']}.parquet"


def image_features_path() -> str:
    return f"{FEAT_DIR}/images/{IMAGE_KEY}.parquet"


def text_features_path(source: str) -> str:
    return f"{FEAT_DIR}/texts/{TEXT_KEY}/{source}.parquet"


def teacher_dir(system: str, trainset: str, seed) -> str:
    """Teachers are shared by every system with the same teacher params."""
    return f"{RUNS_DIR}/teachers/{trainset}/{stable_hash(system_spec(system).teacher)}/seed{seed}"


def student_dir(system: str, trainset: str, seed) -> str:
    return f"{RUNS_DIR}/students/{trainset}/{student_plan(system, trainset).key}/seed{seed}"


def system_for_student(trainset: str, skey: str) -> str:
    """A system of the config whose student on ``trainset`` has key ``skey``."""
    for system in SYSTEMS:
        if system_spec(system).trains_student and student_plan(system, trainset).key == skey:
            return system
    raise ValueError(f"no system in the config trains a student with key '{skey}' on '{trainset}'")


def run_dir(system: str, lang: str, seed) -> str:
    """Where one (system, query language, seed) evaluation writes its metrics."""
    return f"{RUNS_DIR}/{system}/{lang}/seed{seed}"


# ---- input functions ---------------------------------------------------------------------------


def data_inputs(trainset: str) -> dict:
    """Everything ccr.train.TrainInputs points at, for one training set."""
    inputs = {
        "images": f"{DATA_DIR}/images.parquet",
        "captions": f"{DATA_DIR}/captions.parquet",
        "descriptions": descriptions_path(),
        "image_features": image_features_path(),
        "caption_features": text_features_path("captions"),
        "description_features": text_features_path(f"descriptions.{DESCRIBE['backend']}"),
    }
    lang = trainset_lang(trainset)
    if lang is not None:
        inputs["translations"] = translations_path(lang)
        inputs["translation_features"] = text_features_path(f"mt-{lang}.{translate_spec(lang)['backend']}")
    return inputs


def teacher_inputs(wildcards) -> dict:
    """The teacher sees English captions and their translations only."""
    inputs = data_inputs(wildcards.trainset)
    return {k: inputs[k] for k in ("images", "captions", "translations", "caption_features", "translation_features")}


def student_inputs(wildcards) -> dict:
    inputs = data_inputs(wildcards.trainset)
    system = system_for_student(wildcards.trainset, wildcards.skey)
    if uses_teacher(system, wildcards.trainset):
        inputs["teacher"] = f"{teacher_dir(system, wildcards.trainset, wildcards.seed)}/teacher.pt"
    return inputs


def evaluate_inputs(wildcards) -> dict:
    trainset = trainset_of(wildcards.lang)
    inputs = data_inputs(trainset)
    if system_spec(wildcards.system).trains_student:
        inputs["student"] = f"{student_dir(wildcards.system, trainset, wildcards.seed)}/student.pt"
    return inputs


def text_source_input(wildcards) -> str:
    """The captions table a text-feature source is embedded from (captions, one MT, descriptions)."""
    source = wildcards.source
    if source == "captions":
        return f"{DATA_DIR}/captions.parquet"
    if source.startswith("descriptions."):
        return f"{DATA_DIR}/{source}.parquet"
    if source.startswith("mt-"):
        return f"{DATA_DIR}/translations/{source[3:]}.parquet"
    raise ValueError(f"unknown text source '{source}'")


def teacher_params_for_key(tkey: str) -> dict:
    """The teacher params whose hash is ``tkey`` (systems with equal teacher params share one teacher)."""
    for system in SYSTEMS:
        spec = system_spec(system)
        if spec.needs_teacher and stable_hash(spec.teacher) == tkey:
            return spec.teacher
    raise ValueError(f"no system in the config has a teacher with key '{tkey}'")


# ---- targets -----------------------------------------------------------------------------------


def all_metrics() -> list[str]:
    return [f"{run_dir(system, lang, seed)}/metrics.parquet" for system in SYSTEMS for lang in LANGS for seed in SEEDS]


def history_tags() -> dict:
    """Every training history of the config -> the labels of its curves (the systems sharing it)."""
    systems_of = {}
    for system in SYSTEMS:
        for trainset in sorted({trainset_of(lang) for lang in LANGS}):
            for seed in SEEDS:
                if uses_teacher(system, trainset):
                    systems_of.setdefault((f"{teacher_dir(system, trainset, seed)}/history.parquet", trainset, seed), [])
                if system_spec(system).trains_student:
                    key = (f"{student_dir(system, trainset, seed)}/history.parquet", trainset, seed)
                    systems_of.setdefault(key, []).append(system)
    return {
        path: {"system": ", ".join(systems) or "teacher", "lang": trainset, "seed": int(seed)}
        for (path, trainset, seed), systems in sorted(systems_of.items())
    }


def all_histories() -> list[str]:
    return sorted(history_tags())


def mt_quality_outputs() -> list[str]:
    """BLEU/chrF files for the languages that have a parallel test set and a real MT backend."""
    return [
        f"{REPORT_DIR}/mt_quality.{lang}.json"
        for lang in config.get("mt_quality", {})
        if lang in config["languages"] and translate_spec(lang)["backend"] != "none"
    ]


def all_outputs() -> list[str]:
    return [f"{REPORT_DIR}/report.html", f"{REPORT_DIR}/metrics_table.md", *mt_quality_outputs()]
