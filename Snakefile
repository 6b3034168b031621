# milopyp: find proteins in cryo-electron tomograms.
#
#   snakemake --cores N --configfile my.yaml                       (from the repository)
#   snakemake --snakefile /path/to/milopyp/Snakefile --cores N --configfile my.yaml
#
# The rules call the `milopyp` command, which must be on PATH (activate .venv first).
from snakemake.utils import min_version

min_version("9.0")


include: "rules/common.smk"
include: "rules/resources.smk"


wildcard_constraints:
    tomogram=tomogram_constraint(),
    target=target_constraint(),


include: "rules/preprocess.smk"
include: "rules/explore.smk"
include: "rules/select.smk"
include: "rules/localize.smk"
include: "rules/provenance.smk"


rule all:
    input:
        CAMPAIGN.all_outputs(),
    default_target: True


onsuccess:
    print(CAMPAIGN.exploration_instructions())
