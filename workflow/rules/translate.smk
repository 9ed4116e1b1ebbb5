# ccr.translate: English training captions -> target language (per language code and translate settings).


rule translate_captions:
    input:
        captions=f"{DATA_DIR}/captions.parquet",
    output:
        part_output(f"{DATA_DIR}/translations/{{code}}/{{trkey}}", "translate"),
    log:
        f"logs/{DS}/translate_captions/{{code}}.{{trkey}}{part_tag('translate')}.log",
    benchmark:
        f"benchmarks/{DS}/translate_captions/{{code}}.{{trkey}}{part_tag('translate')}.tsv"
    conda:
        translate_conda_env
    threads: 1
    resources:
        mem_mb=translate_resource("mem_mb", 4000),
        runtime=translate_resource("runtime"),
        gpu=translate_resource("gpu"),
    params:
        spec=translate_params,
        part=part_of,
    script:
        "../scripts/translate_captions.py"


if PARTS["translate"] > 1:

    rule gather_translations:
        input:
            gathered_parts(f"{DATA_DIR}/translations/{{code}}/{{trkey}}", "translate"),
        output:
            f"{DATA_DIR}/translations/{{code}}/{{trkey}}.parquet",
        log:
            f"logs/{DS}/gather_translations/{{code}}.{{trkey}}.log",
        benchmark:
            f"benchmarks/{DS}/gather_translations/{{code}}.{{trkey}}.tsv"
        localrule: True
        conda:
            "../envs/data.yaml"
        threads: 1
        resources:
            mem_mb=job_resource("gather_translations", "mem_mb", default=4000),
            runtime=job_resource(
                "gather_translations", "runtime", default=LIGHT_JOB_MINUTES
            ),
        script:
            "../scripts/gather_parts.py"


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
        mem_mb=job_resource("mt_quality", "mem_mb", default=4000),
        runtime=job_resource("mt_quality", "runtime", default=LIGHT_JOB_MINUTES),
    params:
        spec=lambda wc: translate_spec(wc.lang),
        code=lambda wc: language_code(wc.lang),
    script:
        "../scripts/mt_quality.py"


rule combine_translations:
    input:
        combined_translations,
    output:
        f"{DATA_DIR}/translations/{MULTI}/{{trkey}}.parquet",
    log:
        f"logs/{DS}/combine_translations/{{trkey}}.log",
    benchmark:
        f"benchmarks/{DS}/combine_translations/{{trkey}}.tsv"
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=job_resource("combine_translations", "mem_mb", default=4000),
        runtime=job_resource(
            "combine_translations", "runtime", default=LIGHT_JOB_MINUTES
        ),
    script:
        "../scripts/combine_translations.py"


rule back_translate_captions:
    input:
        translations=f"{DATA_DIR}/translations/{{code}}/{{trkey}}.parquet",
        captions=f"{DATA_DIR}/captions.parquet",
    output:
        f"{DATA_DIR}/backtranslations/{{code}}/{{trkey}}.parquet",
    log:
        f"logs/{DS}/back_translate_captions/{{code}}.{{trkey}}.log",
    benchmark:
        f"benchmarks/{DS}/back_translate_captions/{{code}}.{{trkey}}.tsv"
    conda:
        "../envs/translate.yaml"
    threads: 1
    resources:
        mem_mb=job_resource("back_translate_captions", "mem_mb", default=4000),
        runtime=job_resource(
            "back_translate_captions", "runtime", default=LIGHT_JOB_MINUTES
        ),
    params:
        spec=backtranslate_params,
    script:
        "../scripts/back_translate_captions.py"


rule combine_backtranslations:
    input:
        combined_backtranslations,
    output:
        f"{DATA_DIR}/backtranslations/{MULTI}/{{trkey}}.parquet",
    log:
        f"logs/{DS}/combine_backtranslations/{{trkey}}.log",
    benchmark:
        f"benchmarks/{DS}/combine_backtranslations/{{trkey}}.tsv"
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=job_resource("combine_backtranslations", "mem_mb", default=4000),
        runtime=job_resource(
            "combine_backtranslations", "runtime", default=LIGHT_JOB_MINUTES
        ),
    script:
        "../scripts/combine_translations.py"
