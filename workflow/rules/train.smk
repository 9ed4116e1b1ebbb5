# ccr.train: CL2CM teacher (English <-> MT text), then the cross-modal student (+ LECCR slots).


rule train_teacher:
    input:
        unpack(teacher_inputs),
    output:
        checkpoint=f"{RUNS_DIR}/teachers/{{lang}}/{{tkey}}/seed{{seed}}/teacher.pt",
        history=f"{RUNS_DIR}/teachers/{{lang}}/{{tkey}}/seed{{seed}}/history.parquet",
    params:
        train=lambda wc: teacher_params_for_key(wc.tkey),
        seed=lambda wc: int(wc.seed),
    log:
        f"logs/{DATASET}/train_teacher/{{lang}}.{{tkey}}.seed{{seed}}.log",
    benchmark:
        f"benchmarks/{DATASET}/train_teacher/{{lang}}.{{tkey}}.seed{{seed}}.tsv"
    threads: HEAVY_THREADS
    resources:
        mem_mb=RES.get("mem_mb", 8000),
        runtime=RES.get("runtime", 120),
        gpu=RES.get("gpu", 0),
    conda:
        "../../envs/train.yaml"
    script:
        "../scripts/train_teacher.py"


rule train_student:
    input:
        unpack(student_inputs),
    output:
        checkpoint=f"{RUNS_DIR}/{{system}}/{{lang}}/seed{{seed}}/student/student.pt",
        history=f"{RUNS_DIR}/{{system}}/{{lang}}/seed{{seed}}/student/history.parquet",
    params:
        train=lambda wc: system_spec(wc.system).student,
        seed=lambda wc: int(wc.seed),
    log:
        f"logs/{DATASET}/train_student/{{system}}.{{lang}}.seed{{seed}}.log",
    benchmark:
        f"benchmarks/{DATASET}/train_student/{{system}}.{{lang}}.seed{{seed}}.tsv"
    threads: HEAVY_THREADS
    resources:
        mem_mb=RES.get("mem_mb", 8000),
        runtime=RES.get("runtime", 120),
        gpu=RES.get("gpu", 0),
    conda:
        "../../envs/train.yaml"
    script:
        "../scripts/train_student.py"
