# Exploration: SimSiam on a subset of tomograms, embed every candidate, cluster, figures.


rule train_explore:
    input:
        [f"{RESULTS}/patches/{name}.npz" for name in checked(CAMPAIGN.train_explore_tomograms)],
    output:
        model=f"{RESULTS}/explore/model.pt",
        settings=f"{RESULTS}/explore/settings.json",
    log:
        f"{RESULTS}/logs/train_explore.log",
    benchmark:
        f"{RESULTS}/benchmarks/train_explore.tsv"
    params:
        threads=THREADS,
        options=opts.train_explore(CAMPAIGN),
    threads: THREADS
    resources:
        gpu=gpus_per_job(),
        mem_mb=train_explore_mem_mb,
        runtime=train_explore_runtime,
    conda:
        CONDA_ENV
    shell:
        "milopyp --threads {params.threads} train-explore"
        " --patches {input} -o {output.model}"
        " --settings-output {output.settings} {params.options} 2> {log}"


rule embed:
    input:
        model=f"{RESULTS}/explore/model.pt",
        patches=f"{RESULTS}/patches/{{tomogram}}.npz",
    output:
        f"{RESULTS}/embeddings/{{tomogram}}.npz",
    log:
        f"{RESULTS}/logs/embed/{{tomogram}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/embed/{{tomogram}}.tsv"
    params:
        threads=THREADS,
        options=opts.embed(CAMPAIGN),
    threads: THREADS
    resources:
        gpu=gpus_per_job(),
        mem_mb=embed_mem_mb,
        runtime=per_attempt(30),
    conda:
        CONDA_ENV
    shell:
        "milopyp --threads {params.threads} embed"
        " --model {input.model} --patches {input.patches} -o {output}"
        " {params.options} 2> {log}"


rule cluster:
    input:
        embeddings=CAMPAIGN.per_tomogram(f"{RESULTS}/embeddings", ".npz"),
        patches=CAMPAIGN.per_tomogram(f"{RESULTS}/patches", ".npz"),
        tomograms=TOMOGRAM_PATHS,
    output:
        CAMPAIGN.exploration_outputs(),
    log:
        f"{RESULTS}/logs/cluster.log",
    benchmark:
        f"{RESULTS}/benchmarks/cluster.tsv"
    params:
        threads=THREADS,
        outdir=output_folder,
        options=opts.cluster(CAMPAIGN),
    threads: THREADS
    resources:
        mem_mb=cluster_mem_mb,
        runtime=cluster_runtime,
    conda:
        CONDA_ENV
    shell:
        "milopyp --threads {params.threads} cluster"
        " --embeddings {input.embeddings} --patches {input.patches}"
        " --tomograms {input.tomograms} -o {params.outdir} {params.options} 2> {log}"
