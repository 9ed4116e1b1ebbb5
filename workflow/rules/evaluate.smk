# ccr.evaluate: FAISS Recall@K on the test split (the first and only time test rows are read).
# {ekey} hashes what is evaluated (the trained student, or the zero-shot system) and the query set.


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
        mem_mb=4000,
        gpu=job_resource("evaluate", "gpu"),
    params:
        spec=evaluate_params,
    script:
        "../scripts/evaluate.py"
