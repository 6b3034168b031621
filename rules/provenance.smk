# How this results folder was made: config, seed, package versions, git commit, host, time,
# and what the jobs decided from the data (tilt-series geometry) or the machine (exploration
# settings without a GPU).


rule provenance:
    input:
        unpack(provenance_records),
    output:
        f"{RESULTS}/provenance.json",
    log:
        f"{RESULTS}/logs/provenance.log",
    benchmark:
        f"{RESULTS}/benchmarks/provenance.tsv"
    params:
        config=provenance_config_json,
        repo=workflow.basedir,
        records=provenance_records_option,
    localrule: True
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    conda:
        CONDA_ENV
    # the thread counts that change float sums are recorded by the jobs themselves
    # (explore/settings.json, model.pt); --cores is not a param here, or a rerun with
    # other --cores would rewrite this file while nothing else is redone
    shell:
        "milopyp provenance --config-json {params.config:q} --repo {params.repo:q}"
        " {params.records} -o {output} 2> {log}"
