# ccr.data: build the images and captions tables from the configured source.


rule prepare_dataset:
    output:
        images=f"{DATA_DIR}/images.parquet",
        captions=f"{DATA_DIR}/captions.parquet",
    params:
        source=config["dataset"]["source"],
        dataset_params=config["dataset"].get("params", {}),
        seed=config.get("seed", 0),
    log:
        f"logs/{DATASET}/prepare_dataset.log",
    benchmark:
        f"benchmarks/{DATASET}/prepare_dataset.tsv"
    threads: 1
    resources:
        mem_mb=4000,
    conda:
        "../../envs/data.yaml"
    script:
        "../scripts/prepare_dataset.py"
