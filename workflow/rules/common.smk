# Config validation, result paths and input functions shared by every rule file.
#
# Every output path is keyed by what made it: the dataset folder by the dataset's settings, each
# stage's file by its backend and params, trainings and evaluations by a hash chained from every
# upstream key. Two configs therefore write the same file only when they would compute the same
# thing, and a change anywhere upstream gives new paths (or, for in-place data edits, a rerun whose
# content fingerprints make resumes start afresh; see ccr.io). Keys hash canonical (sorted) JSON,
# so the order of keys in a config never matters.
#
# Parse time needs only the standard library: the helpers come from the library's torch-free
# modules (ccr.keys, ccr.params), imported from this workflow's own source tree.

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from snakemake.utils import validate

SRC_DIR = Path(workflow.current_basedir).parents[1] / "src"
if SRC_DIR.is_dir():
    sys.path.insert(0, str(SRC_DIR))
    # where the rules' conda envs install the library from (workflow/envs/*.post-deploy.sh), also
    # when the workflow is used as a module from another folder
    os.environ.setdefault("CCR_SOURCE", str(SRC_DIR.parent))

from ccr import jobs
from ccr.keys import backend_key, canonical, content_stamp, encoder_key, stable_hash
from ccr.params import (
    CenteringParams,
    QuerybankParams,
    resolve_student_params,
    resolve_teacher_params,
)

validate(config, "../schemas/config.schema.yaml")

DATASET = config["dataset"]["name"]
LANGS = sorted(config["languages"])
SEEDS = config["seeds"]
SYSTEMS = {name: entry or {} for name, entry in config["systems"].items()}


def ensembles_of(system: str) -> list[tuple[str, list]]:
    """(config path, members) of every ensemble of ``system``: its own and its query sets'."""
    entry = SYSTEMS[system]
    return [(f"systems.{system}", entry.get("ensemble") or [])] + [
        (f"systems.{system}.languages.{lang}", override.get("ensemble") or [])
        for lang, override in entry.get("languages", {}).items()
    ]


for _system, _entry in SYSTEMS.items():
    for _lang, _override in _entry.get("languages", {}).items():
        if _lang not in LANGS:
            raise ValueError(
                f"config systems.{_system}.languages.{_lang}: not a query set of 'languages' "
                f"({', '.join(LANGS)})"
            )
        if "train" in _override.get("student", {}):
            raise ValueError(
                f"config systems.{_system}.languages.{_lang}.student.train: whether a system trains "
                "is the system's, not a query set's"
            )
    for _where, _members in ensembles_of(_system):
        for _i, _member in enumerate(_members):
            if "train" in _member.get("student", {}):
                raise ValueError(
                    f"config {_where}.ensemble[{_i}].student.train: whether a system trains is the "
                    "system's, not an ensemble member's"
                )
RES = config["resources"]
RUN_NAME = config["run_name"]

# A resources.stages entry that its job would not read is refused, not ignored. threads: only where
# the job's thread count is the config's (the others run on one thread); gpu: only where a backend may
# run on one (a gallery and an image bank follow resources.stages.evaluate.gpu).
STAGE_KEY_RULES = {
    "threads": {
        "describe_images",
        "embed_images",
        "embed_texts",
        "train_teacher",
        "train_student",
    },
    "gpu": {
        "describe_images",
        "embed_images",
        "embed_texts",
        "translate_captions",
        "train_teacher",
        "train_student",
        "evaluate",
    },
}
for _stage, _override in RES["stages"].items():
    for _key, _taking in STAGE_KEY_RULES.items():
        if _key in _override and _stage not in _taking:
            raise ValueError(
                f"config resources.stages.{_stage}.{_key}: {_stage} does not take a {_key} setting "
                f"(those that do: {', '.join(sorted(_taking))})"
            )

# How the heavy stages are cut into jobs: each part is its own job, gathered into the same table as
# an unscattered run (tested byte for byte), so like resources it is not part of the config hash.
PARTS = config["scatter"]


scattergather:
    translate=PARTS["translate"],
    describe=PARTS["describe"],
    embed_images=PARTS["embed_images"],
    embed_texts=PARTS["embed_texts"],


# The run's identity in metrics rows: its config (without scheduling and scattering) and the code.
CONFIG_HASH = stable_hash(
    {k: v for k, v in config.items() if k not in ("resources", "scatter")}
)


def code_version() -> str:
    """The workflow's git commit (+ '-dirty' with uncommitted changes), else the library's version."""
    root = Path(workflow.current_basedir).parents[1]
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        import ccr

        return f"ccr-{ccr.__version__}"


CODE_VERSION = code_version()


# ---- what each stage is made of (keys) ---------------------------------------------------------

DATASET_SPEC = canonical(
    {
        "source": config["dataset"]["source"],
        "params": config["dataset"]["params"],
        "seed": config["seed"],
    }
)
DATA_KEY = stable_hash(DATASET_SPEC)
DS = f"{DATASET}-{DATA_KEY}"

IMAGE_ENC = canonical(config["features"]["image"])
IMAGE_KEY = encoder_key(IMAGE_ENC["backend"], IMAGE_ENC["params"])
DESCRIBE = canonical(config["describe"])
# a describer that reads the image features (knn-captions, imagenet-tags by default) describes
# differently with other features
DESCRIBE_NEEDS = jobs.describer_needs(DESCRIBE["backend"], DESCRIBE["params"])
jobs.check_describer(DESCRIBE, IMAGE_ENC)
DESC_KEY = backend_key(
    DESCRIBE["backend"],
    {
        **DESCRIBE["params"],
        **({"image_features": IMAGE_KEY} if "image_features" in DESCRIBE_NEEDS else {}),
    },
)
TEXT_ENC = canonical(config["features"]["text"])
# with_tokens changes what the tables hold, so it is part of the cache key
TEXT_KEY = encoder_key(
    TEXT_ENC["backend"], {**TEXT_ENC["params"], "with_tokens": TEXT_ENC["with_tokens"]}
)
# the descriptions' text features, named by their role too (query: knn-captions reusing captions)
DESC_SOURCE = f"descriptions.{DESC_KEY}" + (
    ".query" if TEXT_ENC["description_role"] == "query" else ""
)

DATA_DIR = f"results/data/{DS}"
FEAT_DIR = f"results/features/{DS}"
RUNS_DIR = f"results/runs/{DS}"
REPORT_DIR = f"results/report/{DATASET}/{RUN_NAME}-{CONFIG_HASH}"

# The languages the queries are in: human test captions in other languages are never embedded.
QUERY_LANGS = sorted({config["languages"][lang].get("code", lang) for lang in LANGS})

# Training data without machine translation is the same for every language (English captions,
# zero-shot transfer through the multilingual encoder): such languages share one trained model.
NO_MT = "no-mt"


def source_stamp() -> str:
    """The content of every file that a path-valued dataset param names (ccr.keys.content_stamp): reruns
    prepare_dataset when the source data changes in place, and only then; a fresh copy of the same
    data (new mtimes) plans nothing. Digests are cached under .snakemake/ by size, mtime and inode.
    """
    paths = []

    def visit(value):
        if isinstance(value, dict):
            for v in value.values():
                visit(v)
        elif isinstance(value, list):
            for v in value:
                visit(v)
        elif isinstance(value, str) and os.path.exists(value):
            paths.append(value)

    visit(config["dataset"]["params"])
    return content_stamp(
        paths, cache=Path(".snakemake") / "ccr" / "source-digests.json"
    )


wildcard_constraints:
    code="[a-z]{2,3}",
    trkey="[A-Za-z0-9_.-]+-[0-9a-f]{8}",
    trainset=r"no-mt|(?:[a-z]{2,3}|multi)\.[A-Za-z0-9_.-]+-[0-9a-f]{8}",
    seed=r"\d+",
    tkey="[0-9a-f]{10}",
    skey="[0-9a-f]{10}",
    ekey="[0-9a-f]{10}",
    gkey="[0-9a-f]{10}",
    bkey="[0-9a-f]{10}",
    source=r"[^/]+",
    scatteritem=r"\d+-of-\d+",


# ---- languages and systems ---------------------------------------------------------------------


def translate_spec(lang: str) -> dict:
    """A query set's entry of ``languages`` (its key may name a subset, e.g. ``de-task2``)."""
    return canonical(config["languages"][lang])


def language_code(lang: str) -> str:
    return translate_spec(lang).get("code", lang)


def translation_key(lang: str) -> str:
    spec = translate_spec(lang)
    return backend_key(spec["backend"], spec["params"])


MULTI = (
    "multi"  # the "code" of the MT of several languages together (train.text: all-mt)
)


# Back-translated English paraphrases of the training captions (NRCCR), from every MT language.
BACKTRANSLATE = config["train"]["backtranslate"]
if BACKTRANSLATE:
    for _lang in LANGS:
        if config["languages"][_lang]["backend"] not in ("apertium", "none"):
            raise ValueError(
                f"train.backtranslate: languages.{_lang} uses backend "
                f"'{config['languages'][_lang]['backend']}'; back-translation goes through apertium only"
            )


def mt_languages() -> list[str]:
    """The query sets whose translate backend writes MT (not ``none``)."""
    return [lang for lang in LANGS if translate_spec(lang)["backend"] != "none"]


def trainset_of(lang: str) -> str:
    """Which training text a language's systems learn from: its MT (``<code>.<translation key>``), the
    MT of every language together (``multi.mt-<hash>``, with ``train.text: all-mt``), or none.
    """
    if config["train"]["text"] == "all-mt":
        parts = sorted({(language_code(l), translation_key(l)) for l in mt_languages()})
        return f"{MULTI}.mt-{stable_hash(parts, 8)}" if parts else NO_MT
    if translate_spec(lang)["backend"] == "none":
        return NO_MT
    return f"{language_code(lang)}.{translation_key(lang)}"


def proxy_spec(lang: str) -> dict | None:
    """A query set's ``proxy``: MT into a related language, for students with ``proxy_mt: true``."""
    return translate_spec(lang).get("proxy")


def proxy_key(lang: str) -> str:
    spec = proxy_spec(lang)
    return backend_key(spec["backend"], spec["params"])


def proxy_translations_path(lang: str) -> str:
    return (
        f"{DATA_DIR}/translations/{proxy_spec(lang)['code']}/{proxy_key(lang)}.parquet"
    )


# The proxy MT of every query set that has one, combined into one table (like train.text: all-mt's), or
# None: its trainset-like name "multi.mt-<hash>" keys its text features and the students that read it.
PROXY_PARTS = sorted(
    {(proxy_spec(lang)["code"], proxy_key(lang)) for lang in LANGS if proxy_spec(lang)}
)
PROXY_SET = f"{MULTI}.mt-{stable_hash(PROXY_PARTS, 8)}" if PROXY_PARTS else None

# (code, translation key) -> the languages entry that makes it (query sets of one code share it), less
# what only picks the queries (and the proxy, a translation of its own): query sets that share an MT
# give its job the same params
QUERY_ONLY = ("code", "query_pattern", "proxy")
TRANSLATIONS = {
    (language_code(lang), translation_key(lang)): {
        k: v for k, v in translate_spec(lang).items() if k not in QUERY_ONLY
    }
    for lang in LANGS
}
TRANSLATIONS.update(
    {
        (proxy_spec(lang)["code"], proxy_key(lang)): {
            k: v for k, v in proxy_spec(lang).items() if k != "code"
        }
        for lang in LANGS
        if proxy_spec(lang)
    }
)


def ensemble_of(system: str, lang: str) -> list[tuple[dict, float]]:
    """The students that answer query set ``lang`` of ``system``, each as (its student overrides,
    weight): the query set's ``ensemble``, else the system's, else the one student with weight 1.

    Several students answer by score fusion: an image-text score is the weighted sum of the members'
    scores (ccr.train.EnsembleRetriever); each member is an ordinary training of its own params.
    """
    entry = SYSTEMS[system]
    members = (
        entry.get("languages", {}).get(lang, {}).get("ensemble")
        or entry.get("ensemble")
        or [{"weight": 1.0}]
    )
    # weights are relative: 3:1 is 0.75:0.25 (and keyed so)
    total = sum(float(m["weight"]) for m in members)
    return [(m.get("student", {}), float(m["weight"]) / total) for m in members]


def system_spec(
    system: str, lang: str | None = None, member: dict | None = None
) -> SimpleNamespace:
    """A system's student params (preset + overrides) for query set ``lang``, and its teacher params.

    The student params name the preset (``systems.<name>.preset``, default: the system's name);
    config-wide ``train.*`` overrides come first, then the system's own, then its overrides for the
    query set (``systems.<name>.languages.<lang>.student``), which that query set's student alone
    reads, then an ensemble member's (``member``, see ensemble_of).
    """
    entry = SYSTEMS[system]
    train = config["train"]
    per_query_set = entry.get("languages", {}).get(lang, {}) if lang else {}
    student = {
        "preset": entry.get("preset", system),
        **train["student"],
        **entry.get("student", {}),
        **per_query_set.get("student", {}),
        **(member or {}),
    }
    teacher = {**train["teacher"], **entry.get("teacher", {})}
    resolved = resolve_student_params(student)
    return SimpleNamespace(
        student=student,
        teacher=teacher,
        trains_student=resolved.train,
        needs_teacher=resolved.needs_teacher,
    )


def uses_teacher(
    system: str, trainset: str, lang: str | None = None, member: dict | None = None
) -> bool:
    # the teacher aligns English with its translation: nothing to learn without MT
    return trainset != NO_MT and system_spec(system, lang, member).needs_teacher


def teacher_plan(system: str, trainset: str) -> SimpleNamespace:
    """The teacher params a system's student distils from, and the key of that training."""
    params = resolve_teacher_params(system_spec(system).teacher)
    return SimpleNamespace(
        params=canonical(params.to_dict()),
        key=stable_hash([params.numeric_dict(), TEXT_KEY, trainset]),
    )


def student_plan(
    system: str, trainset: str, lang: str | None = None, member: dict | None = None
) -> SimpleNamespace:
    """The student params a system trains with on ``trainset`` for query set ``lang``, the training
    text it really reads (``trainset``, or no-mt when it reads no translation), and the key of that
    training.

    Without MT there is no translation to train on and no teacher to distil from, so such systems
    train with use_mt/use_teacher off. Systems whose effective params agree (english-only, mt and
    mt+teacher without MT; english-only for every language) share one trained student: the key
    hashes the effective params and every upstream key the training reads.
    """
    params = dict(system_spec(system, lang, member).student)
    where = f"config systems.{system}" + (f" (query set {lang})" if lang else "")
    if params.get("proxy_mt"):
        if PROXY_SET is None:
            raise ValueError(
                f"{where}: student param proxy_mt is true but no query set has a proxy (languages.<set>.proxy)"
            )
        if trainset == NO_MT:
            raise ValueError(
                f"{where}: student param proxy_mt needs MT to add the proxy MT to; this student trains without "
                "(no MT for its query set: train.text all-mt trains every query set on the MT)"
            )
        if BACKTRANSLATE:
            raise ValueError(
                f"{where}: student param proxy_mt and train.backtranslate are not combined; use one of them"
            )
    if trainset == NO_MT or not resolve_student_params(params).use_mt:
        trainset = NO_MT
        params.update(use_mt=False, use_teacher=False)
    resolved = resolve_student_params(params)
    teacher = (
        teacher_plan(system, trainset).key
        if uses_teacher(system, trainset, lang, member)
        else None
    )
    upstream = [IMAGE_KEY, TEXT_KEY, DESC_KEY if resolved.use_slots else None]
    if BACKTRANSLATE:
        upstream.append("backtranslate")
    if resolved.proxy_mt:
        upstream.append(PROXY_SET)
    return SimpleNamespace(
        params=canonical(resolved.to_dict()),
        trainset=trainset,
        key=stable_hash([resolved.numeric_dict(), teacher, trainset, upstream]),
        use_slots=resolved.use_slots,
        proxy=resolved.proxy_mt,
    )


# ---- paths of each stage's outputs -------------------------------------------------------------


def translations_path(lang: str) -> str:
    return (
        f"{DATA_DIR}/translations/{language_code(lang)}/{translation_key(lang)}.parquet"
    )


def descriptions_path() -> str:
    return f"{DATA_DIR}/descriptions/{DESC_KEY}.parquet"


def image_features_path() -> str:
    return f"{FEAT_DIR}/images/{IMAGE_KEY}.parquet"


def text_features_path(source: str) -> str:
    return f"{FEAT_DIR}/texts/{TEXT_KEY}/{source}.parquet"


def translation_features_path(lang: str) -> str:
    return text_features_path(f"mt-{language_code(lang)}.{translation_key(lang)}")


def description_features_path() -> str:
    return text_features_path(DESC_SOURCE)


def teacher_dir(system: str, trainset: str, seed) -> str:
    """Teachers are shared by every system with the same teacher params."""
    return f"{RUNS_DIR}/teachers/{trainset}/{teacher_plan(system, trainset).key}/seed{seed}"


def student_dir(
    system: str,
    trainset: str,
    seed,
    lang: str | None = None,
    member: dict | None = None,
) -> str:
    plan = student_plan(system, trainset, lang, member)
    return f"{RUNS_DIR}/students/{plan.trainset}/{plan.key}/seed{seed}"


def querybank_of(system: str) -> dict:
    """The querybank normalisation a system is evaluated with: evaluate.querybank, then the system's
    own overrides; {} when off (validated here, at parse time, before the first job)."""
    values = {**config["evaluate"]["querybank"], **SYSTEMS[system].get("querybank", {})}
    try:
        params = QuerybankParams.from_dict(values)
    except ValueError as err:
        raise ValueError(
            f"config systems.{system} / evaluate.querybank: {err}"
        ) from None
    return canonical(vars(params)) if params.enabled else {}


def centering_of(system: str, lang: str) -> dict:
    """The language centering a query set of a system is evaluated with: evaluate.centering, then the
    system's ``centering``, then its query set's; {} when off (validated here, before the first job).
    """
    entry = SYSTEMS[system]
    values = {
        **config["evaluate"].get("centering", {}),
        **entry.get("centering", {}),
        **entry.get("languages", {}).get(lang, {}).get("centering", {}),
    }
    try:
        params = CenteringParams.from_dict(values)
    except ValueError as err:
        raise ValueError(
            f"config systems.{system} (query set {lang}) / evaluate.centering: {err}"
        ) from None
    return canonical(vars(params)) if params.enabled else {}


def eval_plan(system: str, lang: str, seed) -> SimpleNamespace:
    """What one (system, query set, seed) evaluation computes, and its key.

    Evaluations are shared: the zero-shot system's does not depend on the seed, and systems that
    share a trained student (and querybank) share its evaluation. The querybank is hashed only when
    on, so turning it on adds evaluations and leaves every existing one where it was. An ensemble
    (ensemble_of) is keyed by its members and weights; ``student`` and ``params`` are then lists and
    ``weights`` holds the weights (None for one student).
    """
    trainset = trainset_of(lang)
    spec = translate_spec(lang)
    query = {
        "code": language_code(lang),
        "pattern": spec.get("query_pattern"),
        "ks": config["evaluate"]["ks"],
        "split": config["evaluate"]["split"],
    }
    members = ensemble_of(system, lang)
    plans = [student_plan(system, trainset, lang, member) for member, _ in members]
    plan, weights = plans[0], None
    trains = system_spec(system).trains_student
    if trains and len(members) > 1:
        weights = [weight for _, weight in members]
        what = {
            "ensemble": [
                {"student": p.key, "trainset": p.trainset, "weight": w}
                for p, w in zip(plans, weights)
            ],
            "seed": int(seed),
        }
        student = [
            f"{student_dir(system, trainset, seed, lang, member)}/student.pt"
            for member, _ in members
        ]
        # the data a member reads to embed (its MT, if any, is only a fallback for caption ids)
        trainset = next((p.trainset for p in plans if p.trainset != NO_MT), NO_MT)
    elif trains:
        trainset = plan.trainset
        what = {"student": plan.key, "trainset": trainset, "seed": int(seed)}
        student = f"{student_dir(system, trainset, seed, lang)}/student.pt"
    else:
        what = {"zero-shot": [DESC_KEY, TEXT_KEY]}
        student = None
    querybank = querybank_of(system)
    if querybank:
        what["querybank"] = querybank
    # the images' side is the same with or without centering (it moves query texts only)
    gallery = stable_hash([what, query["split"]])
    centering = centering_of(system, lang)
    if centering:
        what["centering"] = centering
    key = stable_hash([what, query])
    return SimpleNamespace(
        key=key,
        gallery=gallery,
        querybank=querybank,
        centering=centering,
        lang=lang,
        trainset=trainset,
        query=query,
        student=student,
        params=[p.params for p in plans] if weights else plan.params,
        weights=weights,
        use_slots=student is None or any(p.use_slots for p in plans),
    )


def gallery_path(system: str, lang: str, seed) -> str:
    """The evaluated split's images embedded once per model (shared by its query sets)."""
    return f"{RUNS_DIR}/galleries/{eval_plan(system, lang, seed).gallery}.parquet"


def image_bank_path(system: str, lang: str, seed) -> str:
    """The querybank's training images embedded once per model (evaluate.querybank images > 0)."""
    return f"{RUNS_DIR}/imagebanks/{eval_plan(system, lang, seed).gallery}.parquet"


def text_bank_path(system: str, lang: str, seed) -> str:
    """The querybank's training texts embedded once per model (evaluate.querybank texts > 0)."""
    return f"{RUNS_DIR}/textbanks/{eval_plan(system, lang, seed).gallery}.parquet"


def querybank_banks(system: str, lang: str, seed) -> dict:
    """The embedded banks of the model's querybank, by input name ({} when it is off)."""
    querybank = querybank_of(system)
    banks = {}
    if querybank.get("texts"):
        banks["textbank"] = text_bank_path(system, lang, seed)
    if querybank.get("images"):
        banks["imagebank"] = image_bank_path(system, lang, seed)
    return banks


def eval_dir(system: str, lang: str, seed) -> str:
    return f"{RUNS_DIR}/evals/{eval_plan(system, lang, seed).key}"


def answering_students(system: str, lang: str) -> tuple:
    """What answers query set ``lang`` of ``system``: (trainset, student key, weight) per student."""
    trainset = trainset_of(lang)
    return tuple(
        (plan.trainset, plan.key, weight)
        for plan, weight in (
            (student_plan(system, trainset, lang, member), weight)
            for member, weight in ensemble_of(system, lang)
        )
    )


def bundle_plan(system: str, lang: str, seed) -> SimpleNamespace:
    """The model bundle of the trained student, or ensemble of students, that serves query set ``lang``
    (ccr.search.bundle): its weights with the encoders that feed it, the query sets it serves and their
    evaluations, and its key.

    The key hashes the students and everything written into the bundle (encoders with all their
    params, the describer of a student with slots, the evaluations), so configs that would write
    different bundles never share a path.
    """
    answering = answering_students(system, lang)
    langs = [other for other in LANGS if answering_students(system, other) == answering]
    evals = {other: eval_plan(system, other, seed) for other in langs}
    # the model's evaluation: its students, their weights, the data they read
    plan = evals[lang]
    spec = {
        "image_encoder": {
            "backend": IMAGE_ENC["backend"],
            "params": IMAGE_ENC["params"],
        },
        "text_encoder": {"backend": TEXT_ENC["backend"], "params": TEXT_ENC["params"]},
        "describer": (
            {"backend": DESCRIBE["backend"], "params": DESCRIBE["params"]}
            if plan.use_slots
            else None
        ),
        "description_role": TEXT_ENC["description_role"],
        "describer_pool": plan.use_slots and "captions" in DESCRIBE_NEEDS,
        "query_languages": sorted({language_code(lang) for lang in langs}),
        "query_sets": langs,
        "source": {"dataset": DS, "trainset": plan.trainset, "seed": int(seed)},
    }
    if plan.weights:  # an ensemble: its students and weights (relative, as evaluated)
        spec["source"]["ensemble"] = [
            {"trainset": trainset, "student_key": key, "weight": weight}
            for trainset, key, weight in answering
        ]
        spec["weights"] = plan.weights
    else:
        spec["source"]["student_key"] = answering[0][1]
    querybank = querybank_of(system)
    if querybank:
        # its metrics were measured with it; the bundle carries its banks and ranks with it too
        spec["source"]["evaluated_with_querybank"] = querybank
        spec["querybank"] = querybank
    # the centering its queries were evaluated with, per language code: its search applies it too
    centering = {
        language_code(other): evals[other].centering["alpha"]
        for other in langs
        if evals[other].centering
    }
    if centering:
        spec["centering"] = centering
    key = stable_hash(
        [spec, sorted(f"{RUNS_DIR}/evals/{e.key}" for e in evals.values())]
    )
    return SimpleNamespace(
        key=key,
        spec=spec,
        student=plan.student,
        banks=querybank_banks(system, lang, seed),
        metrics=[
            f"{RUNS_DIR}/evals/{evals[other].key}/metrics.json" for other in langs
        ],
    )


# train: false is the zero-shot system (ccr.params): it has no student to fuse
for _system in SYSTEMS:
    for _where, _ensemble in ensembles_of(_system):
        if _ensemble and not system_spec(_system).trains_student:
            raise ValueError(
                f"config {_where}.ensemble: the zero-shot system trains no student to fuse"
            )

# Reverse lookups from the keys in paths (wildcards) to what they stand for.
STUDENTS = {}
TEACHERS = {}
EVALS = {}
GALLERIES = {}
BUNDLES = {}
for _system in SYSTEMS:
    for _lang in LANGS:
        _trainset = trainset_of(_lang)
        _members = [_member for _member, _ in ensemble_of(_system, _lang)]
        if system_spec(_system).trains_student:
            for _member in _members:
                _plan = student_plan(_system, _trainset, _lang, _member)
                STUDENTS.setdefault(
                    (_plan.trainset, _plan.key), (_system, _lang, _member)
                )
            # bundles: one per trained student, or ensemble of students, and seed
            for _seed in SEEDS:
                BUNDLES.setdefault(
                    bundle_plan(_system, _lang, _seed).key,
                    (_system, _lang, _seed),
                )
        if any(uses_teacher(_system, _trainset, _lang, _m) for _m in _members):
            TEACHERS.setdefault(
                (_trainset, teacher_plan(_system, _trainset).key), _system
            )
        for _seed in SEEDS:
            _eval = eval_plan(_system, _lang, _seed)
            EVALS.setdefault(_eval.key, (_system, _lang, _seed))
            GALLERIES.setdefault(_eval.gallery, (_system, _lang, _seed))


# ---- scatter/gather ----------------------------------------------------------------------------


def part_output(stem: str, stage: str):
    """A scatterable stage's output: the whole table, or (scattered) one part of it, gathered later."""
    if PARTS[stage] == 1:
        return f"{stem}.parquet"
    return temp(f"{stem}.parts/{{scatteritem}}.parquet")


def part_tag(stage: str) -> str:
    """The part in a scattered job's log and benchmark names."""
    return "" if PARTS[stage] == 1 else ".{scatteritem}"


def gathered_parts(stem: str, stage: str) -> list[str]:
    """Every part of a scattered stage's output (the stem's own wildcards kept for the gather rule)."""
    escaped = stem.replace("{", "{{").replace("}", "}}")
    return getattr(gather, stage)(f"{escaped}.parts/{{scatteritem}}.parquet")


def part_of(wildcards) -> str:
    return wildcards.get("scatteritem", "")


# ---- resources ---------------------------------------------------------------------------------


# minutes asked by the light rules (gathers, galleries, evaluations, the report) unless
# resources.stages.<rule>.runtime says otherwise; resources.runtime is the heavy jobs'
LIGHT_JOB_MINUTES = 120


def job_resource(rule: str, key: str, spec: dict | None = None, default=None):
    """A rule's resource, by its backend and the config (see ccr.jobs.job_resource)."""
    return jobs.job_resource(RES, rule, key, spec, default)


def conda_env(family: str, spec: dict | None = None, gpus: int = 0) -> str:
    """The rule's conda env: its family's CPU env or GPU variant (see ccr.jobs.conda_env)."""
    return jobs.conda_env(family, spec, gpus)


def translate_conda_env(wildcards) -> str:
    return conda_env("translate", TRANSLATIONS[(wildcards.code, wildcards.trkey)])


def train_conda_env(rule: str, params_of):
    gpus = train_gpus(rule, params_of)
    return lambda wildcards: conda_env("train", gpus=gpus(wildcards))


def translate_resource(key: str, default=None):
    """``job_resource`` of translate_captions for the language whose translation a job makes."""
    return lambda wildcards: job_resource(
        "translate_captions",
        key,
        TRANSLATIONS[(wildcards.code, wildcards.trkey)],
        default,
    )


def train_gpus(rule: str, params_of):
    """Training asks for a GPU when its params say ``device: cuda`` (or resources.stages.<rule>.gpu)."""
    return (
        lambda wildcards: RES["stages"]
        .get(rule, {})
        .get("gpu", int(params_of(wildcards)["device"] == "cuda"))
    )


def mt_quality_source(wildcards) -> str:
    return config["mt_quality"][wildcards.lang]["source"]


def mt_quality_reference(wildcards) -> str:
    return config["mt_quality"][wildcards.lang]["reference"]


# ---- input functions ---------------------------------------------------------------------------


def data_inputs(trainset: str, descriptions: bool = True, proxy: bool = False) -> dict:
    """Everything ccr.train.TrainInputs points at, for one training set (and the proxy MT)."""
    inputs = {
        "images": f"{DATA_DIR}/images.parquet",
        "captions": f"{DATA_DIR}/captions.parquet",
        "image_features": image_features_path(),
        "caption_features": text_features_path("captions"),
    }
    if descriptions:
        inputs["descriptions"] = descriptions_path()
        inputs["description_features"] = description_features_path()
    if trainset != NO_MT:
        code, trkey = trainset.split(".", 1)
        inputs["translations"] = f"{DATA_DIR}/translations/{code}/{trkey}.parquet"
        inputs["translation_features"] = text_features_path(f"mt-{trainset}")
        if BACKTRANSLATE:
            inputs["backtranslations"] = (
                f"{DATA_DIR}/backtranslations/{code}/{trkey}.parquet"
            )
            inputs["backtranslation_features"] = text_features_path(f"bt-{trainset}")
    if proxy:
        code, trkey = PROXY_SET.split(".", 1)
        inputs["proxy_translations"] = f"{DATA_DIR}/translations/{code}/{trkey}.parquet"
        inputs["proxy_translation_features"] = text_features_path(f"mt-{PROXY_SET}")
    return inputs


def combined_translations(wildcards) -> list[str]:
    """The MT tables of every language, combined into the training text of ``train.text: all-mt``; or
    the proxy MT of every query set that has one (PROXY_SET)."""
    if PROXY_SET is not None and wildcards.trkey == PROXY_SET.split(".", 1)[1]:
        return sorted(
            {proxy_translations_path(lang) for lang in LANGS if proxy_spec(lang)}
        )
    return sorted({translations_path(lang) for lang in mt_languages()})


def describe_inputs(wildcards) -> dict:
    """The images, and for a describer that works from tables, the captions and image features."""
    inputs = {"images": f"{DATA_DIR}/images.parquet"}
    if "captions" in DESCRIBE_NEEDS:
        inputs["captions"] = f"{DATA_DIR}/captions.parquet"
    if "image_features" in DESCRIBE_NEEDS:
        inputs["image_features"] = image_features_path()
    return inputs


def combined_backtranslations(wildcards) -> list[str]:
    """The back-translations of every MT language, combined for ``train.text: all-mt``."""
    return sorted(
        {
            f"{DATA_DIR}/backtranslations/{language_code(lang)}/{translation_key(lang)}.parquet"
            for lang in mt_languages()
        }
    )


def backtranslate_params(wildcards) -> dict:
    """The MT language's apertium settings, without its en->X route (the way back is found anew)."""
    spec = TRANSLATIONS[(wildcards.code, wildcards.trkey)]
    return {
        "backend": spec["backend"],
        "params": {k: v for k, v in spec["params"].items() if k != "route"},
    }


def translate_params(wildcards) -> dict:
    return TRANSLATIONS[(wildcards.code, wildcards.trkey)]


def teacher_inputs(wildcards) -> dict:
    """The teacher sees English captions and their translations only."""
    inputs = data_inputs(wildcards.trainset, descriptions=False)
    return {
        k: inputs[k]
        for k in (
            "images",
            "captions",
            "translations",
            "caption_features",
            "translation_features",
        )
    }


def teacher_params(wildcards) -> dict:
    return teacher_plan(
        TEACHERS[(wildcards.trainset, wildcards.tkey)], wildcards.trainset
    ).params


def student_system(wildcards) -> tuple[str, str, dict]:
    """A (system, query set, ensemble member's overrides) of the config whose student on
    ``trainset`` has key ``skey``."""
    return STUDENTS[(wildcards.trainset, wildcards.skey)]


def student_inputs(wildcards) -> dict:
    system, lang, member = student_system(wildcards)
    plan = student_plan(system, wildcards.trainset, lang, member)
    inputs = data_inputs(
        wildcards.trainset, descriptions=plan.use_slots, proxy=plan.proxy
    )
    if uses_teacher(system, wildcards.trainset, lang, member):
        inputs["teacher"] = (
            f"{teacher_dir(system, wildcards.trainset, wildcards.seed)}/teacher.pt"
        )
    return inputs


def student_params(wildcards) -> dict:
    system, lang, member = student_system(wildcards)
    return student_plan(system, wildcards.trainset, lang, member).params


def training_language(trainset: str) -> str:
    return "en" if trainset == NO_MT else trainset.split(".", 1)[0]


def model_inputs(system: str, lang: str, seed) -> dict:
    """What embedding with a trained student (or the zero-shot system) reads."""
    plan = eval_plan(system, lang, seed)
    inputs = data_inputs(plan.trainset, descriptions=plan.use_slots)
    if plan.student:
        inputs["student"] = plan.student
    return inputs


def evaluate_inputs(wildcards) -> dict:
    system, lang, seed = EVALS[wildcards.ekey]
    inputs = {
        **model_inputs(system, lang, seed),
        "gallery": gallery_path(system, lang, seed),
    }
    banks = querybank_banks(system, lang, seed)
    if "imagebank" in banks:
        inputs["imagebank"] = banks["imagebank"]
    return inputs


def bank_inputs(wildcards) -> dict:
    """A querybank's bank is embedded by the model alone."""
    return model_inputs(*GALLERIES[wildcards.gkey])


def gallery_inputs(wildcards) -> dict:
    """The model, and its text bank when the querybank normalises the gallery by one."""
    system, lang, seed = GALLERIES[wildcards.gkey]
    inputs = model_inputs(system, lang, seed)
    banks = querybank_banks(system, lang, seed)
    if "textbank" in banks:
        inputs["textbank"] = banks["textbank"]
    return inputs


def ensemble_weights(plan: SimpleNamespace) -> dict:
    """``{"ensemble": weights}`` for an ensemble's jobs, {} for one student (its params unchanged)."""
    return {"ensemble": plan.weights} if plan.weights else {}


def gallery_params(wildcards) -> dict:
    system, lang, seed = GALLERIES[wildcards.gkey]
    plan = eval_plan(system, lang, seed)
    return {
        "student": plan.params,
        "split": plan.query["split"],
        "querybank": plan.querybank,
        **ensemble_weights(plan),
    }


def evaluate_params(wildcards) -> dict:
    system, lang, seed = EVALS[wildcards.ekey]
    plan = eval_plan(system, lang, seed)
    return {
        "student": plan.params,
        "query": plan.query,
        "querybank": plan.querybank,
        # only when on: an evaluation without it keeps the params it was run with
        **({"centering": plan.centering} if plan.centering else {}),
        **ensemble_weights(plan),
    }


def reuses_caption_vectors() -> bool:
    """knn-captions views of single captions are training captions verbatim: embedded as queries, the
    descriptions copy the captions' vectors instead of encoding them again."""
    return (
        DESCRIBE["backend"] == "knn-captions"
        and DESCRIBE["params"].get("view") == "caption"
        and TEXT_ENC["description_role"] == "query"
    )


def text_spec(wildcards) -> dict:
    """The text encoder's settings for one table: the descriptions' role only for the descriptions, so
    configs that differ only there share the captions' and translations' vectors (params trigger).
    """
    if wildcards.source.startswith("descriptions."):
        return TEXT_ENC
    return {k: v for k, v in TEXT_ENC.items() if k != "description_role"}


def embed_texts_inputs(wildcards) -> dict:
    inputs = {"captions": text_source_input(wildcards)}
    if wildcards.source.startswith("descriptions.") and reuses_caption_vectors():
        inputs["reuse_captions"] = f"{DATA_DIR}/captions.parquet"
        inputs["reuse_features"] = text_features_path("captions")
    return inputs


def export_bundle_inputs(wildcards) -> dict:
    """A bundle is made from its student (or students) and the evaluations whose metrics it carries."""
    plan = bundle_plan(*BUNDLES[wildcards.bkey])
    inputs = {"student": plan.student, "metrics": plan.metrics, **plan.banks}
    if plan.spec[
        "describer_pool"
    ]:  # a table describer travels with the training data it reads
        inputs.update(
            images=f"{DATA_DIR}/images.parquet",
            captions=f"{DATA_DIR}/captions.parquet",
            image_features=image_features_path(),
        )
    # and language centering with the means it moves queries by
    if plan.spec.get("centering"):
        inputs.update(
            captions=f"{DATA_DIR}/captions.parquet",
            caption_features=text_features_path("captions"),
        )
    return inputs


def export_bundle_params(wildcards) -> dict:
    return bundle_plan(*BUNDLES[wildcards.bkey]).spec


def text_source_input(wildcards) -> str:
    """The captions table a text-feature source is embedded from (captions, one MT, descriptions)."""
    source = wildcards.source
    if source == "captions":
        return f"{DATA_DIR}/captions.parquet"
    if source.startswith("descriptions."):
        key = source.split(".", 1)[1].removesuffix(".query")
        return f"{DATA_DIR}/descriptions/{key}.parquet"
    if source.startswith("mt-"):
        code, trkey = source[3:].split(".", 1)
        return f"{DATA_DIR}/translations/{code}/{trkey}.parquet"
    if source.startswith("bt-"):
        code, trkey = source[3:].split(".", 1)
        return f"{DATA_DIR}/backtranslations/{code}/{trkey}.parquet"
    raise ValueError(f"unknown text source '{source}'")


# ---- targets -----------------------------------------------------------------------------------


def run_table() -> list[dict]:
    """Every (system, query set, seed) of the config with the evaluation that scores it."""
    return [
        {
            "system": system,
            "lang": lang,
            "seed": int(seed),
            "eval": eval_dir(system, lang, seed),
        }
        for system in SYSTEMS
        for lang in LANGS
        for seed in SEEDS
    ]


def all_metrics() -> list[str]:
    return sorted({f"{run['eval']}/metrics.parquet" for run in run_table()})


def all_examples() -> list[str]:
    return sorted({f"{run['eval']}/examples.parquet" for run in run_table()})


def history_tags() -> dict:
    """Every training history of the config -> the labels of its curves (the systems sharing it)."""
    systems_of = {}
    for system in SYSTEMS:
        for lang in LANGS:
            trainset = trainset_of(lang)
            for seed in SEEDS:
                if any(
                    uses_teacher(system, trainset, lang, member)
                    for member, _ in ensemble_of(system, lang)
                ):
                    systems_of.setdefault(
                        (
                            f"{teacher_dir(system, trainset, seed)}/history.parquet",
                            trainset,
                            seed,
                        ),
                        [],
                    )
                if not system_spec(system).trains_student:
                    continue
                for member, _ in ensemble_of(system, lang):
                    key = (
                        f"{student_dir(system, trainset, seed, lang, member)}/history.parquet",
                        trainset,
                        seed,
                    )
                    if system not in systems_of.setdefault(key, []):
                        systems_of[key].append(system)
    return {
        path: {
            "system": ", ".join(systems) or "teacher",
            "lang": trainset,
            "seed": int(seed),
        }
        for (path, trainset, seed), systems in sorted(systems_of.items())
    }


def all_histories() -> list[str]:
    return sorted(history_tags())


def report_tags() -> dict:
    """Columns every metrics row of this config's report carries, beside system, lang and seed."""
    return {
        "dataset": DATASET,
        "describer": DESCRIBE["backend"],
        "run_name": RUN_NAME,
        "config_hash": CONFIG_HASH,
        "code_version": CODE_VERSION,
    }


def mt_quality_outputs() -> list[str]:
    """BLEU/chrF files for the languages that have a parallel test set and a real MT backend."""
    return [
        f"{REPORT_DIR}/mt_quality.{lang}.json"
        for lang in config["mt_quality"]
        if lang in config["languages"] and translate_spec(lang)["backend"] != "none"
    ]


def all_bundles() -> list[str]:
    """One model bundle per trained student of the config (the zero-shot system has no weights)."""
    return sorted(f"results/bundles/{DS}/{key}/bundle.pt" for key in BUNDLES)


def all_outputs() -> list[str]:
    return [
        f"{REPORT_DIR}/report.html",
        f"{REPORT_DIR}/metrics_table.md",
        *mt_quality_outputs(),
        *all_bundles(),
    ]
