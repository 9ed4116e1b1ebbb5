# ccr.describe: several English descriptions ("views") per image, by an MLLM or the offline tagger.


rule describe_images:
    input:
        images=f"{DATA_DIR}/images.parquet",
    output:
        f"{DATA_DIR}/descriptions.{{backend}}.parquet",
    params:
        spec=DESCRIBE,
    log:
        f"logs/{DATASET}/describe_images.{{backend}}.log",
    benchmark:
        f"benchmarks/{DATASET}/describe_images.{{backend}}.tsv"
    threads: HEAVY_THREADS
    resources:
        mem_mb=RES.get("mem_mb", 8000),
        runtime=RES.get("runtime", 120),
        gpu=RES.get("gpu", 0) if DESCRIBE["backend"] in ("vllm", "hf-vlm") else 0,
    conda:
        "../../envs/describe.yaml"
    script:
        "../scripts/describe_images.py"
