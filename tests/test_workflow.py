"""The Snakemake workflow end to end on the tiny config: outputs, config errors before the first job,
rerun-only-what-changed, content-keyed outputs (a data change retrains, two configs keep apart, key
order does not matter). Scattered and SIGKILLed runs: tests/test_workflow_kill.py; SLURM: tests/test_slurm.py."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from workflow_run import CCR, digests, make_workdir, planned_jobs, snakemake, tiny_config, with_config

# ---- config errors: refused by `snakemake -n`, naming the key, before any job runs ------------------

@pytest.mark.parametrize("edit, message", [
    (lambda c: c.update(langauges=c.pop("languages")), r"'langauges' was unexpected"),
    (lambda c: c["features"]["image"].update(parms={}), r"'parms' was unexpected"),
    (lambda c: c["languages"]["fr"].update(backend="apertum"), r"'apertum' is not one of \['apertium'"),
    (lambda c: c["describe"]["params"].update(veiws=3), r"'veiws' was unexpected"),
    (lambda c: c["train"]["teacher"].update(epochs=0), r"0 is less than the minimum of 1"),
    (lambda c: c["train"]["student"].update(embed_dim=30, attn_heads=4), r"'embed_dim' \(30\) must be divisible"),
    (lambda c: c["resources"].update(stages={"evaluate": {"threads": 4}}),
     r"resources.stages.evaluate.threads: evaluate does not take a threads setting"),
    (lambda c: c["resources"].update(stages={"embed_gallery": {"gpu": 1}}),
     r"resources.stages.embed_gallery.gpu: embed_gallery does not take a gpu setting"),
])
def test_config_errors_are_refused_before_the_first_job(tmp_path, edit, message):
    config = tiny_config()
    edit(config)
    workdir = make_workdir(tmp_path / "wd", config)
    proc = snakemake(workdir, "--dry-run", check=False)
    assert proc.returncode != 0
    assert re.search(message, proc.stdout + proc.stderr), (proc.stdout + proc.stderr)[-3000:]
    assert not (workdir / "results").exists()


# ---- one tiny run, then what reruns ----------------------------------------------------------------

def report_dir(workdir: Path, run_name: str = "main") -> Path:
    (found,) = (workdir / "results" / "report" / "tiny").glob(f"{run_name}-*")
    return found


@pytest.mark.slow
def test_end_to_end_tiny_run(finished_run):
    rows = {r["system"]: r for r in pq.read_table(report_dir(finished_run) / "metrics.parquet").to_pylist()}
    assert set(rows) == {"zero-shot", "full"}
    for row in rows.values():
        assert row["lang"] == "fr" and row["dataset"] == "tiny" and row["seed"] == 0
        assert len(row["config_hash"]) == 10 and row["code_version"]
        assert 0.0 <= row["mr"] <= 100.0
    # the evaluation files hold the same numbers
    evals = list((finished_run / "results" / "runs").glob("tiny-*/evals/*/metrics.json"))
    assert len(evals) == 2
    assert sorted(json.loads(p.read_text())["mr"] for p in evals) == pytest.approx(sorted(r["mr"] for r in rows.values()))
    # 24 test images: chance mR is about (1+5+10)/3/24*100 = 22; the trained system must beat chance.
    assert rows["full"]["mr"] > 30.0
    html = (report_dir(finished_run) / "report.html").read_text()
    assert "data:image/png;base64" in html and "full" in html
    # every output carries the fingerprint of what made it
    from ccr.io import read_fingerprint

    for table in (finished_run / "results").rglob("*.parquet"):
        if "report" not in table.parts and "evals" not in table.parts and table.name != "history.parquet":
            assert not read_fingerprint(table).startswith("sha256:"), table
    # nothing incomplete left behind
    assert not list((finished_run / "results").rglob("*.shards"))
    assert not list((finished_run / "results").rglob(".*.tmp-*"))
    assert not list((finished_run / "results").rglob("last.pt"))


@pytest.mark.slow
def test_nothing_to_do_after_a_run(finished_run):
    assert planned_jobs(finished_run) == set()


@pytest.mark.slow
def test_reordered_config_keys_plan_nothing(finished_run):
    def reverse(value):
        if isinstance(value, dict):
            return {k: reverse(value[k]) for k in reversed(list(value))}
        return value

    with with_config(finished_run, reverse(tiny_config())):
        assert planned_jobs(finished_run) == set()


@pytest.mark.slow
def test_student_param_change_reruns_only_downstream(finished_run):
    config = tiny_config()
    config["systems"]["full"] = {"student": {"epochs": 2}}
    with with_config(finished_run, config):
        jobs = planned_jobs(finished_run)
    # the gallery is embedded by the student, so it follows the student
    assert jobs == {"train_student", "embed_gallery", "evaluate", "report", "export_bundle"}


@pytest.mark.slow
def test_describe_param_change_reruns_descriptions_and_below(finished_run):
    config = tiny_config()
    config["describe"]["params"]["views"] = 2
    with with_config(finished_run, config):
        jobs = planned_jobs(finished_run)
    assert "describe_images" in jobs and "embed_texts" in jobs
    assert not jobs & {"prepare_dataset", "translate_captions", "embed_images", "train_teacher"}


@pytest.mark.slow
def test_data_change_retrains_teacher_and_student(finished_run):
    """The issue's case: the default dataset's seed changes, training params do not."""
    config = tiny_config()
    config["seed"] = 1
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
              for p in (finished_run / "results" / "runs").rglob("*.pt")}
    with with_config(finished_run, config):
        snakemake(finished_run)
    after = {}
    for p in (finished_run / "results" / "runs").rglob("*.pt"):
        after.setdefault(p.name, set()).add(hashlib.sha256(p.read_bytes()).hexdigest())
    assert {"teacher.pt", "student.pt"} <= set(before)
    for name in ("teacher.pt", "student.pt"):
        assert len(after[name]) == 2 and before[name] in after[name]  # the old model kept, a new one trained


@pytest.mark.slow
def test_two_configs_keep_separate_outputs(finished_run):
    """Another config on the same dataset writes its own files; `ccr results` shows both runs."""
    other = tiny_config()
    other["run_name"] = "fewer-epochs"
    other["systems"]["full"] = {"student": {"epochs": 2}}
    before = digests(finished_run / "results")
    with with_config(finished_run, other):
        snakemake(finished_run)
    after = digests(finished_run / "results")
    changed = sorted(k for k in before if after.get(k) != before[k])
    assert not changed, changed  # nothing of the first config was overwritten
    proc = subprocess.run([CCR, "results", "--root", str(finished_run / "results" / "report"), "--format", "json",
                           "--sql", "SELECT run_name, config_hash, system, mr FROM metrics WHERE dataset = 'tiny' "
                                    "ORDER BY run_name, system"],
                          capture_output=True, text=True, check=True)
    rows = [r for r in json.loads(proc.stdout) if r["run_name"] in ("main", "fewer-epochs")]
    assert {(r["run_name"], r["system"]) for r in rows} >= {("main", "full"), ("main", "zero-shot"),
                                                           ("fewer-epochs", "full"), ("fewer-epochs", "zero-shot")}
    assert len({r["config_hash"] for r in rows}) >= 2

