# ccr.features: frozen encoders, cached per (dataset, encoder, settings) under results/features/.


rule embed_images:
    input:
        images=f"{DATA_DIR}/images.parquet",
    output:
        f"{FEAT_DIR}/images/{IMAGE_KEY}.parquet",
    params:
        spec=IMAGE_ENC,
    log:
        f"logs/{DS}/embed_images/{IMAGE_KEY}.log",
    benchmark:
        f"benchmarks/{DS}/embed_images/{IMAGE_KEY}.tsv"
    threads: HEAVY_THREADS
    resources:
        mem_mb=RES["mem_mb"],
        runtime=RES["runtime"],
        gpu=gpus_for(IMAGE_ENC),
    conda:
        "../envs/features.yaml"
    script:
        "../scripts/embed_images.py"


rule embed_texts:
    input:
        captions=text_source_input,
    output:
        f"{FEAT_DIR}/texts/{TEXT_KEY}/{{source}}.parquet",
    params:
        spec=TEXT_ENC,
    log:
        f"logs/{DS}/embed_texts/{TEXT_KEY}.{{source}}.log",
    benchmark:
        f"benchmarks/{DS}/embed_texts/{TEXT_KEY}.{{source}}.tsv"
    threads: HEAVY_THREADS
    resources:
        mem_mb=RES["mem_mb"],
        runtime=RES["runtime"],
        gpu=gpus_for(TEXT_ENC),
    conda:
        "../envs/features.yaml"
    script:
        "../scripts/embed_texts.py"
