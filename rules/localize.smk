# Few-shot localisation, per target: train on the labelled tomograms, pick in every
# tomogram, trace fibres (fibre targets), export, score, report.
# Every output lies below targets/{target}/; the exploration outputs are shared.


rule train_localize:
    input:
        labels=selection_tables("labels"),
        negatives=selection_tables("negatives"),
        tomograms=training_tomograms,
    output:
        f"{RESULTS}/targets/{{target}}/model.pt",
    log:
        f"{RESULTS}/logs/{{target}}/train_localize.log",
    benchmark:
        f"{RESULTS}/benchmarks/{{target}}/train_localize.tsv"
    params:
        threads=THREADS,
        options=for_target(opts.train_localize),
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
        " --negatives {input.negatives} -o {output} {params.options} 2> {log}"


rule localize:
    input:
        # the workflow's training, or the target's `model:` (a model trained before)
        model=for_target(Campaign.model_file),
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
        " {params.options} 2> {log}"


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
        options=for_target(opts.trace_fibers),
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
        picks=target_tables("picks"),
        tomograms=TOMOGRAM_PATHS,
    output:
        star=f"{RESULTS}/targets/{{target}}/picks.star",
        csv=f"{RESULTS}/targets/{{target}}/picks.csv",
    log:
        f"{RESULTS}/logs/{{target}}/export.log",
    params:
        voxel_size=opts.export(CAMPAIGN),
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
        picks=target_tables("picks"),
        tomograms=TOMOGRAM_PATHS,
    output:
        f"{RESULTS}/targets/{{target}}/copick.json",
    log:
        f"{RESULTS}/logs/{{target}}/export_copick.log",
    params:
        options=for_target(opts.export_copick),
        voxel_size=opts.export(CAMPAIGN),
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
        segments=target_tables("fibers", ".segments.csv"),
        fibers=target_tables("fibers"),
        tomograms=TOMOGRAM_PATHS,
    output:
        star=f"{RESULTS}/targets/{{target}}/fibers.star",
        csv=f"{RESULTS}/targets/{{target}}/fibers.csv",
    log:
        f"{RESULTS}/logs/{{target}}/export_fibers.log",
    params:
        voxel_size=opts.export(CAMPAIGN),
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
        picks=target_tables("picks"),
        truth=CAMPAIGN.truth_paths(),
    output:
        table=f"{RESULTS}/targets/{{target}}/evaluation/picks.csv",
        json=f"{RESULTS}/targets/{{target}}/evaluation/picks.json",
    log:
        f"{RESULTS}/logs/{{target}}/evaluate_picks.log",
    params:
        options=for_target(opts.evaluate_target),
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
        fibers=target_tables("fibers"),
        truth=CAMPAIGN.truth_paths(),
    output:
        table=f"{RESULTS}/targets/{{target}}/evaluation/fibers.csv",
        json=f"{RESULTS}/targets/{{target}}/evaluation/fibers.json",
    log:
        f"{RESULTS}/logs/{{target}}/evaluate_fibers.log",
    params:
        options=for_target(opts.evaluate_target),
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
        unpack(for_target(Campaign.overlay_inputs)),
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
        unpack(for_target(Campaign.report_inputs)),
    output:
        f"{RESULTS}/targets/{{target}}/report.html",
    log:
        f"{RESULTS}/logs/{{target}}/report.log",
    params:
        options=report_options,
    threads: 1
    resources:
        mem_mb=per_attempt(2000),
        runtime=per_attempt(15),
    conda:
        CONDA_ENV
    shell:
        "milopyp report --picks {input.picks} --candidates {input.candidates}"
        " --model {input.model} {params.options} --figure {input.figures} --title 'milopyp: {wildcards.target}'"
        " -o {output} 2> {log}"
