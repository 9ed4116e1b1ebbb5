# ccr.describe: several English descriptions ("views") per image, by an MLLM or the offline tagger.


rule describe_images:
    input:
        unpack(describe_inputs),
    output:
        part_output(f"{DATA_DIR}/descriptions/{DESC_KEY}", "describe"),
    log:
        f"logs/{DS}/describe_images/{DESC_KEY}{part_tag('describe')}.log",
    benchmark:
        f"benchmarks/{DS}/describe_images/{DESC_KEY}{part_tag('describe')}.tsv"
    conda:
        conda_env("describe", DESCRIBE)
    threads: job_resource("describe_images", "threads")
    resources:
        mem_mb=job_resource("describe_images", "mem_mb", DESCRIBE),
        runtime=job_resource("describe_images", "runtime", DESCRIBE),
        gpu=job_resource("describe_images", "gpu", DESCRIBE),
    params:
        spec=DESCRIBE,
        part=part_of,
    script:
        "../scripts/describe_images.py"


if PARTS["describe"] > 1:

    rule gather_descriptions:
        input:
            gathered_parts(f"{DATA_DIR}/descriptions/{DESC_KEY}", "describe"),
        output:
            f"{DATA_DIR}/descriptions/{DESC_KEY}.parquet",
        log:
            f"logs/{DS}/gather_descriptions/{DESC_KEY}.log",
        benchmark:
            f"benchmarks/{DS}/gather_descriptions/{DESC_KEY}.tsv"
        localrule: True
        conda:
            "../envs/data.yaml"
        threads: 1
        resources:
            mem_mb=job_resource("gather_descriptions", "mem_mb", default=4000),
            runtime=job_resource(
                "gather_descriptions", "runtime", default=LIGHT_JOB_MINUTES
            ),
        script:
            "../scripts/gather_parts.py"
