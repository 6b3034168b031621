# Per tomogram: denoise + equalise, then DoG candidates, then 2D patches. A copick campaign
# first copies each run's tomogram to MRC (copick_tomogram), a RELION campaign links each
# tomogram under its rlnTomoName (relion_tomogram). With tilt series, the geometry
# of each against its tomogram is checked first (check_geometry) and used by `patches`.


if config["copick"]:

    rule copick_tomogram:
        input:
            config["copick"],
        output:
            f"{RESULTS}/tomograms/{{tomogram}}.mrc",
        log:
            f"{RESULTS}/logs/copick_tomogram/{{tomogram}}.log",
        params:
            options=for_tomogram(opts.copick_tomogram),
        threads: 1
        resources:
            mem_mb=tomogram_mem_mb(volumes=2),
            runtime=tomogram_runtime(minutes_per_gib=2),
        conda:
            CONDA_ENV
        shell:
            "milopyp copick-tomogram {params.options} -o {output} 2> {log}"


if config["relion_tomograms"]:

    # results/tomograms/{rlnTomoName}.mrc -> RELION's rec_{rlnTomoName}.mrc: the commands name
    # a tomogram after its file's stem. A symbolic link, not a milopyp command: nothing to compute.
    rule relion_tomogram:
        input:
            relion_tomogram_path,
        output:
            f"{RESULTS}/tomograms/{{tomogram}}.mrc",
        log:
            f"{RESULTS}/logs/relion_tomogram/{{tomogram}}.log",
        params:
            target=link_target,
        localrule: True
        threads: 1
        resources:
            mem_mb=100,
            runtime=1,
        conda:
            CONDA_ENV
        shell:
            "ln -sf {params.target:q} {output:q} 2> {log}"



rule preprocess:
    input:
        tomogram_path,
    output:
        temp(f"{RESULTS}/preprocessed/{{tomogram}}.mrc"),
    log:
        f"{RESULTS}/logs/preprocess/{{tomogram}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/preprocess/{{tomogram}}.tsv"
    params:
        options=opts.preprocess(CAMPAIGN),
    threads: 1
    resources:
        mem_mb=tomogram_mem_mb(volumes=4),
        runtime=tomogram_runtime(minutes_per_gib=2),
    conda:
        CONDA_ENV
    shell:
        "milopyp preprocess --tomogram {input} -o {output} {params.options} 2> {log}"


rule candidates:
    input:
        f"{RESULTS}/preprocessed/{{tomogram}}.mrc",
    output:
        f"{RESULTS}/candidates/{{tomogram}}.csv",
    log:
        f"{RESULTS}/logs/candidates/{{tomogram}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/candidates/{{tomogram}}.tsv"
    params:
        threads=THREADS,
        options=opts.candidates(CAMPAIGN),
    threads: THREADS
    resources:
        mem_mb=tomogram_mem_mb(volumes=5),
        runtime=tomogram_runtime(minutes_per_gib=5),
    conda:
        CONDA_ENV
    shell:
        "milopyp --threads {params.threads} candidates"
        " --tomogram {input} -o {output} --tomogram-name {wildcards.tomogram}"
        " {params.options} 2> {log}"


if config["tiltseries"]:

    rule check_geometry:
        input:
            tomogram=tomogram_path,
            tiltseries=tiltseries_input,
        output:
            f"{RESULTS}/geometry/{{tomogram}}.json",
        log:
            f"{RESULTS}/logs/check_geometry/{{tomogram}}.log",
        params:
            options=for_tomogram(opts.check_geometry),
        threads: 1
        resources:
            mem_mb=tomogram_mem_mb(volumes=3),
            runtime=tomogram_runtime(minutes_per_gib=2),
        conda:
            CONDA_ENV
        shell:
            "milopyp check-geometry --tomogram {input.tomogram} --tilt-series {input.tiltseries}"
            " {params.options} -o {output} 2> {log}"


rule patches:
    input:
        tomogram=f"{RESULTS}/preprocessed/{{tomogram}}.mrc",
        candidates=f"{RESULTS}/candidates/{{tomogram}}.csv",
        tiltseries=tiltseries_input,
        geometry=geometry_input,
    output:
        f"{RESULTS}/patches/{{tomogram}}.npz",
    log:
        f"{RESULTS}/logs/patches/{{tomogram}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/patches/{{tomogram}}.tsv"
    params:
        options=patches_options,
    threads: 1
    resources:
        mem_mb=tomogram_mem_mb(volumes=3),
        runtime=tomogram_runtime(minutes_per_gib=2),
    conda:
        CONDA_ENV
    shell:
        "milopyp patches --tomogram {input.tomogram} --candidates {input.candidates}"
        " {params.options} -o {output} 2> {log}"


rule evaluate_candidates:
    input:
        picks=CAMPAIGN.per_tomogram(f"{RESULTS}/candidates"),
        truth=CAMPAIGN.truth_paths(),
    output:
        table=f"{RESULTS}/evaluation/candidates.csv",
        json=f"{RESULTS}/evaluation/candidates.json",
    log:
        f"{RESULTS}/logs/evaluate_candidates.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate_candidates.tsv"
    params:
        options=opts.evaluate_candidates(CAMPAIGN),
    threads: 1
    resources:
        mem_mb=per_attempt(2000),
        runtime=per_attempt(15),
    conda:
        CONDA_ENV
    shell:
        "milopyp evaluate --picks {input.picks} --truth {input.truth} {params.options}"
        " -o {output.table} --json {output.json} > {log} 2>&1"
