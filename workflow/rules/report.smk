# ccr.report: metrics table, Recall@K plot, training curves and retrieved examples.


rule report:
    input:
        metrics=all_metrics(),
        histories=all_histories(),
        examples=[p.replace("metrics.parquet", "examples.parquet") for p in all_metrics()],
    output:
        html=report(f"{REPORT_DIR}/report.html", category="Summary", caption="../report/workflow.rst"),
        table=report(f"{REPORT_DIR}/metrics_table.md", category="Summary", caption="../report/metrics.rst"),
        table_parquet=f"{REPORT_DIR}/metrics_table.parquet",
        recall=report(f"{REPORT_DIR}/recall_at_k.png", category="Plots", caption="../report/recall.rst"),
        curves=report(f"{REPORT_DIR}/training_curves.png", category="Plots", caption="../report/curves.rst"),
        examples=report(f"{REPORT_DIR}/examples.html", category="Examples", caption="../report/examples.rst"),
    params:
        history_tags=history_tags(),
    log:
        f"logs/{DATASET}/report.{config.get('run_name', 'main')}.log",
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        "../../envs/report.yaml"
    script:
        "../scripts/report.py"
