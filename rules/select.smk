# The selection checkpoint: a person's (or a seed file's) choice becomes labels, one folder
# per target: targets/{target}/labels/{tomogram}.csv. Which tomograms have labels is known
# only after this job, so the training rule asks the checkpoint for its inputs.


checkpoint import_selection:
    input:
        selection=target_selection,
        points=f"{RESULTS}/explore/points.csv",
    output:
        directory(f"{RESULTS}/targets/{{target}}/labels"),
    log:
        f"{RESULTS}/logs/{{target}}/import_selection.log",
    benchmark:
        f"{RESULTS}/benchmarks/{{target}}/import_selection.tsv"
    params:
        names=" ".join(sorted(TOMOGRAMS)),
        options=selection_options,
    threads: 1
    resources:
        mem_mb=per_attempt(2000),
        runtime=per_attempt(10),
    conda:
        CONDA_ENV
    shell:
        "milopyp import-selection --selection {input.selection} --points {input.points}"
        " --tomograms {params.names} -o {output} {params.options} 2> {log}"
