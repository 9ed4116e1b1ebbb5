# ccr.translate: English training captions -> target language (per language, per backend).


rule translate_captions:
    input:
        captions=f"{DATA_DIR}/captions.parquet",
    output:
        f"{DATA_DIR}/translations/{{lang}}.{{backend}}.parquet",
    params:
        spec=lambda wc: translate_spec(wc.lang),
    log:
        f"logs/{DATASET}/translate_captions/{{lang}}.{{backend}}.log",
    benchmark:
        f"benchmarks/{DATASET}/translate_captions/{{lang}}.{{backend}}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        gpu=lambda wc: RES.get("gpu", 0) if translate_spec(wc.lang)["backend"].startswith("hf") else 0,
    conda:
        "../../envs/translate.yaml"
    script:
        "../scripts/translate_captions.py"


rule mt_quality:
    input:
        source=lambda wc: config["mt_quality"][wc.lang]["source"],
        reference=lambda wc: config["mt_quality"][wc.lang]["reference"],
    output:
        f"{REPORT_DIR}/mt_quality.{{lang}}.json",
    params:
        spec=lambda wc: translate_spec(wc.lang),
        code=lambda wc: language_code(wc.lang),
    log:
        f"logs/{DATASET}/mt_quality.{{lang}}.log",
    threads: 1
    resources:
        mem_mb=4000,
    conda:
        "../../envs/translate.yaml"
    script:
        "../scripts/mt_quality.py"
