# Helpers shared by the rule files (config validation, tomogram discovery, output paths).
import glob
import json
import math
import re
import sys
from pathlib import Path

from milopyp.config import tomogram_source, validate_config
from milopyp.errors import MilopypError
from milopyp.io.mrc import common_voxel_size, read_header


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
# Threads of every computing job, passed as `milopyp --threads` (not Snakemake's {threads},
# which --cores scales down): the same config gives the same coordinates with any --cores.
THREADS = config["threads_per_job"]


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


def copick_campaign():
    """Run name -> (shape_zyx, voxel_size_a) of the copick project's chosen tomograms, and
    the voxel spacing in Å (config, else the only one that has the tomo_type)."""
    from milopyp.io import copick as cp

    source = f"copick: {config['copick']}"
    settings = config["copick_tomogram"]
    try:
        root = cp.open_project(config["copick"])
        spacing = settings["voxel_spacing"]
        if spacing is None:
            found = sorted({vs.voxel_size for run in root.runs for vs in run.voxel_spacings
                            if vs.get_tomograms(settings["tomo_type"])})
            if len(found) != 1:
                fail(f"{source}: {settings['tomo_type']!r} tomograms at voxel spacings "
                     f"{found or 'none'} Å; set copick_tomogram.voxel_spacing (and tomo_type)")
            spacing = found[0]
        names = cp.tomogram_runs(root, spacing, settings["tomo_type"], source)
        bad = [n for n in names if not re.fullmatch(r"[A-Za-z0-9_-]+", n)]
        if bad:
            fail(f"{source}: run names {bad[:5]} hold characters other than letters, digits, "
                 "_ and -, which cannot name tomograms; rename the runs")
        geometry = {n: cp.tomogram_geometry(root, n, spacing, settings["tomo_type"], source)
                    for n in names}
    except MilopypError as err:
        fail(err)
    return geometry, float(spacing)


def relion_campaign():
    """rlnTomoName -> (shape_zyx, voxel_size_a) and -> MRC path of the `relion_tomograms`
    star's tomograms, and the voxel size in Å the commands must be given (RELION's, where a
    header has none) or None."""
    from milopyp.io import relion

    try:
        tomograms = relion.read_relion_tomograms(
            config["relion_tomograms"], column=config["relion_tomogram_column"],
            project_dir=config["relion_project_dir"], voxel_size_a=config["voxel_size"] or None)
        override_a = relion.voxel_size_override_a(tomograms, TOMOGRAM_SOURCE)
    except MilopypError as err:
        fail(err)
    return ({name: (t.shape_zyx, t.voxel_size_a) for name, t in tomograms.items()},
            {name: str(t.path) for name, t in tomograms.items()}, override_a)


_SOURCE_KEY = tomogram_source(config)  # tomograms, copick or relion_tomograms (validated: one)
TOMOGRAM_SOURCE = f"{_SOURCE_KEY}: {config[_SOURCE_KEY]}"
# name -> (shape_zyx, voxel_size_a) from a copick project's or a tomograms.star's metadata
SOURCE_GEOMETRY, COPICK_SPACING, RELION_PATHS, RELION_VOXEL_SIZE_A = {}, None, {}, None
if config["copick"]:
    SOURCE_GEOMETRY, COPICK_SPACING = copick_campaign()
elif config["relion_tomograms"]:
    SOURCE_GEOMETRY, RELION_PATHS, RELION_VOXEL_SIZE_A = relion_campaign()
# copick's tomograms are copied (rule copick_tomogram), RELION's linked (relion_tomogram) to
# results/tomograms/{name}.mrc: the commands name a tomogram after its file's stem
TOMOGRAMS = (discover_tomograms(config["tomograms"]) if _SOURCE_KEY == "tomograms" else
             {name: f"{RESULTS}/tomograms/{name}.mrc" for name in sorted(SOURCE_GEOMETRY)})


def voxel_size_override_a():
    """Voxel size in Å that replaces the headers': config, else RELION's where a RELION
    campaign's headers have none; None = each header's own."""
    return config["voxel_size"] or RELION_VOXEL_SIZE_A


def tomogram_geometry(name):
    """``(shape_zyx, voxel_size_a)`` of tomogram ``name``: its MRC header (voxel_size_override_a
    first) or, for a copick or RELION campaign, its metadata (no data is read)."""
    if name in SOURCE_GEOMETRY:
        shape_zyx, voxel_size_a = SOURCE_GEOMETRY[name]
        return shape_zyx, float(voxel_size_override_a() or voxel_size_a)
    try:
        return read_header(TOMOGRAMS[name], voxel_size_a=voxel_size_override_a())
    except MilopypError as err:
        fail(err)


def tomogram_constraint():
    """Regex for the {tomogram} wildcard: exactly the campaign's tomogram names."""
    return "|".join(sorted(TOMOGRAMS))


def output_folder(wildcards, output):
    """Folder of a rule's first output (for commands that take a folder)."""
    return str(Path(output[0]).parent)


def tomogram_path(wildcards):
    return TOMOGRAMS[wildcards.tomogram]


def relion_tomogram_path(wildcards):
    """The RELION reconstruction that results/tomograms/{tomogram}.mrc links to."""
    return RELION_PATHS[wildcards.tomogram]


def link_target(wildcards, input):
    return str(Path(input[0]).resolve())


_CAMPAIGN_VOXEL_SIZE = []


def campaign_voxel_size_a():
    """Voxel size in Å of the whole campaign: config, else the tomograms' headers, which must
    all agree (mixed voxel sizes stop the workflow with the list; nothing is rescaled)."""
    if voxel_size_override_a():
        return float(voxel_size_override_a())
    if not _CAMPAIGN_VOXEL_SIZE:
        sizes = {name: tomogram_geometry(name)[1] for name in TOMOGRAMS}
        try:
            _CAMPAIGN_VOXEL_SIZE.append(common_voxel_size(sizes, TOMOGRAM_SOURCE))
        except MilopypError as err:
            fail(err)
    return _CAMPAIGN_VOXEL_SIZE[0]


campaign_voxel_size_a()  # a missing or mixed voxel size stops the workflow here, before any job


def patch_size_vox():
    """Patch side in voxels: config, else 1.5 x particle diameter, multiple of 16, >= 32."""
    if config["patches"]["size"]:
        return int(config["patches"]["size"])
    diameter_vox = config["particle_diameter"] / campaign_voxel_size_a()
    return max(32, 16 * math.ceil(1.5 * diameter_vox / 16))


def voxel_size_option():
    return f"--voxel-size {voxel_size_override_a()}" if voxel_size_override_a() else ""


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


def resolve_targets():
    """Target name -> settings: shape, selection, particle_diameter (Å), truth_species and
    the complete localize / fibers settings (top-level values, then the target's own)."""
    targets = config["targets"] or {}
    if targets and config["selection"]:
        fail(
            "set either `selection` (one target) or `targets` (several), not both; move the "
            f"selection file to targets.<name>.selection (targets: {', '.join(targets)})"
        )
    if not targets and config["selection"]:
        targets = {"particles": {"selection": config["selection"]}}
    resolved = {}
    for name, settings in targets.items():
        resolved[name] = {
            "shape": settings.get("shape", "globular"),
            "selection": settings.get("selection"),
            "particle_diameter": settings.get("particle_diameter") or config["particle_diameter"],
            "truth_species": settings.get("truth_species") or config["evaluation"]["species"],
            "localize": {**config["localize"], **settings.get("localize", {})},
            "fibers": {**config["fibers"], **settings.get("fibers", {})},
        }
    return resolved


TARGETS = resolve_targets()
#: targets whose selection is given (the others wait for the user)
SELECTED = [name for name, target in TARGETS.items() if target["selection"]]
FIBER_TARGETS = [name for name in SELECTED if TARGETS[name]["shape"] == "fiber"]


def target_constraint():
    """Regex for the {target} wildcard: the configured target names (none: matches nothing)."""
    return "|".join(sorted(TARGETS)) or "[^\\s\\S]"


def target_dir(name="{target}"):
    return f"{RESULTS}/targets/{name}"


def target_outputs(name):
    names = sorted(TOMOGRAMS)
    folder = target_dir(name)
    outputs = expand(f"{folder}/picks/{{tomogram}}.csv", tomogram=names)
    outputs += [f"{folder}/picks.star", f"{folder}/picks.csv", f"{folder}/report.html"]
    if TARGETS[name]["shape"] == "fiber":
        outputs += expand(f"{folder}/fibers/{{tomogram}}.csv", tomogram=names)
        outputs += [f"{folder}/fibers.star", f"{folder}/fibers.csv"]
    if config["truth"]:
        outputs.append(f"{folder}/evaluation/picks.csv")
        if TARGETS[name]["shape"] == "fiber":
            outputs.append(f"{folder}/evaluation/fibers.csv")
    if config["copick"]:
        outputs.append(f"{folder}/copick.json")
    return outputs


def all_outputs():
    names = sorted(TOMOGRAMS)
    outputs = expand(f"{RESULTS}/candidates/{{tomogram}}.csv", tomogram=names)
    if exploration_needed():
        outputs += exploration_outputs()
    outputs.append(f"{RESULTS}/provenance.json")
    if config["truth"]:
        outputs.append(f"{RESULTS}/evaluation/candidates.csv")
    for name in SELECTED:
        outputs += target_outputs(name)
    return outputs


def is_copick_selection(selection):
    return str(selection).startswith("copick:")


def is_coordinate_selection(selection):
    """A selection used directly as labels (a coordinate table, by its suffix, or copick
    picks): it needs no clusters, so no exploration."""
    from milopyp.io.coords import SUFFIXES

    return is_copick_selection(selection) or Path(str(selection)).suffix.lower() in SUFFIXES


def exploration_needed():
    """False only when every target has a coordinate-table selection: then SimSiam, the
    embeddings, clustering and the explorer are not run (ask for results/explore/explorer.html
    to get them anyway)."""
    return not TARGETS or not all(
        target["selection"] and is_coordinate_selection(target["selection"])
        for target in TARGETS.values()
    )


def selection_exploration_inputs(wildcards):
    """points.csv and the embeddings for a selection by clusters or seeds; none for a
    coordinate table (used directly as labels)."""
    if is_coordinate_selection(TARGETS[wildcards.target]["selection"]):
        return {"points": [], "embeddings": []}
    return {
        "points": f"{RESULTS}/explore/points.csv",
        "embeddings": expand(f"{RESULTS}/embeddings/{{tomogram}}.npz", tomogram=sorted(TOMOGRAMS)),
    }


def selection_exploration_option(wildcards, input):
    if not input.points:
        return ""
    return f"--points {input.points} --embeddings {' '.join(input.embeddings)}"


def target_selection(wildcards):
    """The selection file of a target (for a copick:OBJECT:USER:SESSION selection, the copick
    project's config.json, which holds the picks)."""
    selection = TARGETS[wildcards.target]["selection"]
    if is_copick_selection(selection):
        if not config["copick"]:
            fail(f"targets.{wildcards.target}: selection {selection} needs `copick:` (the "
                 "project's config.json) in the config")
        return config["copick"]
    return selection


def target_selection_option(wildcards):
    """``--selection`` (and ``--copick-config``) of a target's import_selection job."""
    selection = TARGETS[wildcards.target]["selection"]
    if is_copick_selection(selection):
        return f"--selection {selection} --copick-config {config['copick']}"
    return f"--selection {selection}"


def selection_options(wildcards):
    settings = TARGETS[wildcards.target]["localize"]
    options = [f"--seed-radius {settings['seed_radius']}", f"--seed {config['seed']}"]
    if voxel_size_override_a():
        options.append(voxel_size_option())
    if settings["label_tomograms"]:
        options.append("--label-tomograms " + " ".join(settings["label_tomograms"]))
    if settings["max_labels_per_tomogram"]:
        options.append(f"--max-labels-per-tomogram {settings['max_labels_per_tomogram']}")
    options.append(f"--seed-labels {settings['seed_labels']}")
    if settings["max_seed_labels"]:
        options.append(f"--max-seed-labels {settings['max_seed_labels']}")
    return " ".join(options)


def labels_dir(target):
    """The labels folder of ``target`` (raises until its selection checkpoint has run)."""
    return checkpoints.import_selection.get(target=target).output.labels


def negatives_dir(target):
    """The negatives folder of ``target`` (raises until its selection checkpoint has run)."""
    return checkpoints.import_selection.get(target=target).output.negatives


def labelled_tomograms(target):
    """Names of the tomograms that got labels for ``target`` (known after the checkpoint)."""
    return sorted(Path(path).stem for path in glob.glob(f"{labels_dir(target)}/*.csv"))


# Two input functions rather than one unpacked dict: before the checkpoint has run, each
# named input stays in place (a dry-run can still format the rule's shell command).
def training_labels(wildcards):
    folder = labels_dir(wildcards.target)
    return [f"{folder}/{name}.csv" for name in labelled_tomograms(wildcards.target)]


def training_negatives(wildcards):
    """Negatives tables of the labelled tomograms, in the order of `training_labels`."""
    folder = negatives_dir(wildcards.target)
    return [f"{folder}/{name}.csv" for name in labelled_tomograms(wildcards.target)]


def training_tomograms(wildcards):
    return [TOMOGRAMS[name] for name in labelled_tomograms(wildcards.target)]


def train_localize_options(wildcards):
    target = TARGETS[wildcards.target]
    settings = target["localize"]
    options = [
        f"--particle-diameter {target['particle_diameter']}",
        f"--shape {target['shape']}",
        f"--epochs {settings['epochs']}",
        f"--lr-step-epochs {settings['lr_step_epochs']}",
        f"--iterations-per-epoch {settings['iterations_per_epoch']}",
        f"--batch-size {settings['batch_size']}",
        f"--lr {settings['lr']}",
        f"--crop-xy {settings['crop_xy']}",
        f"--crop-z {settings['crop_z']}",
        f"--bin {settings['bin']}",
        "--z-dilations " + (settings["z_dilations"] if settings["z_dilations"] == "auto"
                            else " ".join(str(d) for d in settings["z_dilations"])),
        f"--stride-xy {settings['stride_xy']}",
        f"--n-blocks {settings['n_blocks']}",
        f"--base-channels {settings['base_channels']}",
        voxel_size_option(),
    ]
    if settings["test_time_flips"] != "auto":
        options.append(f"--flips {settings['test_time_flips']}")
    recentre = settings["recentre_labels"]
    if recentre is True or (recentre == "auto" and not is_coordinate_selection(
            target["selection"])):  # labels at candidate positions
        options.append("--recentre-labels")
    if settings["class_prior"]:
        options.append(f"--class-prior {settings['class_prior']}")
    elif settings["expected_particles"]:
        options.append(f"--expected-particles {settings['expected_particles']}")
    if not settings["contrastive"]:
        options.append("--no-contrastive")
    if not settings["pu"]:
        options.append("--no-pu")
    return " ".join(option for option in options if option)


def localize_options(wildcards, output):
    settings = TARGETS[wildcards.target]["localize"]
    options = []
    if settings["threshold"] is not None:
        options.append(f"--threshold {settings['threshold']}")
    if settings["nms_kernel"] and TARGETS[wildcards.target]["shape"] != "fiber":
        options.append(f"--nms-kernel {settings['nms_kernel']}")
    if settings["write_heatmap"]:
        options.append(f"--heatmap {Path(output.picks).with_suffix('')}_heatmap.mrc")
    options.append(voxel_size_option())
    return " ".join(option for option in options if option)


def trace_fibers_options(wildcards):
    target = TARGETS[wildcards.target]
    settings = target["fibers"]
    link_a = settings["link_distance"] or 0.6 * target["particle_diameter"]
    spacing_a = settings["segment_spacing"] or target["particle_diameter"] / 3
    options = [
        f"--link-distance-a {link_a}",
        f"--min-points {settings['min_points']}",
        f"--max-residual {settings['max_residual']}",
        f"--max-curvature {settings['max_curvature']}",
        f"--step {settings['step']}",
        f"--segment-spacing-a {spacing_a}",
        voxel_size_option(),
    ]
    return " ".join(option for option in options if option)


def target_picks(wildcards):
    return expand(f"{target_dir(wildcards.target)}/picks/{{tomogram}}.csv",
                  tomogram=sorted(TOMOGRAMS))


def target_fibers(wildcards):
    return expand(f"{target_dir(wildcards.target)}/fibers/{{tomogram}}.csv",
                  tomogram=sorted(TOMOGRAMS))


def target_segments(wildcards):
    return expand(f"{target_dir(wildcards.target)}/fibers/{{tomogram}}.segments.csv",
                  tomogram=sorted(TOMOGRAMS))


def overlay_name():
    """The tomogram the report's overlay figure shows: the first by name."""
    return sorted(TOMOGRAMS)[0]


def overlay_picks(wildcards):
    return f"{target_dir(wildcards.target)}/picks/{overlay_name()}.csv"


def overlay_fibers(wildcards):
    if TARGETS[wildcards.target]["shape"] != "fiber":
        return []
    return f"{target_dir(wildcards.target)}/fibers/{overlay_name()}.csv"


def overlay_options(wildcards, input):
    options = [f"--particle-diameter {TARGETS[wildcards.target]['particle_diameter']}",
               voxel_size_option(), f"--title {wildcards.target}"]
    if input.fibers:
        options.append(f"--fibers {input.fibers}")
    return " ".join(option for option in options if option)


def report_inputs(wildcards):
    folder = target_dir(wildcards.target)
    inputs = {
        "picks": target_picks(wildcards),
        "candidates": expand(f"{RESULTS}/candidates/{{tomogram}}.csv", tomogram=sorted(TOMOGRAMS)),
        "figures": [f"{folder}/overlay.png"] + ([f"{RESULTS}/explore/grid.png",
                    f"{RESULTS}/explore/gallery.png"] if exploration_needed() else []),
    }
    if config["truth"]:
        inputs["metrics"] = f"{folder}/evaluation/picks.csv"
        if TARGETS[wildcards.target]["shape"] == "fiber":
            inputs["fiber_metrics"] = f"{folder}/evaluation/fibers.csv"
    if TARGETS[wildcards.target]["shape"] == "fiber":
        inputs["fibers"] = target_fibers(wildcards)
    return inputs


def copick_export_options(wildcards):
    return (f"--copick-config {config['copick']} --copick-object {wildcards.target}"
            f" --copick-session {config['copick_session']}")


def copick_tomogram_options(wildcards):
    return (f"--copick-config {config['copick']} --run {wildcards.tomogram}"
            f" --voxel-spacing {COPICK_SPACING} --tomo-type {config['copick_tomogram']['tomo_type']}")


def provenance_config_json(wildcards):
    """The validated config (defaults filled in) as one JSON string. A function, because a
    plain string in params would have its "{tomogram}" patterns taken for wildcards."""
    return json.dumps(config, sort_keys=True)


def exploration_instructions():
    lines = []
    for name in SELECTED:
        folder = target_dir(name)
        line = f"  {name}: picks {folder}/picks.star (RELION 5), picks.csv; report {folder}/report.html"
        if name in FIBER_TARGETS:
            line += f"; fibres {folder}/fibers.star, fibers.csv"
        lines.append(line)
    waiting = [name for name in TARGETS if name not in SELECTED]
    if lines and not waiting:
        return "\nmilopyp: finished.\n" + "\n".join(lines) + "\n"
    where = (f"targets.{waiting[0]}.selection" if waiting else "selection")
    return (
        "\nmilopyp: exploration finished" + (" (targets done:\n" + "\n".join(lines) + ")"
                                             if lines else "") + ".\n"
        f"  open   {RESULTS}/explore/explorer.html in a browser (copy it from the cluster with scp),\n"
        "         select the clusters of your target and press 'Save selection';\n"
        f"  figures: {RESULTS}/explore/grid.png, gallery.png, colormaps/;"
        f" table: {RESULTS}/explore/points.csv\n"
        f"  then set `{where}: path/to/selection.json` in your config and rerun snakemake\n"
        "  to train the localiser and pick in every tomogram.\n"
    )


def nms_radius_option():
    radius = config["candidates"]["nms_radius"]
    return f"--nms-radius {radius}" if radius else ""


def max_candidates_option():
    cap = config["candidates"]["max_candidates"]
    return f"--max-candidates {cap}" if cap else ""


def tiltseries_option(wildcards, input):
    if not input.tiltseries:
        return ""
    option = f"--tilt-series {input.tiltseries[0]}"
    if config["tiltseries_pixel_size"]:
        option += f" --tilt-pixel-size {config['tiltseries_pixel_size']}"
    if input.geometry:
        option += f" --geometry {input.geometry[0]}"
    return option


def geometry_path(name):
    """The tilt-series geometry record of tomogram ``name`` (milopyp check-geometry)."""
    return f"{RESULTS}/geometry/{name}.json"


def geometry_input(wildcards):
    return [geometry_path(wildcards.tomogram)] if config["tiltseries"] else []


def check_geometry_options(wildcards):
    """Pinned parts of the geometry (config tiltseries_geometry), pixel sizes, the margin."""
    settings = config["tiltseries_geometry"]
    options = [f"--name {wildcards.tomogram}", f"--min-margin {settings['min_margin']}",
               voxel_size_option()]
    if config["tiltseries_pixel_size"]:
        options.append(f"--tilt-pixel-size {config['tiltseries_pixel_size']}")
    if settings["sign"] != "auto":
        options.append(f"--sign {settings['sign']}")
    if settings["bin"] != "auto":
        options.append(f"--bin {settings['bin']}")
    if settings["offset"] != "auto":
        options.append("--offset {} {}".format(*settings["offset"]))
    return " ".join(option for option in options if option)


def provenance_records(wildcards):
    """What the jobs decided from the data or the machine, for provenance.json: each
    tomogram's tilt-series geometry and the exploration settings (device defaults)."""
    records = {"geometry": [], "explore": []}
    if exploration_needed():
        records["explore"] = [f"{RESULTS}/explore/settings.json"]
        if config["tiltseries"]:
            records["geometry"] = [geometry_path(name) for name in sorted(TOMOGRAMS)]
    return records


def provenance_records_option(wildcards, input):
    options = []
    if input.geometry:
        options.append("--geometry " + " ".join(input.geometry))
    if input.explore:
        options.append(f"--explore-settings {input.explore[0]}")
    return " ".join(options)


def explore_device_options():
    """The exploration settings the config sets; unset (null) ones are chosen by
    `milopyp train-explore` from the device it finds (GPU: the paper's, CPU: practical)."""
    settings = config["explore"]
    return " ".join(f"--{key} {settings[key]}" for key in ("epochs", "lr", "width")
                    if settings[key] is not None)


def evaluation_radius_option():
    radius_a = config["evaluation"]["radius"] or config["particle_diameter"] / 2
    return f"--radius-a {radius_a} --voxel-size {campaign_voxel_size_a()}"


def target_evaluation_options(wildcards):
    """Match radius (Å; fibres: 3 voxels, the training tube) and truth species of a target."""
    target = TARGETS[wildcards.target]
    if config["evaluation"]["radius"]:
        options = [f"--radius-a {config['evaluation']['radius']}"]
    elif target["shape"] == "fiber":
        options = ["--radius 3"]
    else:
        options = [f"--radius-a {target['particle_diameter'] / 2}"]
    options.append(f"--voxel-size {campaign_voxel_size_a()}")
    if target["truth_species"]:
        options.append(f"--species {target['truth_species']}")
    return " ".join(options)


def report_metrics_option(wildcards, input):
    options = []
    if config["truth"]:
        options.append(f"--metrics {input.metrics}")
        if hasattr(input, "fiber_metrics"):
            options.append(f"--fiber-metrics {input.fiber_metrics}")
    if hasattr(input, "fibers"):
        options.append("--fibers " + " ".join(input.fibers))
    return " ".join(options)


def species_option():
    species = config["evaluation"]["species"]
    return f"--species {species}" if species else ""


def explore_patch_cap_option():
    cap = config["explore"]["max_patches_per_tomogram"]
    return f"--max-patches-per-tomogram {cap}" if cap else ""
