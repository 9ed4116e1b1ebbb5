# ccr.evaluate: FAISS Recall@K on the test split (the first and only time test rows are read), or on
# val when a config chooses settings. {gkey} hashes the model and the split: its gallery is embedded
# once and shared by every query set; {ekey} hashes the model and the query set. With the querybank
# on, its training texts and images are embedded once per model too (rules embed_text_bank and
# embed_image_bank): the texts normalise the gallery (text->image), the images every query set
# (image->text), and the model's search bundle carries both.


rule embed_gallery:
    input:
        unpack(gallery_inputs),
    output:
        f"{RUNS_DIR}/galleries/{{gkey}}.parquet",
    log:
        f"logs/{DS}/embed_gallery/{{gkey}}.log",
    benchmark:
        f"benchmarks/{DS}/embed_gallery/{{gkey}}.tsv"
    conda:
        conda_env("evaluate", gpus=job_resource("evaluate", "gpu"))
    threads: 1
    resources:
        mem_mb=job_resource("embed_gallery", "mem_mb", default=4000),
        runtime=job_resource("embed_gallery", "runtime", default=LIGHT_JOB_MINUTES),
        gpu=job_resource("evaluate", "gpu"),
    params:
        spec=gallery_params,
    script:
        "../scripts/embed_gallery.py"


rule embed_text_bank:
    input:
        unpack(bank_inputs),
    output:
        f"{RUNS_DIR}/textbanks/{{gkey}}.parquet",
    log:
        f"logs/{DS}/embed_text_bank/{{gkey}}.log",
    benchmark:
        f"benchmarks/{DS}/embed_text_bank/{{gkey}}.tsv"
    conda:
        conda_env("evaluate", gpus=job_resource("evaluate", "gpu"))
    threads: 1
    resources:
        mem_mb=job_resource("embed_text_bank", "mem_mb", default=4000),
        runtime=job_resource("embed_text_bank", "runtime", default=LIGHT_JOB_MINUTES),
        gpu=job_resource("evaluate", "gpu"),
    params:
        spec=gallery_params,
    script:
        "../scripts/embed_querybank.py"


rule embed_image_bank:
    input:
        unpack(bank_inputs),
    output:
        f"{RUNS_DIR}/imagebanks/{{gkey}}.parquet",
    log:
        f"logs/{DS}/embed_image_bank/{{gkey}}.log",
    benchmark:
        f"benchmarks/{DS}/embed_image_bank/{{gkey}}.tsv"
    conda:
        conda_env("evaluate", gpus=job_resource("evaluate", "gpu"))
    threads: 1
    resources:
        mem_mb=job_resource("embed_image_bank", "mem_mb", default=4000),
        runtime=job_resource("embed_image_bank", "runtime", default=LIGHT_JOB_MINUTES),
        gpu=job_resource("evaluate", "gpu"),
    params:
        spec=gallery_params,
    script:
        "../scripts/embed_querybank.py"


rule evaluate:
    input:
        unpack(evaluate_inputs),
    output:
        metrics=f"{RUNS_DIR}/evals/{{ekey}}/metrics.parquet",
        metrics_json=f"{RUNS_DIR}/evals/{{ekey}}/metrics.json",
        examples=f"{RUNS_DIR}/evals/{{ekey}}/examples.parquet",
    log:
        f"logs/{DS}/evaluate/{{ekey}}.log",
    benchmark:
        f"benchmarks/{DS}/evaluate/{{ekey}}.tsv"
    conda:
        conda_env("evaluate", gpus=job_resource("evaluate", "gpu"))
    threads: 1
    resources:
        mem_mb=job_resource("evaluate", "mem_mb", default=4000),
        runtime=job_resource("evaluate", "runtime", default=LIGHT_JOB_MINUTES),
        gpu=job_resource("evaluate", "gpu"),
    params:
        spec=evaluate_params,
    script:
        "../scripts/evaluate.py"
