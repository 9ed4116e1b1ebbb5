# Cross-lingual cross-modal retrieval (CL2CM + LECCR) workflow.
#
#   prepare_dataset -> translate_captions (per language) -> describe_images -> embed_images
#   -> embed_texts -> train_teacher -> train_student -> evaluate -> report
#
# Each rule file mirrors one module of the library (src/ccr/<module>); the scripts under
# workflow/scripts/ only unpack the `snakemake` object and call that module.

from snakemake.utils import min_version

min_version("9.0")


# The default config, unless one is given with --configfile (Snakemake would otherwise deep-merge
# the two, mixing e.g. the generated dataset's params into another importer's).
if not config:

    configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/translate.smk"
include: "workflow/rules/describe.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


report: "workflow/report/workflow.rst"


rule all:
    input:
        all_outputs(),
    default_target: True
