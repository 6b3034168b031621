"""The option strings the workflow passes to each ``milopyp`` command.

Every function turns a :class:`~milopyp.campaign.Campaign` (and a
:class:`~milopyp.campaign.Target`, a tomogram name or input paths) into the settings part of
one command's line; the rules add only the files (``--tomogram``, ``-o`` ...). Derived
defaults come from :mod:`milopyp.defaults` and the target's :class:`~milopyp.shapes.Shape`,
the same functions the commands' own defaults use.

Each option name is written once, in :data:`FLAGS` (command -> setting -> option), so that
renaming an option of a command is a one-line change here.
"""

from __future__ import annotations

from pathlib import Path

from milopyp import defaults
from milopyp.campaign import Campaign, Target, is_copick_selection

#: command -> setting -> the option that passes it: the unit-suffixed names of ``--help``
#: (``-a`` Å, ``-vox`` voxels), except ``--voxel-size`` (Å per voxel, as in every package of
#: the field) and check-geometry's ``--offset``, whose older spelling the commands accept and
#: the workflow keeps: the dry-run tests and users' own checks look for them in the shell lines.
FLAGS = {
    "preprocess": {"sigma": "--sigma-vox", "no_equalize": "--no-equalize", "invert": "--invert",
                   "voxel_size": "--voxel-size"},
    "candidates": {"particle_diameter": "--particle-diameter-a", "threshold_std": "--threshold-std",
                   "levels": "--levels", "nms_radius": "--nms-radius-a",
                   "max_candidates": "--max-candidates", "no_centre": "--no-centre",
                   "voxel_size": "--voxel-size"},
    "check-geometry": {"name": "--name", "min_margin": "--min-margin",
                       "voxel_size": "--voxel-size", "tilt_pixel_size": "--tilt-pixel-size-a",
                       "sign": "--sign", "bin": "--bin", "offset": "--offset"},
    "patches": {"tilt_series": "--tilt-series", "tilt_pixel_size": "--tilt-pixel-size-a",
                "geometry": "--geometry", "invert": "--invert-tilt-series", "size": "--size-vox",
                "slices": "--slices", "max_angle": "--max-angle"},
    "evaluate": {"radius_a": "--radius-a", "radius_vox": "--radius-vox", "voxel_size": "--voxel-size",
                 "species": "--species"},
    "train-explore": {"epochs": "--epochs", "lr": "--lr", "width": "--width",
                      "batch_size": "--batch-size", "max_patches": "--max-patches-per-tomogram",
                      "seed": "--seed", "device": "--device"},
    "embed": {"device": "--device"},
    "cluster": {"k": "--k", "classes": "--classes", "umap_neighbors": "--umap-neighbors",
                "min_dist": "--min-dist", "seed": "--seed",
                "particle_diameter": "--particle-diameter-a", "profile_weight": "--profile-weight"},
    "import-selection": {"selection": "--selection", "copick_config": "--copick-config",
                         "points": "--points", "embeddings": "--embeddings",
                         "seed_radius": "--seed-radius-vox", "seed": "--seed",
                         "voxel_size": "--voxel-size", "label_tomograms": "--label-tomograms",
                         "max_labels": "--max-labels-per-tomogram",
                         "seed_labels": "--seed-labels", "max_seed_labels": "--max-seed-labels"},
    "train-localize": {"particle_diameter": "--particle-diameter-a", "shape": "--shape",
                       "epochs": "--epochs", "lr_step_epochs": "--lr-step-epochs",
                       "iterations_per_epoch": "--iterations-per-epoch",
                       "batch_size": "--batch-size", "lr": "--lr", "crop_xy": "--crop-xy-vox",
                       "crop_z": "--crop-z-vox", "bin": "--bin", "z_dilations": "--z-dilations",
                       "stride_xy": "--stride-xy", "n_blocks": "--n-blocks",
                       "base_channels": "--base-channels", "voxel_size": "--voxel-size",
                       "flips": "--flips", "recentre_labels": "--recentre-labels",
                       "no_profile_check": "--no-profile-check",
                       "class_prior": "--class-prior", "expected_particles": "--expected-particles",
                       "labels_from_seeds": "--labels-from-seeds",
                       "no_contrastive": "--no-contrastive", "no_pu": "--no-pu",
                       "seed": "--seed", "device": "--device"},
    "localize": {"threshold": "--threshold", "nms_kernel": "--nms-kernel-vox",
                 "z_face_margin": "--z-face-margin-vox",
                 "no_contrast_matching": "--no-contrast-matching",
                 "heatmap": "--heatmap", "voxel_size": "--voxel-size", "device": "--device"},
    "trace-fibers": {"link_distance": "--link-distance-a", "min_points": "--min-points",
                     "max_residual": "--max-residual-vox", "max_curvature": "--max-curvature",
                     "step": "--step-vox", "segment_spacing": "--segment-spacing-a",
                     "voxel_size": "--voxel-size"},
    "export": {"voxel_size": "--voxel-size", "copick_config": "--copick-config",
               "copick_object": "--copick-object", "copick_session": "--copick-session"},
    "overlay": {"particle_diameter": "--particle-diameter-a", "voxel_size": "--voxel-size",
                "title": "--title", "fibers": "--fibers"},
    "report": {"metrics": "--metrics", "fiber_metrics": "--fiber-metrics", "fibers": "--fibers"},
    "copick-tomogram": {"copick_config": "--copick-config", "run": "--run",
                        "voxel_spacing": "--voxel-spacing-a", "tomo_type": "--tomo-type"},
    "provenance": {"geometry": "--geometry", "explore_settings": "--explore-settings"},
}


def _options(command: str, *pairs) -> str:
    """``FLAG VALUE ...`` of ``command``: each pair is ``(setting, value)`` (a list value is
    joined by spaces; ``True`` gives the bare flag); None, False and "" pairs are left out."""
    flags = FLAGS[command]
    words = []
    for setting, value in pairs:
        if value is None or value is False or value == "":
            continue
        if value is True:
            words.append(flags[setting])
        elif isinstance(value, (list, tuple)):
            words.append(" ".join([flags[setting], *map(str, value)]))
        else:
            words.append(f"{flags[setting]} {value}")
    return " ".join(words)


def _if(condition, value):
    """``value`` when ``condition`` holds, else None (left out by :func:`_options`)."""
    return value if condition else None


def _plain(number) -> int | float:
    """An integral float as an int (3.0 -> 3), so that a count of voxels reads as one."""
    return int(number) if float(number).is_integer() else number


# -- per tomogram ----------------------------------------------------------------------------


def preprocess(campaign: Campaign) -> str:
    settings = campaign.config["preprocess"]
    return _options("preprocess", ("sigma", settings["denoise_sigma"]),
                    ("no_equalize", not settings["equalize"]), ("invert", settings["invert"]),
                    ("voxel_size", campaign.voxel_size_override_a))


def candidates(campaign: Campaign) -> str:
    settings = campaign.config["candidates"]
    return _options("candidates", ("particle_diameter", campaign.config["particle_diameter"]),
                    ("threshold_std", settings["threshold_std"]), ("levels", settings["levels"]),
                    ("nms_radius", settings["nms_radius"] or None),
                    ("max_candidates", settings["max_candidates"] or None),
                    ("no_centre", not settings["centre"]),
                    ("voxel_size", campaign.voxel_size_override_a))


def check_geometry(campaign: Campaign, name: str) -> str:
    """Pinned parts of the geometry (config tiltseries_geometry), pixel sizes, the margin."""
    settings = campaign.config["tiltseries_geometry"]
    return _options("check-geometry", ("name", name), ("min_margin", settings["min_margin"]),
                    ("voxel_size", campaign.voxel_size_override_a),
                    ("tilt_pixel_size", campaign.config["tiltseries_pixel_size"] or None),
                    ("sign", _if(settings["sign"] != "auto", settings["sign"])),
                    ("bin", _if(settings["bin"] != "auto", settings["bin"])),
                    ("offset", _if(settings["offset"] != "auto", settings["offset"])))


def patch_size_vox(campaign: Campaign) -> int:
    """Patch side in voxels: config, else :func:`milopyp.defaults.patch_size_vox` of the
    particle diameter at the campaign's voxel size."""
    if campaign.config["patches"]["size"]:
        return int(campaign.config["patches"]["size"])
    return defaults.patch_size_vox(campaign.config["particle_diameter"], campaign.voxel_size_a)


def patches(campaign: Campaign, tiltseries: list, geometry: list) -> str:
    """Tilt series (with its pixel size and checked geometry, when given), patch size,
    slices and tilt range."""
    settings = campaign.config["patches"]
    return _options(
        "patches", ("tilt_series", tiltseries[0] if tiltseries else None),
        ("tilt_pixel_size", _if(tiltseries, campaign.config["tiltseries_pixel_size"] or None)),
        ("geometry", geometry[0] if tiltseries and geometry else None),
        ("invert", campaign.config["preprocess"]["invert"]), ("size", patch_size_vox(campaign)),
        ("slices", settings["slices"]), ("max_angle", settings["max_tilt_angle"]))


def copick_tomogram(campaign: Campaign, name: str) -> str:
    return _options("copick-tomogram", ("copick_config", campaign.config["copick"]),
                    ("run", name), ("voxel_spacing", campaign.copick_spacing_a),
                    ("tomo_type", campaign.config["copick_tomogram"]["tomo_type"]))


# -- exploration -----------------------------------------------------------------------------


def train_explore(campaign: Campaign) -> str:
    """The exploration settings the config sets; unset (null) epochs, lr and width are chosen
    by `milopyp train-explore` from the device it finds (GPU: the paper's, CPU: practical)."""
    settings = campaign.config["explore"]
    return _options("train-explore", *((key, settings[key]) for key in ("epochs", "lr", "width")),
                    ("batch_size", settings["batch_size"]),
                    ("max_patches", settings["max_patches_per_tomogram"] or None),
                    ("seed", campaign.config["seed"]), ("device", campaign.config["device"]))


def embed(campaign: Campaign) -> str:
    return _options("embed", ("device", campaign.config["device"]))


def cluster(campaign: Campaign) -> str:
    settings = campaign.config["explore"]
    return _options("cluster", ("k", settings["k"]), ("classes", settings["classes"]),
                    ("umap_neighbors", settings["umap_neighbors"]),
                    ("min_dist", settings["umap_min_dist"]), ("seed", campaign.config["seed"]),
                    ("profile_weight", _plain(settings["profile_weight"])),
                    ("particle_diameter", campaign.config["particle_diameter"]))


# -- per target ------------------------------------------------------------------------------


def selection(campaign: Campaign, target: Target) -> str:
    """``--selection`` (and, for copick picks, the project) of a target's import_selection."""
    return _options("import-selection", ("selection", target.selection),
                    ("copick_config", _if(is_copick_selection(target.selection),
                                          campaign.config["copick"])))


def selection_exploration(points, embeddings) -> str:
    """The exploration a selection by clusters or seeds reads (none for a coordinate table)."""
    return _options("import-selection", ("points", points or None),
                    ("embeddings", _if(points, list(embeddings))))


def import_selection(campaign: Campaign, target: Target) -> str:
    settings = target.localize
    return _options(
        "import-selection", ("seed_radius", settings["seed_radius"]),
        ("seed", campaign.config["seed"]), ("voxel_size", campaign.voxel_size_override_a),
        ("label_tomograms", settings["label_tomograms"] or None),
        ("max_labels", settings["max_labels_per_tomogram"] or None),
        ("seed_labels", settings["seed_labels"]),
        ("max_seed_labels", settings["max_seed_labels"] or None))


def train_localize(campaign: Campaign, target: Target) -> str:
    settings = target.localize
    recentre = settings["recentre_labels"]
    dilations = settings["z_dilations"]
    return _options(
        "train-localize", ("particle_diameter", target.particle_diameter_a),
        ("shape", target.shape.name), ("epochs", settings["epochs"]),
        ("lr_step_epochs", settings["lr_step_epochs"]),
        ("iterations_per_epoch", settings["iterations_per_epoch"]),
        ("batch_size", settings["batch_size"]), ("lr", settings["lr"]),
        ("crop_xy", settings["crop_xy"]), ("crop_z", settings["crop_z"]),
        ("bin", settings["bin"]),
        ("z_dilations", dilations if dilations == "auto" else list(dilations)),
        ("stride_xy", settings["stride_xy"]), ("n_blocks", settings["n_blocks"]),
        ("base_channels", settings["base_channels"]),
        ("voxel_size", campaign.voxel_size_override_a),
        ("flips", _if(settings["test_time_flips"] != "auto", settings["test_time_flips"])),
        # labels at candidate positions (a selection by clusters or seeds) move with auto
        ("recentre_labels", recentre is True or (
            recentre == "auto" and not target.coordinate_selection)),
        ("no_profile_check", settings["profile_check"] is False),  # auto: on, as true
        ("class_prior", settings["class_prior"] or None),
        ("expected_particles", _if(not settings["class_prior"],
                                   settings["expected_particles"] or None)),
        ("labels_from_seeds", _if(settings["labels_from_seeds"] != "auto",
                                  "yes" if settings["labels_from_seeds"] else "no")),
        ("no_contrastive", not settings["contrastive"]), ("no_pu", not settings["pu"]),
        ("seed", campaign.config["seed"]), ("device", campaign.config["device"]))


def localize(campaign: Campaign, target: Target, picks_path: str) -> str:
    """Threshold, NMS box and z-face margin (globular targets; fibres use the shape's own
    box and keep their points), the heat map next to ``picks_path`` when asked for, and the
    device."""
    settings = target.localize
    return _options(
        "localize", ("threshold", settings["threshold"]),
        ("nms_kernel", _if(not target.shape.filament, settings["nms_kernel"] or None)),
        ("z_face_margin", _if(not target.shape.filament, settings["z_face_margin"])),
        ("no_contrast_matching",
         not target.shape.filament and settings["contrast_matching"] is False),
        ("heatmap", _if(settings["write_heatmap"],
                        f"{Path(picks_path).with_suffix('')}_heatmap.mrc")),
        ("voxel_size", campaign.voxel_size_override_a), ("device", campaign.config["device"]))


def trace_fibers(campaign: Campaign, target: Target) -> str:
    """Link distance and segment spacing in Å: the target's, else
    :func:`milopyp.defaults.link_distance_a` and :func:`~milopyp.defaults.segment_spacing_a`
    of its diameter."""
    settings = target.fibers
    diameter_a = target.particle_diameter_a
    return _options(
        "trace-fibers",
        ("link_distance", settings["link_distance"] or defaults.link_distance_a(diameter_a)),
        ("min_points", settings["min_points"]), ("max_residual", settings["max_residual"]),
        ("max_curvature", settings["max_curvature"]), ("step", settings["step"]),
        ("segment_spacing",
         settings["segment_spacing"] or defaults.segment_spacing_a(diameter_a)),
        ("voxel_size", campaign.voxel_size_override_a))


def export(campaign: Campaign) -> str:
    return _options("export", ("voxel_size", campaign.voxel_size_override_a))


def export_copick(campaign: Campaign, target: Target) -> str:
    return _options("export", ("copick_config", campaign.config["copick"]),
                    ("copick_object", target.name),
                    ("copick_session", campaign.config["copick_session"]))


def evaluate_candidates(campaign: Campaign) -> str:
    """Match radius in Å (config, else :func:`milopyp.defaults.evaluation_radius_a` of the
    particle diameter), the campaign's voxel size and the truth species."""
    radius_a = (campaign.config["evaluation"]["radius"]
                or defaults.evaluation_radius_a(campaign.config["particle_diameter"]))
    return _options("evaluate", ("radius_a", radius_a), ("voxel_size", campaign.voxel_size_a),
                    ("species", campaign.config["evaluation"]["species"]))


def evaluate_target(campaign: Campaign, target: Target) -> str:
    """Match radius (config in Å; else fibres: the training tube's
    :data:`~milopyp.defaults.FIBER_EVALUATION_RADIUS_VOX` voxels, globular targets:
    :func:`~milopyp.defaults.evaluation_radius_a`) and truth species of a target."""
    radius_a = campaign.config["evaluation"]["radius"] or None
    if not radius_a and not target.shape.filament:
        radius_a = defaults.evaluation_radius_a(target.particle_diameter_a)
    radius_vox = None if radius_a else _plain(defaults.FIBER_EVALUATION_RADIUS_VOX)
    return _options("evaluate", ("radius_a", radius_a), ("radius_vox", radius_vox),
                    ("voxel_size", campaign.voxel_size_a), ("species", target.truth_species))


def overlay(campaign: Campaign, target: Target, fibers) -> str:
    return _options("overlay", ("particle_diameter", target.particle_diameter_a),
                    ("voxel_size", campaign.voxel_size_override_a), ("title", target.name),
                    ("fibers", fibers or None))


def report(metrics=None, fiber_metrics=None, fibers=None) -> str:
    """The target's metrics tables (with truth) and fibre tables (fibre targets)."""
    return _options("report", ("metrics", metrics or None),
                    ("fiber_metrics", fiber_metrics or None),
                    ("fibers", list(fibers) if fibers else None))


def provenance(geometry, explore_settings) -> str:
    """The records of what the jobs decided: tilt-series geometries, exploration settings."""
    return _options("provenance", ("geometry", list(geometry) if geometry else None),
                    ("explore_settings", explore_settings[0] if explore_settings else None))
