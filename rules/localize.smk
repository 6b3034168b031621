# Few-shot localisation, per target: train on the labelled tomograms, pick in every
# tomogram, trace fibres (fibre targets), export, score, report.
# Every output lies below targets/{target}/; the exploration outputs are shared.


rule train_localize:
    input:
        labels=training_labels,
        negatives=training_negatives,
        tomograms=training_tomograms,
    output:
        f"{RESULTS}/targets/{{target}}/model.pt",
    log:
        f"{RESULTS}/logs/{{target}}/train_localize.log",
    benchmark:
        f"{RESULTS}/benchmarks/{{target}}/train_localize.tsv"
    params:
        threads=THREADS,
        options=train_localize_options,
        seed=config["seed"],
        device=config["device"],
    threads: THREADS
    resources:
        gpu=gpus_per_job(),
        mem_mb=train_localize_mem_mb,
        runtime=train_localize_runtime,
    conda:
        CONDA_ENV
    shell:
        "milopyp --threads {params.threads} train-localize"
        " --tomograms {input.tomograms} --labels {input.labels}"
        " --negatives {input.negatives} -o {output} {params.options} --seed {params.seed}"
        " --device {params.device} 2> {log}"


rule localize:
    input:
        model=f"{RESULTS}/targets/{{target}}/model.pt",
        tomogram=tomogram_path,
    output:
        picks=f"{RESULTS}/targets/{{target}}/picks/{{tomogram}}.csv",
    log:
        f"{RESULTS}/logs/{{target}}/localize/{{tomogram}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/{{target}}/localize/{{tomogram}}.tsv"
    params:
        threads=THREADS,
        options=localize_options,
        device=config["device"],
    threads: THREADS
    resources:
        gpu=gpus_per_job(),
        mem_mb=tomogram_mem_mb(volumes=3, base_mb=2500),
        runtime=tomogram_runtime(minutes_per_gib=5, network=True),
    conda:
        CONDA_ENV
    shell:
        "milopyp --threads {params.threads} localize"
        " --model {input.model} --tomogram {input.tomogram}"
        " --tomogram-name {wildcards.tomogram} -o {output.picks}"
        " {params.options} --device {params.device} 2> {log}"


rule trace_fibers:
    input:
        picks=f"{RESULTS}/targets/{{target}}/picks/{{tomogram}}.csv",
        tomogram=tomogram_path,
    output:
        fibers=f"{RESULTS}/targets/{{target}}/fibers/{{tomogram}}.csv",
        segments=f"{RESULTS}/targets/{{target}}/fibers/{{tomogram}}.segments.csv",
    log:
        f"{RESULTS}/logs/{{target}}/trace_fibers/{{tomogram}}.log",
    params:
        options=trace_fibers_options,
    threads: 1
    resources:
        mem_mb=per_attempt(2000),
        runtime=per_attempt(10),
    conda:
        CONDA_ENV
    shell:
        "milopyp trace-fibers --picks {input.picks} --tomogram {input.tomogram}"
        " -o {output.fibers} --segments {output.segments} {params.options} 2> {log}"


rule export:
    input:
        picks=target_picks,
        tomograms=[TOMOGRAMS[name] for name in sorted(TOMOGRAMS)],
    output:
        star=f"{RESULTS}/targets/{{target}}/picks.star",
        csv=f"{RESULTS}/targets/{{target}}/picks.csv",
    log:
        f"{RESULTS}/logs/{{target}}/export.log",
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


# A copick campaign: every target's picks go into the project (user milopyp, session
# copick_session, object = the target's name); copick.json lists the picks per run.
rule export_copick:
    input:
        picks=target_picks,
        tomograms=[TOMOGRAMS[name] for name in sorted(TOMOGRAMS)],
    output:
        f"{RESULTS}/targets/{{target}}/copick.json",
    log:
        f"{RESULTS}/logs/{{target}}/export_copick.log",
    params:
        options=copick_export_options,
        voxel_size=voxel_size_option(),
    threads: 1
    resources:
        mem_mb=per_attempt(2000),
        runtime=per_attempt(15),
    conda:
        CONDA_ENV
    shell:
        "milopyp export --picks {input.picks} --tomograms {input.tomograms} {params.options}"
        " --copick-summary {output} {params.voxel_size} 2> {log}"


# Fibres for subtomogram averaging: overlapping segment points with a helical tube id and
# tilt/psi priors along each fibre (fibers.star); the resampled centre lines (fibers.csv).
rule export_fibers:
    input:
        segments=target_segments,
        fibers=target_fibers,
        tomograms=[TOMOGRAMS[name] for name in sorted(TOMOGRAMS)],
    output:
        star=f"{RESULTS}/targets/{{target}}/fibers.star",
        csv=f"{RESULTS}/targets/{{target}}/fibers.csv",
    log:
        f"{RESULTS}/logs/{{target}}/export_fibers.log",
    params:
        voxel_size=voxel_size_option(),
    threads: 1
    resources:
        mem_mb=per_attempt(2000),
        runtime=per_attempt(15),
    conda:
        CONDA_ENV
    shell:
        "milopyp export --picks {input.segments} --tomograms {input.tomograms}"
        " -o {output.star} {params.voxel_size} 2> {log}"
        " && milopyp export --picks {input.fibers} --tomograms {input.tomograms}"
        " --csv {output.csv} {params.voxel_size} 2>> {log}"


rule evaluate_picks:
    input:
        picks=target_picks,
        truth=truth_paths(),
    output:
        table=f"{RESULTS}/targets/{{target}}/evaluation/picks.csv",
        json=f"{RESULTS}/targets/{{target}}/evaluation/picks.json",
    log:
        f"{RESULTS}/logs/{{target}}/evaluate_picks.log",
    params:
        options=target_evaluation_options,
    threads: 1
    resources:
        mem_mb=per_attempt(2000),
        runtime=per_attempt(15),
    conda:
        CONDA_ENV
    shell:
        "milopyp evaluate --picks {input.picks} --truth {input.truth} {params.options}"
        " -o {output.table} --json {output.json} > {log} 2>&1"


rule evaluate_fibers:
    input:
        fibers=target_fibers,
        truth=truth_paths(),
    output:
        table=f"{RESULTS}/targets/{{target}}/evaluation/fibers.csv",
        json=f"{RESULTS}/targets/{{target}}/evaluation/fibers.json",
    log:
        f"{RESULTS}/logs/{{target}}/evaluate_fibers.log",
    params:
        options=target_evaluation_options,
    threads: 1
    resources:
        mem_mb=per_attempt(2000),
        runtime=per_attempt(15),
    conda:
        CONDA_ENV
    shell:
        "milopyp evaluate --fibers --picks {input.fibers} --truth {input.truth} {params.options}"
        " -o {output.table} --json {output.json} > {log} 2>&1"


rule overlay:
    input:
        tomogram=TOMOGRAMS[overlay_name()],
        picks=overlay_picks,
        fibers=overlay_fibers,
    output:
        f"{RESULTS}/targets/{{target}}/overlay.png",
    log:
        f"{RESULTS}/logs/{{target}}/overlay.log",
    params:
        options=overlay_options,
    threads: 1
    resources:
        mem_mb=per_attempt(4000),
        runtime=per_attempt(10),
    conda:
        CONDA_ENV
    shell:
        "milopyp overlay --tomogram {input.tomogram} --picks {input.picks} {params.options}"
        " -o {output} 2> {log}"


rule report:
    input:
        unpack(report_inputs),
    output:
        f"{RESULTS}/targets/{{target}}/report.html",
    log:
        f"{RESULTS}/logs/{{target}}/report.log",
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
        " {params.metrics} --figure {input.figures} --title 'milopyp: {wildcards.target}'"
        " -o {output} 2> {log}"
