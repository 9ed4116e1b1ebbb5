# ccr.train: CL2CM teacher (English <-> MT text), then the cross-modal student (+ LECCR slots).
# {trainset} is the training text: "<lang>.<mt backend>", or "no-mt" (English only, shared by
# every language without MT). {tkey}/{skey} hash the teacher's/student's effective params, so
# systems that would train the same model share it.


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
        checkpoint=f"{RUNS_DIR}/students/{{trainset}}/{{skey}}/seed{{seed}}/student.pt",
        history=f"{RUNS_DIR}/students/{{trainset}}/{{skey}}/seed{{seed}}/history.parquet",
    params:
        train=lambda wc: student_plan(system_for_student(wc.trainset, wc.skey), wc.trainset).params,
        seed=lambda wc: int(wc.seed),
        lang=lambda wc: "en" if wc.trainset == NO_MT else language_code(trainset_lang(wc.trainset)),
    log:
        f"logs/{DATASET}/train_student/{{trainset}}.{{skey}}.seed{{seed}}.log",
    benchmark:
        f"benchmarks/{DATASET}/train_student/{{trainset}}.{{skey}}.seed{{seed}}.tsv"
    threads: HEAVY_THREADS
    resources:
        mem_mb=RES.get("mem_mb", 8000),
        runtime=RES.get("runtime", 120),
        gpu=RES.get("gpu", 0),
    conda:
        "../../envs/train.yaml"
    script:
        "../scripts/train_student.py"
