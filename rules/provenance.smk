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
        # each job's threads are min(its rule's threads, --cores), and the thread count
        # changes float sums: the answer is reproduced with the same --cores
        cores=scheduler_cores(),
    localrule: True
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    conda:
        CONDA_ENV
    shell:
        "milopyp provenance --config-json {params.config:q} --repo {params.repo:q}"
        " {params.records} --extra snakemake_cores={params.cores} -o {output} 2> {log}"
