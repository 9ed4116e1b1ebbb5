# ccr.search: each trained student exported as one model bundle (weights, architecture, the encoders
# that feed it, its evaluation), the file `ccr index`, `ccr search` and `ccr serve` load.
# {bkey} hashes the student and everything the bundle records (see bundle_plan in common.smk).


rule export_bundle:
    input:
        unpack(export_bundle_inputs),
    output:
        bundle=f"results/bundles/{DS}/{{bkey}}/bundle.pt",
    log:
        f"logs/{DS}/export_bundle/{{bkey}}.log",
    benchmark:
        f"benchmarks/{DS}/export_bundle/{{bkey}}.tsv"
    conda:
        "../envs/evaluate.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    params:
        spec=export_bundle_params,
    script:
        "../scripts/export_bundle.py"
