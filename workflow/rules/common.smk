# Config validation, result paths and input functions shared by every rule file.

import hashlib
import json

from snakemake.utils import validate

from ccr.features import encoder_key
from ccr.train.presets import resolve_system


validate(config, "../schemas/config.schema.yaml")

DATASET = config["dataset"]["name"]
LANGS = sorted(config["languages"])
SEEDS = config.get("seeds", [0])
SYSTEMS = config.get("systems", {"zero-shot": {}, "full": {}})
RES = config.get("resources", {})
HEAVY_THREADS = RES.get("threads", 2)

IMAGE_ENC = config["features"]["image"]
TEXT_ENC = config["features"]["text"]
IMAGE_KEY = encoder_key(IMAGE_ENC["backend"], IMAGE_ENC.get("params", {}))
TEXT_KEY = encoder_key(TEXT_ENC["backend"], TEXT_ENC.get("params", {}))
DESCRIBE = config.get("describe", {"backend": "imagenet-tags", "params": {}})

DATA_DIR = f"results/data/{DATASET}"
FEAT_DIR = f"results/features/{DATASET}"
RUNS_DIR = f"results/runs/{DATASET}"
REPORT_DIR = f"results/report/{DATASET}"


wildcard_constraints:
    lang="[a-z]{2,3}(-[A-Za-z0-9]+)?",
    system="[A-Za-z0-9_.+-]+",
    seed=r"\d+",
    tkey="[0-9a-f]{10}",


def stable_hash(obj) -> str:
    """Short content hash of a JSON-able object (names cache folders by their settings)."""
    return hashlib.sha1(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:10]


def translate_spec(lang: str) -> dict:
    return config["languages"][lang]


def system_spec(system: str):
    """Resolved preset + overrides: which stages the system trains and with which params."""
    return resolve_system(system, SYSTEMS[system], config.get("train", {}))


# ---- paths of each stage's outputs -------------------------------------------------------------


def translations_path(lang: str) -> str:
    return f"{DATA_DIR}/translations/{lang}.{translate_spec(lang)['backend']}.parquet"


def descriptions_path() -> str:
    return f"{DATA_DIR}/descriptions.{DESCRIBE['backend']}.parquet"


def image_features_path() -> str:
    return f"{FEAT_DIR}/images/{IMAGE_KEY}.parquet"


def text_features_path(source: str) -> str:
    return f"{FEAT_DIR}/texts/{TEXT_KEY}/{source}.parquet"


def teacher_key(system: str) -> str:
    return stable_hash(system_spec(system).teacher)


def teacher_dir(system: str, lang: str, seed) -> str:
    return f"{RUNS_DIR}/teachers/{lang}/{teacher_key(system)}/seed{seed}"


def run_dir(system: str, lang: str, seed) -> str:
    return f"{RUNS_DIR}/{system}/{lang}/seed{seed}"


# ---- input functions ---------------------------------------------------------------------------


def text_sources(lang: str) -> dict:
    """The text feature tables a run in ``lang`` reads."""
    return {
        "caption_features": text_features_path("captions"),
        "translation_features": text_features_path(f"mt-{lang}.{translate_spec(lang)['backend']}"),
        "description_features": text_features_path(f"descriptions.{DESCRIBE['backend']}"),
    }


def train_inputs(wildcards) -> dict:
    """Everything ccr.train.TrainInputs points at, for the run's language."""
    return {
        "images": f"{DATA_DIR}/images.parquet",
        "captions": f"{DATA_DIR}/captions.parquet",
        "translations": translations_path(wildcards.lang),
        "descriptions": descriptions_path(),
        "image_features": image_features_path(),
        **text_sources(wildcards.lang),
    }


def teacher_inputs(wildcards) -> dict:
    """The teacher sees English captions and their translations only."""
    inputs = train_inputs(wildcards)
    return {k: inputs[k] for k in ("images", "captions", "translations", "caption_features", "translation_features")}


def student_inputs(wildcards) -> dict:
    inputs = train_inputs(wildcards)
    if system_spec(wildcards.system).needs_teacher:
        inputs["teacher"] = teacher_dir(wildcards.system, wildcards.lang, wildcards.seed) + "/teacher.pt"
    return inputs


def evaluate_inputs(wildcards) -> dict:
    inputs = train_inputs(wildcards)
    if system_spec(wildcards.system).trains_student:
        inputs["student"] = run_dir(wildcards.system, wildcards.lang, wildcards.seed) + "/student/student.pt"
    return inputs


def text_source_input(wildcards) -> str:
    """The caption_features table a text source is embedded from (captions, one language's MT, descriptions)."""
    source = wildcards.source
    if source == "captions":
        return f"{DATA_DIR}/captions.parquet"
    if source.startswith("descriptions."):
        return f"{DATA_DIR}/{source}.parquet"
    if source.startswith("mt-"):
        lang, _, backend = source[3:].partition(".")
        return f"{DATA_DIR}/translations/{lang}.{backend}.parquet"
    raise ValueError(f"unknown text source '{source}'")


def all_metrics() -> list[str]:
    return [
        f"{run_dir(system, lang, seed)}/metrics.parquet"
        for system in SYSTEMS
        for lang in LANGS
        for seed in SEEDS
    ]


def all_histories() -> list[str]:
    paths = []
    for system in SYSTEMS:
        spec = system_spec(system)
        for lang in LANGS:
            for seed in SEEDS:
                if spec.needs_teacher:
                    paths.append(f"{teacher_dir(system, lang, seed)}/history.parquet")
                if spec.trains_student:
                    paths.append(f"{run_dir(system, lang, seed)}/student/history.parquet")
    return sorted(set(paths))


def all_outputs() -> list[str]:
    return [f"{REPORT_DIR}/report.html", f"{REPORT_DIR}/metrics_table.md"]


def teacher_params_for_key(tkey: str) -> dict:
    """The teacher params whose hash is ``tkey`` (systems with equal teacher params share one teacher)."""
    for system in SYSTEMS:
        spec = system_spec(system)
        if spec.needs_teacher and stable_hash(spec.teacher) == tkey:
            return spec.teacher
    raise ValueError(f"no system in the config has a teacher with key '{tkey}'")
