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
            options=copick_tomogram_options,
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
        sigma=config["preprocess"]["denoise_sigma"],
        equalize="" if config["preprocess"]["equalize"] else "--no-equalize",
        invert="--invert" if config["preprocess"]["invert"] else "",
        voxel_size=voxel_size_option(),
    threads: 1
    resources:
        mem_mb=tomogram_mem_mb(volumes=4),
        runtime=tomogram_runtime(minutes_per_gib=2),
    conda:
        CONDA_ENV
    shell:
        "milopyp preprocess --tomogram {input} -o {output} --sigma {params.sigma}"
        " {params.equalize} {params.invert} {params.voxel_size} 2> {log}"


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
        diameter=config["particle_diameter"],
        threshold=config["candidates"]["threshold_std"],
        levels=config["candidates"]["levels"],
        nms=nms_radius_option(),
        cap=max_candidates_option(),
        voxel_size=voxel_size_option(),
    threads: THREADS
    resources:
        mem_mb=tomogram_mem_mb(volumes=5),
        runtime=tomogram_runtime(minutes_per_gib=5),
    conda:
        CONDA_ENV
    shell:
        "milopyp --threads {params.threads} candidates"
        " --tomogram {input} -o {output} --tomogram-name {wildcards.tomogram}"
        " --particle-diameter {params.diameter} --threshold-std {params.threshold}"
        " --levels {params.levels} {params.nms} {params.cap} {params.voxel_size} 2> {log}"


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
            options=check_geometry_options,
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
        size=patch_size_vox(),
        slices=config["patches"]["slices"],
        max_angle=config["patches"]["max_tilt_angle"],
        tiltseries=tiltseries_option,
        invert="--invert-tilt-series" if config["preprocess"]["invert"] else "",
    threads: 1
    resources:
        mem_mb=tomogram_mem_mb(volumes=3),
        runtime=tomogram_runtime(minutes_per_gib=2),
    conda:
        CONDA_ENV
    shell:
        "milopyp patches --tomogram {input.tomogram} --candidates {input.candidates}"
        " {params.tiltseries} {params.invert} --size {params.size} --slices {params.slices}"
        " --max-angle {params.max_angle} -o {output} 2> {log}"


rule evaluate_candidates:
    input:
        picks=expand(f"{RESULTS}/candidates/{{tomogram}}.csv", tomogram=sorted(TOMOGRAMS)),
        truth=truth_paths(),
    output:
        table=f"{RESULTS}/evaluation/candidates.csv",
        json=f"{RESULTS}/evaluation/candidates.json",
    log:
        f"{RESULTS}/logs/evaluate_candidates.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate_candidates.tsv"
    params:
        radius=evaluation_radius_option(),
        species=species_option(),
    threads: 1
    resources:
        mem_mb=per_attempt(2000),
        runtime=per_attempt(15),
    conda:
        CONDA_ENV
    shell:
        "milopyp evaluate --picks {input.picks} --truth {input.truth} {params.radius}"
        " {params.species} -o {output.table} --json {output.json} > {log} 2>&1"
