# ccr.translate: English training captions -> target language (per language code and translate settings).


rule translate_captions:
    input:
        captions=f"{DATA_DIR}/captions.parquet",
    output:
        f"{DATA_DIR}/translations/{{code}}/{{trkey}}.parquet",
    log:
        f"logs/{DS}/translate_captions/{{code}}.{{trkey}}.log",
    benchmark:
        f"benchmarks/{DS}/translate_captions/{{code}}.{{trkey}}.tsv"
    conda:
        "../envs/translate.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        gpu=translate_gpus,
    params:
        spec=translate_params,
    script:
        "../scripts/translate_captions.py"


rule mt_quality:
    input:
        source=mt_quality_source,
        reference=mt_quality_reference,
    output:
        f"{REPORT_DIR}/mt_quality.{{lang}}.json",
    log:
        f"logs/{DS}/mt_quality/{RUN_NAME}.{{lang}}.log",
    benchmark:
        f"benchmarks/{DS}/mt_quality/{RUN_NAME}.{{lang}}.tsv"
    conda:
        "../envs/translate.yaml"
    threads: 1
    resources:
        mem_mb=4000,
    params:
        spec=lambda wc: translate_spec(wc.lang),
        code=lambda wc: language_code(wc.lang),
    script:
        "../scripts/mt_quality.py"
