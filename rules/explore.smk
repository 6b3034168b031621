# Exploration: SimSiam on a subset of tomograms, embed every candidate, cluster, figures.


rule train_explore:
    input:
        expand(f"{RESULTS}/patches/{{tomogram}}.npz", tomogram=train_explore_tomograms()),
    output:
        model=f"{RESULTS}/explore/model.pt",
        settings=f"{RESULTS}/explore/settings.json",
    log:
        f"{RESULTS}/logs/train_explore.log",
    benchmark:
        f"{RESULTS}/benchmarks/train_explore.tsv"
    params:
        threads=THREADS,
        device_dependent=explore_device_options(),
        batch_size=config["explore"]["batch_size"],
        cap=explore_patch_cap_option(),
        seed=config["seed"],
        device=config["device"],
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
        " --settings-output {output.settings} {params.device_dependent}"
        " --batch-size {params.batch_size} {params.cap} --seed {params.seed}"
        " --device {params.device} 2> {log}"


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
        device=config["device"],
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
        " --device {params.device} 2> {log}"


rule cluster:
    input:
        embeddings=expand(f"{RESULTS}/embeddings/{{tomogram}}.npz", tomogram=sorted(TOMOGRAMS)),
        patches=expand(f"{RESULTS}/patches/{{tomogram}}.npz", tomogram=sorted(TOMOGRAMS)),
        tomograms=[TOMOGRAMS[name] for name in sorted(TOMOGRAMS)],
    output:
        exploration_outputs(),
    log:
        f"{RESULTS}/logs/cluster.log",
    benchmark:
        f"{RESULTS}/benchmarks/cluster.tsv"
    params:
        threads=THREADS,
        outdir=output_folder,
        k=config["explore"]["k"],
        classes=config["explore"]["classes"],
        neighbors=config["explore"]["umap_neighbors"],
        min_dist=config["explore"]["umap_min_dist"],
        seed=config["seed"],
        diameter=config["particle_diameter"],
    threads: THREADS
    resources:
        mem_mb=cluster_mem_mb,
        runtime=cluster_runtime,
    conda:
        CONDA_ENV
    shell:
        "milopyp --threads {params.threads} cluster"
        " --embeddings {input.embeddings} --patches {input.patches}"
        " --tomograms {input.tomograms} -o {params.outdir} --k {params.k}"
        " --classes {params.classes} --umap-neighbors {params.neighbors}"
        " --min-dist {params.min_dist} --seed {params.seed}"
        " --particle-diameter {params.diameter} 2> {log}"
