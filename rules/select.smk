# The selection checkpoint: a person's (or a seed file's) choice becomes labels, one folder
# per target: targets/{target}/labels/{tomogram}.csv, and the selection's negatives (what is
# not the target): targets/{target}/negatives/{tomogram}.csv for every tomogram (possibly
# empty). Which tomograms have labels is known only after this job, so the training rule
# asks the checkpoint for its inputs. The embeddings rank the members of seed-chosen
# clusters by their distance to the seeds; a coordinate-table selection (used directly as
# labels) needs neither them nor points.csv.


checkpoint import_selection:
    input:
        unpack(for_target(Campaign.selection_exploration_inputs)),
        selection=target_selection,
        # the tomograms themselves: their shape and voxel size convert RELION-5 Å selections
        tomograms=TOMOGRAM_PATHS,
    output:
        labels=directory(f"{RESULTS}/targets/{{target}}/labels"),
        negatives=directory(f"{RESULTS}/targets/{{target}}/negatives"),
    log:
        f"{RESULTS}/logs/{{target}}/import_selection.log",
    benchmark:
        f"{RESULTS}/benchmarks/{{target}}/import_selection.tsv"
    params:
        selection=for_target(opts.selection),
        options=for_target(opts.import_selection),
        exploration=selection_exploration_option,
    threads: 1
    resources:
        mem_mb=per_attempt(2000),
        runtime=per_attempt(10),
    conda:
        CONDA_ENV
    shell:
        "milopyp import-selection {params.selection} {params.exploration}"
        " --tomograms {input.tomograms} -o {output.labels}"
        " --negatives-output {output.negatives} {params.options} 2> {log}"
