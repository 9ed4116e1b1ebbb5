"""Querybank normalisation in the workflow (docs/methods.md): an evaluation setting, so turning it on
re-evaluates the trained student without training anything or overwriting any output (by file hashes)."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
from workflow_run import digests, planned_jobs, snakemake, tiny_config, with_config


@pytest.mark.slow
def test_querybank_reevaluates_without_retraining(finished_run):
    """Turned on for `full`: nothing is trained or overwritten; one gallery (four columns wider than the
    student's own), one image bank and the evaluation of the same student are added."""
    config = tiny_config()
    config["systems"]["full"] = {"querybank": {"texts": 50, "images": 20, "beta": 10}}  # zero-shot stays as it was
    before = digests(finished_run / "results")
    with with_config(finished_run, config):
        assert planned_jobs(finished_run) == {"embed_gallery", "embed_image_bank", "evaluate", "report", "export_bundle"}
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
