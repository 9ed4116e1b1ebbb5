# ccr.report: metrics table, Recall@K plot, training curves and retrieved examples, for one config.
# The report folder is keyed by the config's hash; every metrics row carries the system, query set
# and seed, plus the config hash and the code version, so `ccr results` tells runs apart.


rule report:
    input:
        metrics=all_metrics(),
        histories=all_histories(),
        examples=all_examples(),
    output:
        html=report(
            f"{REPORT_DIR}/report.html",
            category="Summary",
            caption="../report/workflow.rst",
        ),
        table=report(
            f"{REPORT_DIR}/metrics_table.md",
            category="Summary",
            caption="../report/metrics.rst",
        ),
        table_parquet=f"{REPORT_DIR}/metrics_table.parquet",
        metrics=f"{REPORT_DIR}/metrics.parquet",
        examples_parquet=f"{REPORT_DIR}/examples.parquet",
        recall=report(
            f"{REPORT_DIR}/recall_at_k.png",
            category="Plots",
            caption="../report/recall.rst",
        ),
        curves=report(
            f"{REPORT_DIR}/training_curves.png",
            category="Plots",
            caption="../report/curves.rst",
        ),
        examples=report(
            f"{REPORT_DIR}/examples.html",
            category="Examples",
            caption="../report/examples.rst",
        ),
    log:
        f"logs/{DS}/report/{RUN_NAME}-{CONFIG_HASH}.log",
    benchmark:
        f"benchmarks/{DS}/report/{RUN_NAME}-{CONFIG_HASH}.tsv"
    conda:
        "../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=job_resource("report", "mem_mb", default=2000),
        runtime=job_resource("report", "runtime", default=LIGHT_JOB_MINUTES),
    params:
        runs=run_table(),
        tags=report_tags(),
        history_tags=history_tags(),
    script:
        "../scripts/report.py"
