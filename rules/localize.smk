# Few-shot localisation: train on the labelled tomograms, pick in every tomogram, export.


rule train_localize:
    input:
        labels=training_labels,
        tomograms=training_tomograms,
    output:
        f"{RESULTS}/localize/model.pt",
    log:
        f"{RESULTS}/logs/train_localize.log",
    benchmark:
        f"{RESULTS}/benchmarks/train_localize.tsv"
    params:
        diameter=config["particle_diameter"],
        options=train_localize_options(),
        seed=config["seed"],
        device=config["device"],
    threads: 4
    resources:
        gpu=gpus_per_job(),
        mem_mb=train_localize_mem_mb,
        runtime=train_localize_runtime,
    conda:
        CONDA_ENV
    shell:
        "milopyp train-localize --tomograms {input.tomograms} --labels {input.labels}"
        " -o {output} --particle-diameter {params.diameter} {params.options}"
        " --seed {params.seed} --device {params.device} 2> {log}"


rule localize:
    input:
        model=f"{RESULTS}/localize/model.pt",
        tomogram=tomogram_path,
    output:
        picks=f"{RESULTS}/picks/{{tomogram}}.csv",
    log:
        f"{RESULTS}/logs/localize/{{tomogram}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/localize/{{tomogram}}.tsv"
    params:
        options=localize_options,
        device=config["device"],
    threads: 2
    resources:
        gpu=gpus_per_job(),
        mem_mb=tomogram_mem_mb(volumes=3, base_mb=2500),
        runtime=tomogram_runtime(minutes_per_gib=5, network=True),
    conda:
        CONDA_ENV
    shell:
        "milopyp localize --model {input.model} --tomogram {input.tomogram}"
        " --tomogram-name {wildcards.tomogram} -o {output.picks}"
        " {params.options} --device {params.device} 2> {log}"


rule export:
    input:
        picks=expand(f"{RESULTS}/picks/{{tomogram}}.csv", tomogram=sorted(TOMOGRAMS)),
        tomograms=[TOMOGRAMS[name] for name in sorted(TOMOGRAMS)],
    output:
        star=f"{RESULTS}/picks.star",
        csv=f"{RESULTS}/picks.csv",
    log:
        f"{RESULTS}/logs/export.log",
    benchmark:
        f"{RESULTS}/benchmarks/export.tsv"
    params:
        voxel_size=voxel_size_option(),
    threads: 1
    resources:
        mem_mb=per_attempt(2000),
        runtime=per_attempt(15),
    conda:
        CONDA_ENV
    shell:
        "milopyp export --picks {input.picks} --tomograms {input.tomograms}"
        " -o {output.star} --csv {output.csv} {params.voxel_size} 2> {log}"


rule evaluate_picks:
    input:
        picks=expand(f"{RESULTS}/picks/{{tomogram}}.csv", tomogram=sorted(TOMOGRAMS)),
        truth=truth_paths(),
    output:
        table=f"{RESULTS}/evaluation/picks.csv",
        json=f"{RESULTS}/evaluation/picks.json",
    log:
        f"{RESULTS}/logs/evaluate_picks.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate_picks.tsv"
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


rule report:
    input:
        unpack(report_inputs),
    output:
        f"{RESULTS}/report.html",
    log:
        f"{RESULTS}/logs/report.log",
    benchmark:
        f"{RESULTS}/benchmarks/report.tsv"
    params:
        metrics=report_metrics_option,
    threads: 1
    resources:
        mem_mb=per_attempt(2000),
        runtime=per_attempt(15),
    conda:
        CONDA_ENV
    shell:
        "milopyp report --picks {input.picks} --candidates {input.candidates}"
        " {params.metrics} --figure {input.figures} -o {output} 2> {log}"
