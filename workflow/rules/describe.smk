# ccr.describe: several English descriptions ("views") per image, by an MLLM or the offline tagger.


rule describe_images:
    input:
        images=f"{DATA_DIR}/images.parquet",
    output:
        f"{DATA_DIR}/descriptions/{DESC_KEY}.parquet",
    log:
        f"logs/{DS}/describe_images/{DESC_KEY}.log",
    benchmark:
        f"benchmarks/{DS}/describe_images/{DESC_KEY}.tsv"
    conda:
        "../envs/describe.yaml"
    threads: HEAVY_THREADS
    resources:
        mem_mb=RES["mem_mb"],
        runtime=RES["runtime"],
        gpu=gpus_for(DESCRIBE),
    params:
        spec=DESCRIBE,
    script:
        "../scripts/describe_images.py"
