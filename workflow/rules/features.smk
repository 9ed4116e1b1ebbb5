# ccr.features: frozen encoders, cached per (dataset, encoder, settings) under results/features/.


rule embed_images:
    input:
        images=f"{DATA_DIR}/images.parquet",
    output:
        part_output(f"{FEAT_DIR}/images/{IMAGE_KEY}", "embed_images"),
    log:
        f"logs/{DS}/embed_images/{IMAGE_KEY}{part_tag('embed_images')}.log",
    benchmark:
        f"benchmarks/{DS}/embed_images/{IMAGE_KEY}{part_tag('embed_images')}.tsv"
    conda:
        conda_env("features", IMAGE_ENC)
    threads: job_resource("embed_images", "threads")
    resources:
        mem_mb=job_resource("embed_images", "mem_mb", IMAGE_ENC),
        runtime=job_resource("embed_images", "runtime", IMAGE_ENC),
        gpu=job_resource("embed_images", "gpu", IMAGE_ENC),
    params:
        spec=IMAGE_ENC,
        part=part_of,
    script:
        "../scripts/embed_images.py"


rule embed_texts:
    input:
        unpack(embed_texts_inputs),
    output:
        part_output(f"{FEAT_DIR}/texts/{TEXT_KEY}/{{source}}", "embed_texts"),
    log:
        f"logs/{DS}/embed_texts/{TEXT_KEY}.{{source}}{part_tag('embed_texts')}.log",
    benchmark:
        f"benchmarks/{DS}/embed_texts/{TEXT_KEY}.{{source}}{part_tag('embed_texts')}.tsv"
    conda:
        conda_env("features", TEXT_ENC)
    threads: job_resource("embed_texts", "threads")
    resources:
        mem_mb=job_resource("embed_texts", "mem_mb", TEXT_ENC),
        runtime=job_resource("embed_texts", "runtime", TEXT_ENC),
        gpu=job_resource("embed_texts", "gpu", TEXT_ENC),
    params:
        spec=text_spec,
        part=part_of,
        query_langs=QUERY_LANGS,
    script:
        "../scripts/embed_texts.py"


if PARTS["embed_images"] > 1:

    rule gather_image_features:
        input:
            gathered_parts(f"{FEAT_DIR}/images/{IMAGE_KEY}", "embed_images"),
        output:
            f"{FEAT_DIR}/images/{IMAGE_KEY}.parquet",
        log:
            f"logs/{DS}/gather_image_features/{IMAGE_KEY}.log",
        benchmark:
            f"benchmarks/{DS}/gather_image_features/{IMAGE_KEY}.tsv"
        localrule: True
        conda:
            "../envs/data.yaml"
        threads: 1
        resources:
            mem_mb=job_resource("gather_image_features", "mem_mb"),
            runtime=job_resource(
                "gather_image_features", "runtime", default=LIGHT_JOB_MINUTES
            ),
        script:
            "../scripts/gather_parts.py"


if PARTS["embed_texts"] > 1:

    rule gather_text_features:
        input:
            gathered_parts(f"{FEAT_DIR}/texts/{TEXT_KEY}/{{source}}", "embed_texts"),
        output:
            f"{FEAT_DIR}/texts/{TEXT_KEY}/{{source}}.parquet",
        log:
            f"logs/{DS}/gather_text_features/{TEXT_KEY}.{{source}}.log",
        benchmark:
            f"benchmarks/{DS}/gather_text_features/{TEXT_KEY}.{{source}}.tsv"
        localrule: True
        conda:
            "../envs/data.yaml"
        threads: 1
        resources:
            mem_mb=job_resource("gather_text_features", "mem_mb"),
            runtime=job_resource(
                "gather_text_features", "runtime", default=LIGHT_JOB_MINUTES
            ),
        script:
            "../scripts/gather_parts.py"
