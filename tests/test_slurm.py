"""The workflow on a real single-node SLURM cluster (Debian slurm-wlm + munge, installed and started by
the test as root) through profiles/slurm as shipped: every job submitted with sbatch, every scatterable
stage in 3 parts, outputs byte-identical to the local reference run; a failing job fails the workflow
and names its log. Skips with the reason where SLURM cannot be installed or started."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import slurm_cluster
from workflow_run import digests, make_workdir, snakemake, tiny_config

# The shipped profile, with faster polling than a real cluster needs (jobs here last seconds).
SLURM_ARGS = ("--profile", "profiles/slurm", "--slurm-init-seconds-before-status-checks", "1",
              "--seconds-between-status-checks", "2", "--retries", "0")


@pytest.fixture(scope="module")
def cluster() -> str:
    if os.environ.get("CCR_SKIP_SLURM"):
        pytest.skip("CCR_SKIP_SLURM is set")
    try:
        return slurm_cluster.start()
    except slurm_cluster.ClusterUnavailable as err:
        pytest.skip(f"no SLURM cluster here: {err}")


def run_on_slurm(workdir: Path, *args: str) -> tuple[subprocess.CompletedProcess, str]:
    proc = snakemake(workdir, *SLURM_ARGS, *args, cores=None, check=False, timeout=1500)
    logs = sorted((workdir / ".snakemake" / "log").glob("*.snakemake.log"), key=lambda p: p.stat().st_mtime)
    return proc, logs[-1].read_text() if logs else ""


@pytest.mark.slow
def test_scattered_run_on_slurm_equals_the_local_run(cluster, tiny_reference, tmp_path):
    config = tiny_config()
    config["scatter"] = {"translate": 3, "describe": 3, "embed_images": 3, "embed_texts": 3}
    workdir = make_workdir(tmp_path / "wd", config, profiles=True)
    started = time.monotonic()
    proc, log = run_on_slurm(workdir)
    took = time.monotonic() - started
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]

    # every job but the local ones (the gathers, `all`) went through sbatch, with its SLURM job id
    jobs = {m.group(2): m.group(1) for m in re.finditer(r"rule (\w+):\n(?:.*\n)*?\s+jobid: (\d+)", log)}
    submitted = dict(re.findall(r"Job (\d+) has been submitted with SLURM jobid (\d+)", log))
    remote = {jobid: rule for jobid, rule in jobs.items() if not rule.startswith("gather_") and rule != "all"}
    assert set(submitted) == set(remote), (sorted(remote.items()), submitted)
    parts = [rule for rule in remote.values() if rule in ("translate_captions", "describe_images", "embed_images",
                                                          "embed_texts")]
    assert len(parts) == 3 * (1 + 1 + 1 + 3)  # 3 parts each; embed_texts for captions, MT and descriptions
    # SLURM knows them all and they completed (no accounting: squeue keeps finished jobs MinJobAge seconds)
    states = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i %T", "-j", ",".join(submitted.values())],
                            capture_output=True, text=True, check=True).stdout.split("\n")
    finished = {line.split()[0]: line.split()[1] for line in states if line.strip()}
    assert set(finished) == set(submitted.values()) and set(finished.values()) == {"COMPLETED"}, finished
    print(f"\nSLURM run: {len(submitted)} sbatch jobs in {took:.0f} s:",
          ", ".join(f"{remote[j]}={s}" for j, s in sorted(submitted.items(), key=lambda kv: int(kv[1]))))

    ours, reference = digests(workdir / "results"), digests(tiny_reference / "results")
    assert ours.keys() == reference.keys()
    assert not [k for k in ours if ours[k] != reference[k]]


def manifest_with_a_bad_image(reference: Path, root: Path) -> Path:
    """The tiny dataset as a manifest (a copy of its images), with one image file replaced by garbage."""
    data = next((reference / "results" / "data").glob("tiny-*"))
    images = {r["image_id"]: r for r in pq.read_table(data / "images.parquet").to_pylist()}
    (root / "images").mkdir(parents=True)
    rows = []
    for cap in pq.read_table(data / "captions.parquet").to_pylist():
        image = images[cap["image_id"]]
        source = Path(image["path"]) if Path(image["path"]).is_absolute() else data / image["path"]
        target = root / "images" / Path(image["path"]).name
        if not target.exists():
            target.write_bytes(source.read_bytes())
        rows.append({"image_id": cap["image_id"], "image_path": f"images/{target.name}", "caption": cap["text"],
                     "lang": cap["lang"], "split": cap["split"]})
    bad = root / "images" / Path(images[rows[0]["image_id"]]["path"]).name
    bad.write_bytes(b"\x89PNG\r\n\x1a\nthis is not an image")
    with open(root / "manifest.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return bad


@pytest.mark.slow
def test_a_failing_slurm_job_fails_the_workflow_and_names_its_log(cluster, tiny_reference, tmp_path):
    bad = manifest_with_a_bad_image(tiny_reference, tmp_path / "data")
    config = tiny_config()
    config["dataset"] = {"name": "broken", "source": "manifest", "params": {"path": str(tmp_path / "data" / "manifest.csv")}}
    workdir = make_workdir(tmp_path / "wd", config, profiles=True)
    proc, log = run_on_slurm(workdir)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    failed = re.search(r"Error in rule (describe_images|embed_images):(?:.*\n)*?\s+log: ([^,\s]+), (\S+slurm_logs\S+)",
                       out)
    assert failed, out[-6000:]
    assert "has been submitted with SLURM jobid" in log
    job_log = workdir / failed.group(2)
    assert job_log.is_file() and bad.name in job_log.read_text()  # the rule's log names the bad file
    assert Path(failed.group(3)).is_file()  # and so does the SLURM job's own log
    assert not list((workdir / "results").rglob("descriptions/*.parquet"))  # nothing that looks complete
