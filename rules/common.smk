# Helpers shared by the rule files (config validation, tomogram discovery, output paths).
import glob
import json
import math
import sys
from pathlib import Path

from milopyp.config import validate_config
from milopyp.errors import MilopypError
from milopyp.io.mrc import read_header


def fail(message):
    """Stop the workflow with one readable line instead of a traceback."""
    sys.exit(f"milopyp: error: {message}")


try:
    _validated = validate_config(dict(config), "config (--configfile / --config)")
except MilopypError as err:
    fail(err)
config.clear()
config.update(_validated)

RESULTS = config["results"].rstrip("/")
CONDA_ENV = "../envs/milopyp.yaml"


def discover_tomograms(pattern):
    """Map tomogram name (file stem) -> path for every file matching the glob ``pattern``."""
    paths = sorted(glob.glob(pattern))
    if not paths:
        fail(
            f"tomograms: pattern {pattern!r} matched no file (working directory {Path.cwd()}); "
            "check the path, or run snakemake with --directory"
        )
    names = {}
    for path in paths:
        name = Path(path).name.split(".")[0]
        if name in names:
            fail(f"tomograms: {names[name]} and {path} share the name {name!r}; rename one")
        names[name] = path
    return names


TOMOGRAMS = discover_tomograms(config["tomograms"])


def tomogram_constraint():
    """Regex for the {tomogram} wildcard: exactly the campaign's tomogram names."""
    return "|".join(sorted(TOMOGRAMS))


def output_folder(wildcards, output):
    """Folder of a rule's first output (for commands that take a folder)."""
    return str(Path(output[0]).parent)


def tomogram_path(wildcards):
    return TOMOGRAMS[wildcards.tomogram]


def campaign_voxel_size_a():
    """Voxel size in Å used for campaign-wide sizes: config, else the first tomogram's header."""
    if config["voxel_size"]:
        return float(config["voxel_size"])
    first = next(iter(TOMOGRAMS.values()))
    try:
        return read_header(first)[1]
    except MilopypError as err:
        fail(err)


def patch_size_vox():
    """Patch side in voxels: config, else 1.5 x particle diameter, multiple of 16, >= 32."""
    if config["patches"]["size"]:
        return int(config["patches"]["size"])
    diameter_vox = config["particle_diameter"] / campaign_voxel_size_a()
    return max(32, 16 * math.ceil(1.5 * diameter_vox / 16))


def voxel_size_option():
    return f"--voxel-size {config['voxel_size']}" if config["voxel_size"] else ""


def tiltseries_path(name):
    return config["tiltseries"].format(tomogram=name) if config["tiltseries"] else None


def tiltseries_input(wildcards):
    path = tiltseries_path(wildcards.tomogram)
    return [path] if path else []


def truth_paths():
    """Ground-truth tables of every tomogram ([] when `truth` is not set)."""
    if not config["truth"]:
        return []
    return [config["truth"].format(tomogram=name) for name in sorted(TOMOGRAMS)]


def train_explore_tomograms():
    """The subset the exploration network trains on (names)."""
    subset = config["explore"]["train_tomograms"]
    if isinstance(subset, int):
        return sorted(TOMOGRAMS)[:subset]
    unknown = sorted(set(subset) - set(TOMOGRAMS))
    if unknown:
        fail(
            f"explore.train_tomograms names {unknown}, which are not among the tomograms "
            f"({', '.join(sorted(TOMOGRAMS)[:5])}, ...); use file stems"
        )
    return list(subset)


def exploration_outputs():
    names = sorted(TOMOGRAMS)
    return [
        f"{RESULTS}/explore/points.csv",
        f"{RESULTS}/explore/explorer.html",
        f"{RESULTS}/explore/grid.png",
        f"{RESULTS}/explore/gallery.png",
        *expand(f"{RESULTS}/explore/colormaps/{{tomogram}}.png", tomogram=names),
    ]


def all_outputs():
    names = sorted(TOMOGRAMS)
    outputs = expand(f"{RESULTS}/candidates/{{tomogram}}.csv", tomogram=names)
    outputs += exploration_outputs()
    outputs.append(f"{RESULTS}/provenance.json")
    if config["truth"]:
        outputs.append(f"{RESULTS}/evaluation/candidates.csv")
    if config["selection"]:
        outputs += expand(f"{RESULTS}/picks/{{tomogram}}.csv", tomogram=names)
        outputs += [f"{RESULTS}/picks.star", f"{RESULTS}/picks.csv", f"{RESULTS}/report.html"]
        if config["truth"]:
            outputs.append(f"{RESULTS}/evaluation/picks.csv")
    return outputs


def selection_options():
    settings = config["localize"]
    options = [f"--seed-radius {settings['seed_radius']}", f"--seed {config['seed']}"]
    if settings["label_tomograms"]:
        options.append("--label-tomograms " + " ".join(settings["label_tomograms"]))
    if settings["max_labels_per_tomogram"]:
        options.append(f"--max-labels-per-tomogram {settings['max_labels_per_tomogram']}")
    return " ".join(options)


def labelled_tomograms():
    """Names of the tomograms that got labels (known after the selection checkpoint)."""
    labels_dir = checkpoints.import_selection.get().output[0]
    return sorted(Path(path).stem for path in glob.glob(f"{labels_dir}/*.csv"))


# Two input functions rather than one unpacked dict: before the checkpoint has run, each
# named input stays in place (a dry-run can still format the rule's shell command).
def training_labels(wildcards):
    labels_dir = checkpoints.import_selection.get().output[0]
    return [f"{labels_dir}/{name}.csv" for name in labelled_tomograms()]


def training_tomograms(wildcards):
    return [TOMOGRAMS[name] for name in labelled_tomograms()]


def train_localize_options():
    settings = config["localize"]
    options = [
        f"--epochs {settings['epochs']}",
        f"--lr-step-epochs {settings['lr_step_epochs']}",
        f"--iterations-per-epoch {settings['iterations_per_epoch']}",
        f"--batch-size {settings['batch_size']}",
        f"--lr {settings['lr']}",
        f"--crop-xy {settings['crop_xy']}",
        f"--crop-z {settings['crop_z']}",
        f"--n-blocks {settings['n_blocks']}",
        f"--base-channels {settings['base_channels']}",
        voxel_size_option(),
    ]
    if settings["class_prior"]:
        options.append(f"--class-prior {settings['class_prior']}")
    if not settings["contrastive"]:
        options.append("--no-contrastive")
    if not settings["pu"]:
        options.append("--no-pu")
    return " ".join(option for option in options if option)


def localize_options(wildcards, output):
    settings = config["localize"]
    options = []
    if settings["threshold"] is not None:
        options.append(f"--threshold {settings['threshold']}")
    if settings["nms_kernel"]:
        options.append(f"--nms-kernel {settings['nms_kernel']}")
    if settings["write_heatmap"]:
        options.append(f"--heatmap {Path(output.picks).with_suffix('')}_heatmap.mrc")
    return " ".join(options)


def report_inputs(wildcards):
    names = sorted(TOMOGRAMS)
    inputs = {
        "picks": expand(f"{RESULTS}/picks/{{tomogram}}.csv", tomogram=names),
        "candidates": expand(f"{RESULTS}/candidates/{{tomogram}}.csv", tomogram=names),
        "figures": [f"{RESULTS}/explore/grid.png", f"{RESULTS}/explore/gallery.png"],
    }
    if config["truth"]:
        inputs["metrics"] = f"{RESULTS}/evaluation/picks.csv"
    return inputs


def report_metrics_option(wildcards, input):
    return f"--metrics {input.metrics}" if config["truth"] else ""


def provenance_config_json(wildcards):
    """The validated config (defaults filled in) as one JSON string. A function, because a
    plain string in params would have its "{tomogram}" patterns taken for wildcards."""
    return json.dumps(config, sort_keys=True)


def exploration_instructions():
    if config["selection"]:
        return (
            f"\nmilopyp: finished. Picks: {RESULTS}/picks.star (RELION 5) and {RESULTS}/picks.csv;"
            f" report: {RESULTS}/report.html\n"
        )
    return (
        "\nmilopyp: exploration finished.\n"
        f"  open   {RESULTS}/explore/explorer.html in a browser (copy it from the cluster with scp),\n"
        "         select the clusters of your target and press 'Save selection';\n"
        f"  figures: {RESULTS}/explore/grid.png, gallery.png, colormaps/;"
        f" table: {RESULTS}/explore/points.csv\n"
        "  then set `selection: path/to/selection.json` in your config and rerun snakemake\n"
        "  to train the localiser and pick in every tomogram.\n"
    )


def nms_radius_option():
    radius = config["candidates"]["nms_radius"]
    return f"--nms-radius {radius}" if radius else ""


def max_candidates_option():
    cap = config["candidates"]["max_candidates"]
    return f"--max-candidates {cap}" if cap else ""


def tiltseries_option(wildcards, input):
    return f"--tilt-series {input.tiltseries[0]}" if input.tiltseries else ""


def evaluation_radius_option():
    radius_a = config["evaluation"]["radius"] or config["particle_diameter"] / 2
    return f"--radius-a {radius_a} --voxel-size {campaign_voxel_size_a()}"


def species_option():
    species = config["evaluation"]["species"]
    return f"--species {species}" if species else ""


def explore_patch_cap_option():
    cap = config["explore"]["max_patches_per_tomogram"]
    return f"--max-patches-per-tomogram {cap}" if cap else ""
