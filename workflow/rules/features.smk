# ccr.features: frozen encoders, cached per (dataset, encoder, settings) under results/features/.


rule embed_images:
    input:
        images=f"{DATA_DIR}/images.parquet",
    output:
        f"{FEAT_DIR}/images/{{key}}.parquet",
    params:
        spec=IMAGE_ENC,
    log:
        f"logs/{DATASET}/embed_images.{{key}}.log",
    benchmark:
        f"benchmarks/{DATASET}/embed_images.{{key}}.tsv"
    threads: HEAVY_THREADS
    resources:
        mem_mb=RES.get("mem_mb", 8000),
        runtime=RES.get("runtime", 120),
        gpu=RES.get("gpu", 0) if IMAGE_ENC["backend"].startswith("hf") else 0,
    conda:
        "../../envs/features.yaml"
    script:
        "../scripts/embed_images.py"


rule embed_texts:
    input:
        captions=text_source_input,
    output:
        f"{FEAT_DIR}/texts/{{key}}/{{source}}.parquet",
    params:
        spec=TEXT_ENC,
    log:
        f"logs/{DATASET}/embed_texts.{{key}}.{{source}}.log",
    benchmark:
        f"benchmarks/{DATASET}/embed_texts.{{key}}.{{source}}.tsv"
    threads: HEAVY_THREADS
    resources:
        mem_mb=RES.get("mem_mb", 8000),
        runtime=RES.get("runtime", 120),
        gpu=RES.get("gpu", 0) if TEXT_ENC["backend"].startswith("hf") else 0,
    conda:
        "../../envs/features.yaml"
    script:
        "../scripts/embed_texts.py"
