# ccr.train: CL2CM teacher (English <-> MT text), then the cross-modal student (+ LECCR slots).
# {trainset} is the training text: "<code>.<translation key>", or "no-mt" (English only, shared by
# every language without MT). {tkey}/{skey} hash the teacher's/student's effective params and every
# upstream key, so systems that would train the same model share it.


rule train_teacher:
    input:
        unpack(teacher_inputs),
    output:
        checkpoint=f"{RUNS_DIR}/teachers/{{trainset}}/{{tkey}}/seed{{seed}}/teacher.pt",
        history=f"{RUNS_DIR}/teachers/{{trainset}}/{{tkey}}/seed{{seed}}/history.parquet",
    log:
        f"logs/{DS}/train_teacher/{{trainset}}.{{tkey}}.seed{{seed}}.log",
    benchmark:
        f"benchmarks/{DS}/train_teacher/{{trainset}}.{{tkey}}.seed{{seed}}.tsv"
    conda:
        train_conda_env("train_teacher", teacher_params)
    threads: job_resource("train_teacher", "threads")
    resources:
        mem_mb=job_resource("train_teacher", "mem_mb"),
        runtime=job_resource("train_teacher", "runtime"),
        gpu=train_gpus("train_teacher", teacher_params),
    params:
        train=teacher_params,
        lang=lambda wc: training_language(wc.trainset),
    script:
        "../scripts/train_teacher.py"


rule train_student:
    input:
        unpack(student_inputs),
    output:
        checkpoint=f"{RUNS_DIR}/students/{{trainset}}/{{skey}}/seed{{seed}}/student.pt",
        history=f"{RUNS_DIR}/students/{{trainset}}/{{skey}}/seed{{seed}}/history.parquet",
    log:
        f"logs/{DS}/train_student/{{trainset}}.{{skey}}.seed{{seed}}.log",
    benchmark:
        f"benchmarks/{DS}/train_student/{{trainset}}.{{skey}}.seed{{seed}}.tsv"
    conda:
        train_conda_env("train_student", student_params)
    threads: job_resource("train_student", "threads")
    resources:
        mem_mb=job_resource("train_student", "mem_mb"),
        runtime=job_resource("train_student", "runtime"),
        gpu=train_gpus("train_student", student_params),
    params:
        train=student_params,
        lang=lambda wc: training_language(wc.trainset),
    script:
        "../scripts/train_student.py"
