# The Snakemake side of the campaign: validate the config, build milopyp.campaign.Campaign
# (tomograms, voxel size, targets, outputs) and hand Snakemake its input functions. The
# commands' options come from milopyp.params; the facts behind them live in the package.
import glob
import json
import sys
from pathlib import Path

from milopyp import params as opts
from milopyp.campaign import Campaign
from milopyp.errors import MilopypError


def fail(message):
    """Stop the workflow with one readable line instead of a traceback."""
    sys.exit(f"milopyp: error: {message}")


def checked(function, *args):
    """``function(*args)``, a MilopypError becoming :func:`fail`'s one line."""
    try:
        return function(*args)
    except MilopypError as err:
        fail(err)


# a bad config, no tomogram or a mixed voxel size stops the workflow here, before any job;
# the targets' model files are read (torch, ~0.9 s) by the main process only, not by every job
CAMPAIGN = checked(Campaign.from_config, dict(config), "config (--configfile / --config)",
                   workflow.is_main_process)
config.clear()
config.update(CAMPAIGN.config)

RESULTS = CAMPAIGN.results
CONDA_ENV = "../envs/milopyp.yaml"
# Threads of every computing job, passed as `milopyp --threads` (not Snakemake's {threads},
# which --cores scales down): the same config gives the same coordinates with any --cores.
THREADS = config["threads_per_job"]
TOMOGRAMS = CAMPAIGN.tomograms  # name -> MRC path
TOMOGRAM_PATHS = [TOMOGRAMS[name] for name in CAMPAIGN.names]
TARGETS = CAMPAIGN.targets  # name -> milopyp.campaign.Target


def tomogram_constraint():
    """Regex for the {tomogram} wildcard: exactly the campaign's tomogram names."""
    return "|".join(CAMPAIGN.names)


def target_constraint():
    """Regex for the {target} wildcard: the configured target names (none: matches nothing)."""
    return "|".join(sorted(TARGETS)) or "[^\\s\\S]"


# -- params functions: the job's wildcards (and files) -> milopyp.params ----------------------


def for_tomogram(build):
    """A params function: ``build(CAMPAIGN, tomogram name)`` of the job."""

    def options(wildcards):
        return build(CAMPAIGN, wildcards.tomogram)

    return options


def for_target(build):
    """A params or input function: ``build(CAMPAIGN, target)`` of the job's {target}."""

    def options(wildcards):
        return build(CAMPAIGN, TARGETS[wildcards.target])

    return options


def patches_options(wildcards, input):
    return opts.patches(CAMPAIGN, input.tiltseries, input.geometry)


def selection_exploration_option(wildcards, input):
    return opts.selection_exploration(input.points, input.embeddings)


def localize_options(wildcards, output):
    return opts.localize(CAMPAIGN, TARGETS[wildcards.target], output.picks)


def overlay_options(wildcards, input):
    return opts.overlay(CAMPAIGN, TARGETS[wildcards.target], input.fibers)


def report_options(wildcards, input):
    return opts.report(*(getattr(input, key, None) for key in ("metrics", "fiber_metrics", "fibers")))


def provenance_records_option(wildcards, input):
    return opts.provenance(input.geometry, input.explore)


def provenance_records(wildcards):
    return CAMPAIGN.provenance_records()


def provenance_config_json(wildcards):
    """The validated config (defaults filled in) as one JSON string. A function, because a
    plain string in params would have its "{tomogram}" patterns taken for wildcards."""
    return json.dumps(config, sort_keys=True)


def output_folder(wildcards, output):
    """Folder of a rule's first output (for commands that take a folder)."""
    return str(Path(output[0]).parent)


def link_target(wildcards, input):
    return str(Path(input[0]).resolve())


# -- input functions --------------------------------------------------------------------------


def tomogram_path(wildcards):
    return TOMOGRAMS[wildcards.tomogram]


def relion_tomogram_path(wildcards):
    """The RELION reconstruction that results/tomograms/{tomogram}.mrc links to."""
    return CAMPAIGN.relion_paths[wildcards.tomogram]


def tiltseries_input(wildcards):
    path = CAMPAIGN.tiltseries_path(wildcards.tomogram)
    return [path] if path else []


def geometry_input(wildcards):
    return [CAMPAIGN.geometry_path(wildcards.tomogram)] if config["tiltseries"] else []


def target_selection(wildcards):
    return checked(CAMPAIGN.selection_file, TARGETS[wildcards.target])


def labelled_tomograms(target):
    """Names of the tomograms that got labels for ``target`` (raises until its selection
    checkpoint has run)."""
    labels = checkpoints.import_selection.get(target=target).output.labels
    return sorted(Path(path).stem for path in glob.glob(f"{labels}/*.csv"))


# One input function per output folder rather than one unpacked dict: before the checkpoint
# has run, each named input stays in place (a dry-run can still format the shell command).
def selection_tables(key):
    """An input function: the `key` (labels, negatives) tables of the labelled tomograms."""

    def tables(wildcards):
        folder = checkpoints.import_selection.get(target=wildcards.target).output.get(key)
        return [f"{folder}/{name}.csv" for name in labelled_tomograms(wildcards.target)]

    return tables


def training_tomograms(wildcards):
    return [TOMOGRAMS[name] for name in labelled_tomograms(wildcards.target)]


def target_tables(folder, suffix=".csv"):
    """An input function: the per-tomogram tables ``targets/{target}/{folder}/*{suffix}``."""

    def tables(wildcards):
        return CAMPAIGN.per_tomogram(f"{CAMPAIGN.target_dir(wildcards.target)}/{folder}", suffix)

    return tables
