# ccr.data: build the images and captions tables from the configured source.


rule prepare_dataset:
    output:
        images=f"{DATA_DIR}/images.parquet",
        captions=f"{DATA_DIR}/captions.parquet",
    log:
        f"logs/{DS}/prepare_dataset/prepare_dataset.log",
    benchmark:
        f"benchmarks/{DS}/prepare_dataset/prepare_dataset.tsv"
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=job_resource("prepare_dataset", "mem_mb", default=4000),
        runtime=job_resource("prepare_dataset", "runtime", default=LIGHT_JOB_MINUTES),
    params:
        source=config["dataset"]["source"],
        dataset_params=DATASET_SPEC["params"],
        seed=config["seed"],
        # changes when a source file changes in place, so the job reruns (see source_stamp)
        source_stamp=source_stamp(),
    script:
        "../scripts/prepare_dataset.py"
