# ccr.features: frozen encoders, cached per (dataset, encoder, settings) under results/features/.


rule embed_images:
    input:
        images=f"{DATA_DIR}/images.parquet",
    output:
        f"{FEAT_DIR}/images/{IMAGE_KEY}.parquet",
    log:
        f"logs/{DS}/embed_images/{IMAGE_KEY}.log",
    benchmark:
        f"benchmarks/{DS}/embed_images/{IMAGE_KEY}.tsv"
    conda:
        "../envs/features.yaml"
    threads: HEAVY_THREADS
    resources:
        mem_mb=RES["mem_mb"],
        runtime=RES["runtime"],
        gpu=gpus_for(IMAGE_ENC),
    params:
        spec=IMAGE_ENC,
    script:
        "../scripts/embed_images.py"


rule embed_texts:
    input:
        captions=text_source_input,
    output:
        f"{FEAT_DIR}/texts/{TEXT_KEY}/{{source}}.parquet",
    log:
        f"logs/{DS}/embed_texts/{TEXT_KEY}.{{source}}.log",
    benchmark:
        f"benchmarks/{DS}/embed_texts/{TEXT_KEY}.{{source}}.tsv"
    conda:
        "../envs/features.yaml"
    threads: HEAVY_THREADS
    resources:
        mem_mb=RES["mem_mb"],
        runtime=RES["runtime"],
        gpu=gpus_for(TEXT_ENC),
    params:
        spec=TEXT_ENC,
    script:
        "../scripts/embed_texts.py"
