# ccr.train: CL2CM teacher (English <-> MT text), then the cross-modal student (+ LECCR slots).
# {trainset} is the training text: "<lang>.<mt backend>", or "no-mt" (English only, shared by
# every language without MT).


rule train_teacher:
    input:
        unpack(teacher_inputs),
    output:
        checkpoint=f"{RUNS_DIR}/teachers/{{trainset}}/{{tkey}}/seed{{seed}}/teacher.pt",
        history=f"{RUNS_DIR}/teachers/{{trainset}}/{{tkey}}/seed{{seed}}/history.parquet",
    params:
        train=lambda wc: teacher_params_for_key(wc.tkey),
        seed=lambda wc: int(wc.seed),
        lang=lambda wc: language_code(trainset_lang(wc.trainset)),
    log:
        f"logs/{DATASET}/train_teacher/{{trainset}}.{{tkey}}.seed{{seed}}.log",
    benchmark:
        f"benchmarks/{DATASET}/train_teacher/{{trainset}}.{{tkey}}.seed{{seed}}.tsv"
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
        checkpoint=f"{RUNS_DIR}/{{system}}/students/{{trainset}}/seed{{seed}}/student.pt",
        history=f"{RUNS_DIR}/{{system}}/students/{{trainset}}/seed{{seed}}/history.parquet",
    params:
        train=lambda wc: system_spec(wc.system).student,
        seed=lambda wc: int(wc.seed),
        lang=lambda wc: "en" if wc.trainset == NO_MT else language_code(trainset_lang(wc.trainset)),
    log:
        f"logs/{DATASET}/train_student/{{system}}.{{trainset}}.seed{{seed}}.log",
    benchmark:
        f"benchmarks/{DATASET}/train_student/{{system}}.{{trainset}}.seed{{seed}}.tsv"
    threads: HEAVY_THREADS
    resources:
        mem_mb=RES.get("mem_mb", 8000),
        runtime=RES.get("runtime", 120),
        gpu=RES.get("gpu", 0),
    conda:
        "../../envs/train.yaml"
    script:
        "../scripts/train_student.py"
