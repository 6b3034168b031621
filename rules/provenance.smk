# How this results folder was made: config, seed, package versions, git commit, host, time.


rule provenance:
    output:
        f"{RESULTS}/provenance.json",
    log:
        f"{RESULTS}/logs/provenance.log",
    benchmark:
        f"{RESULTS}/benchmarks/provenance.tsv"
    params:
        config=provenance_config_json,
        repo=workflow.basedir,
    localrule: True
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    conda:
        CONDA_ENV
    shell:
        "milopyp provenance --config-json {params.config:q} --repo {params.repo:q} -o {output}"
        " 2> {log}"
