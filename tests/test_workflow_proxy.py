"""A query set's proxy MT (``languages.<set>.proxy``: MT into a related language) trains only the
students whose params say ``proxy_mt: true``: its translation, text features and those students are
new, the teacher is the MT's, and every existing output stays as it was (by file hashes)."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
from workflow_run import digests, planned_jobs, snakemake, tiny_config, with_config

from ccr.models.checkpoint import load_checkpoint


@pytest.mark.slow
def test_a_proxy_mt_trains_only_the_students_that_ask_for_it(finished_run):
    config = tiny_config()
    # Spanish MT beside French's for the fr query set (the M30K-F8K config gives Czech a Croatian one)
    config["languages"]["fr"]["proxy"] = {"code": "es", "backend": "apertium", "params": {"route": ["eng-spa"]},
                                          "shard_size": 16}
    config["systems"]["full-proxy"] = {"preset": "full", "student": {"proxy_mt": True}}
    results = finished_run / "results"
    before = digests(results)
    with with_config(finished_run, config):
        jobs = planned_jobs(finished_run)
        assert "train_teacher" not in jobs, jobs  # the MT's teacher serves the proxy student too
        assert {"translate_captions", "combine_translations", "embed_texts", "train_student"} <= jobs, jobs
        snakemake(finished_run)
        assert planned_jobs(finished_run) == set()  # and a rerun has nothing to do
    after = digests(results)
    assert not [k for k in before if after.get(k) != before[k]]  # full's student, evaluations, bundles stay
    new = sorted(k for k in after if k not in before)
    students = [k for k in new if k.endswith("/student.pt")]
    assert len(students) == 1, new
    meta = load_checkpoint(results / students[0])["meta"]
    assert meta["params"]["proxy_mt"] is True
    assert "proxy_translations" in str(meta), meta  # its inputs' fingerprints name the proxy MT
    old = [k for k in before if k.endswith("/student.pt")]
    assert all("proxy_mt" not in load_checkpoint(results / k)["meta"]["params"] for k in old)

    proxy = [k for k in new if "/translations/multi/" in k]
    assert len(proxy) == 1, new
    rows = pq.read_table(results / proxy[0]).to_pylist()
    data = results / proxy[0].split("/translations/")[0]
    english = {r["caption_id"] for r in pq.read_table(data / "captions.parquet").to_pylist()
               if r["lang"] == "en" and r["origin"] == "human" and r["split"] in ("train", "val")}
    assert {r["lang"] for r in rows} == {"es"} and {r["origin"] for r in rows} == {"mt"}
    assert {r["source_id"] for r in rows} == english  # train and val captions, never test
    assert all(r["caption_id"] == f"{r['source_id']}#mt-es" and r["text"] for r in rows)
    logs = [p.read_text() for p in (finished_run / "logs").glob("*/train_student/*.log")]
    assert any("of them proxy MT" in text for text in logs)  # the training says what it read

    # a student asking for a proxy where none is configured is refused before any job
    config["languages"]["fr"].pop("proxy")
    with with_config(finished_run, config):
        proc = snakemake(finished_run, "--dry-run", check=False)
    assert proc.returncode != 0
    assert "config systems.full-proxy (query set fr): student param proxy_mt is true but no query set has a proxy" in (
        proc.stdout + proc.stderr)
