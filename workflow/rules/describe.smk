# ccr.describe: several English descriptions ("views") per image, by an MLLM or the offline tagger.


rule describe_images:
    input:
        images=f"{DATA_DIR}/images.parquet",
    output:
        f"{DATA_DIR}/descriptions/{DESC_KEY}.parquet",
    params:
        spec=DESCRIBE,
    log:
        f"logs/{DS}/describe_images/{DESC_KEY}.log",
    benchmark:
        f"benchmarks/{DS}/describe_images/{DESC_KEY}.tsv"
    threads: HEAVY_THREADS
    resources:
        mem_mb=RES["mem_mb"],
        runtime=RES["runtime"],
        gpu=gpus_for(DESCRIBE),
    conda:
        "../envs/describe.yaml"
    script:
        "../scripts/describe_images.py"
