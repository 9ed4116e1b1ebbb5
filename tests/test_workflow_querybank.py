"""Evaluation settings in the workflow (docs/methods.md): querybank normalisation and language centering.
Turning one on re-evaluates the trained student without training anything or overwriting any output (by
file hashes); centering moves query texts only, so it embeds no image again."""

from __future__ import annotations

import re

import pyarrow.parquet as pq
import pytest
from workflow_run import digests, planned_jobs, snakemake, tiny_config, with_config

from ccr.models.checkpoint import load_checkpoint


@pytest.mark.slow
def test_querybank_reevaluates_without_retraining(finished_run):
    """Turned on for `full`: nothing is trained or overwritten; one gallery (four columns wider than the
    student's own), one text bank, one image bank, the evaluation of the same student and its bundle
    (with the banks) are added."""
    config = tiny_config()
    config["systems"]["full"] = {"querybank": {"texts": 50, "images": 20, "beta": 10}}  # zero-shot stays as it was
    before = digests(finished_run / "results")
    with with_config(finished_run, config):
        assert planned_jobs(finished_run) == {"embed_gallery", "embed_text_bank", "embed_image_bank", "evaluate",
                                              "report", "export_bundle"}
        snakemake(finished_run)
    after = digests(finished_run / "results")
    assert not [k for k in before if after.get(k) != before[k]]  # the students and the old evaluations stay
    new = sorted(k for k in after if k not in before)
    assert not [k for k in new if "/students/" in k or "/teachers/" in k]  # nothing trained

    def dims(keys):
        return sorted(pq.read_schema(finished_run / "results" / k).field("embedding").type.list_size
                      for k in keys if "/galleries/" in k)

    assert len(dims(new)) == 1 and dims(new)[0] - 4 in dims(before), (dims(before), dims(new))
    assert len([k for k in new if "/imagebanks/" in k]) == 1  # one image bank for the model
    assert len([k for k in new if "/textbanks/" in k]) == 1  # and one text bank
    # the bundle of that student carries both banks: its search ranks with the querybank too
    bundle = next(k for k in new if k.startswith("bundles/") and k.endswith("/bundle.pt"))
    ckpt = load_checkpoint(finished_run / "results" / bundle)
    banks, dim = ckpt["meta"]["querybank"], ckpt["meta"]["embed_dim"]
    assert banks["beta"] == 10.0 and 0 < banks["texts"] <= 50 and 0 < banks["images"] <= 20  # tiny has few
    assert ckpt["state_dict"]["querybank.texts"].shape == (banks["texts"], dim)
    assert ckpt["state_dict"]["querybank.images"].shape == (banks["images"], dim)


@pytest.mark.slow
def test_centering_reevaluates_without_new_galleries(finished_run):
    """Turned on for `full`'s French queries: only its evaluation (and the report, and the bundle that
    records it) is new; the gallery is the one it was, the rankings are not."""
    config = tiny_config()
    config["systems"]["full"] = {"languages": {"fr": {"centering": {"alpha": 1.0}}}}
    before = digests(finished_run / "results")
    with with_config(finished_run, config):
        assert planned_jobs(finished_run) == {"evaluate", "report", "export_bundle"}
        snakemake(finished_run)
    after = digests(finished_run / "results")
    assert not [k for k in before if after.get(k) != before[k]]
    new = sorted(k for k in after if k not in before)
    assert not [k for k in new if "/galleries/" in k or "/students/" in k or "/teachers/" in k], new
    evals = {k.split("/evals/")[1].split("/")[0] for k in new if "/evals/" in k}
    assert len(evals) == 1, new
    runs, logs = finished_run / "results" / "runs", finished_run / "logs"
    centred_key = evals.pop()
    centred = pq.read_table(next(runs.glob(f"*/evals/{centred_key}/examples.parquet"))).to_pylist()
    log = next(logs.rglob(f"evaluate/{centred_key}.log")).read_text()
    assert "centering fr: alpha 1.00" in log
    # the same student's evaluation without centering (nor querybank): the same queries, other scores
    student = re.search(r"loaded student (\S+)", log).group(1)
    plain_key = next(p.stem for p in logs.rglob("evaluate/*.log") if p.stem != centred_key
                     and f"loaded student {student} " in p.read_text() and "querybank" not in p.read_text())
    plain = {r["caption_id"]: r["top_scores"]
             for r in pq.read_table(next(runs.glob(f"*/evals/{plain_key}/examples.parquet"))).to_pylist()}
    assert [r["caption_id"] for r in centred] == list(plain)
    assert any(r["top_scores"] != plain[r["caption_id"]] for r in centred)
    # the bundle of that student centres French queries as the evaluation did (tests/test_search_bundle.py)
    bundle = next(k for k in new if k.startswith("bundles/") and k.endswith("/bundle.pt"))
    meta = load_checkpoint(finished_run / "results" / bundle)["meta"]
    assert meta["centering"]["languages"] == {"fr": {"alpha": 1.0, "has_mean": [True]}}
