# ccr.evaluate: FAISS Recall@K on the test split (the first and only time test rows are read).


rule evaluate:
    input:
        unpack(evaluate_inputs),
    output:
        metrics=f"{RUNS_DIR}/{{system}}/{{lang}}/seed{{seed}}/metrics.parquet",
        metrics_json=f"{RUNS_DIR}/{{system}}/{{lang}}/seed{{seed}}/metrics.json",
        examples=f"{RUNS_DIR}/{{system}}/{{lang}}/seed{{seed}}/examples.parquet",
    params:
        student=lambda wc: student_plan(wc.system, trainset_of(wc.lang)).params,
        ks=config.get("evaluate", {}).get("ks", [1, 5, 10]),
        query_lang=lambda wc: language_code(wc.lang),
        query_pattern=lambda wc: translate_spec(wc.lang).get("query_pattern"),
        tags=lambda wc: {"dataset": DATASET, "system": wc.system, "lang": wc.lang, "seed": int(wc.seed)},
    log:
        f"logs/{DATASET}/evaluate/{{system}}.{{lang}}.seed{{seed}}.log",
    threads: 1
    resources:
        mem_mb=4000,
    conda:
        "../../envs/evaluate.yaml"
    script:
        "../scripts/evaluate.py"
