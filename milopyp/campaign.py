"""The campaign a workflow config describes, as plain Python (no Snakemake).

One :class:`Campaign` holds the validated config and every fact the rules derive from it:
the tomograms (a glob of MRC files, a copick project or a RELION ``tomograms.star``, each
giving ``name -> path``), their geometry and the one voxel size of the campaign, the tilt
series and truth tables, the exploration's training subset, the targets (:class:`Target`)
and the output files. Bad input raises :class:`~milopyp.errors.MilopypError` with one line;
``rules/common.smk`` turns it into Snakemake's one-line failure. The command options the
rules pass are built from these facts in :mod:`milopyp.params`.
"""

from __future__ import annotations

import glob
import re
from dataclasses import dataclass
from pathlib import Path

from milopyp.config import tomogram_source, validate_config
from milopyp.errors import MilopypError
from milopyp.io.mrc import common_voxel_size, read_header, tomogram_name
from milopyp.shapes import Shape
from milopyp.shapes import shape as shape_named

#: what a copick run must be called to name a tomogram (it becomes a file stem and a wildcard)
RUN_NAME = re.compile(r"[A-Za-z0-9_-]+")
#: prefix of a selection given as copick picks (``copick:OBJECT:USER:SESSION``)
COPICK_SELECTION_PREFIX = "copick:"



def is_copick_selection(selection) -> bool:
    """A selection given as copick picks (``copick:OBJECT:USER:SESSION``)."""
    return str(selection).startswith(COPICK_SELECTION_PREFIX)


def is_coordinate_selection(selection) -> bool:
    """A selection used directly as labels (a coordinate table, by its suffix, or copick
    picks): it needs no clusters, so no exploration."""
    from milopyp.io.coords import SUFFIXES

    return is_copick_selection(selection) or Path(str(selection)).suffix.lower() in SUFFIXES


def discover_tomograms(pattern: str) -> dict[str, str]:
    """Map tomogram name (:func:`tomogram_name`) -> path for every file matching the glob
    ``pattern``, sorted by path."""
    paths = sorted(glob.glob(pattern))
    if not paths:
        raise MilopypError(
            f"tomograms: pattern {pattern!r} matched no file (working directory {Path.cwd()}); "
            "check the path, or run snakemake with --directory"
        )
    names: dict[str, str] = {}
    for path in paths:
        name = tomogram_name(path)
        if name in names:
            raise MilopypError(
                f"tomograms: {names[name]} and {path} share the name {name!r}; rename one")
        names[name] = path
    return names


@dataclass(frozen=True, eq=False)
class Target:
    """What to pick: the settings of one entry of ``targets`` (or of the single
    ``selection``), top-level values filled in where the target sets none."""

    name: str
    shape: Shape
    #: the selection file (or copick:OBJECT:USER:SESSION); None: waits for the user
    selection: str | None
    #: a trained model file to pick with instead of a selection and a training; None: train
    model: str | None
    #: particle (or filament) diameter in Å
    particle_diameter_a: float
    #: species of the truth tables this target is scored against (None: every row)
    truth_species: str | None
    #: the complete ``localize`` settings (top level, then the target's own)
    localize: dict
    #: the complete ``fibers`` settings (top level, then the target's own)
    fibers: dict

    @property
    def selected(self) -> bool:
        """Ready to pick: a selection to train on, or a trained model."""
        return bool(self.selection) or bool(self.model)

    @property
    def coordinate_selection(self) -> bool:
        """Its selection is used directly as labels (see :func:`is_coordinate_selection`)."""
        return bool(self.selection) and is_coordinate_selection(self.selection)


def resolve_targets(config: dict, check_models: bool = True) -> dict[str, Target]:
    """Target name -> :class:`Target` of a validated config (a single ``selection`` is the
    target ``particles``). A target's ``model:`` must exist; with ``check_models`` its file
    is also read (:func:`check_model_file`, which imports torch: ~0.9 s)."""
    targets = config["targets"] or {}
    if targets and config["selection"]:
        raise MilopypError(
            "set either `selection` (one target) or `targets` (several), not both; move the "
            f"selection file to targets.<name>.selection (targets: {', '.join(targets)})"
        )
    if not targets and config["selection"]:
        targets = {"particles": {"selection": config["selection"]}}
    for name, settings in targets.items():
        if settings.get("selection") and settings.get("model"):
            raise MilopypError(
                f"targets.{name}: set either `selection` (train a model on it) or `model` (pick "
                f"with a trained one), not both")
        if settings.get("model"):
            check_model_file(name, settings["model"], settings.get("shape", "globular"),
                             read=check_models)
    return {
        name: Target(
            name=name,
            shape=shape_named(settings.get("shape", "globular")),
            selection=settings.get("selection"),
            model=settings.get("model"),
            particle_diameter_a=settings.get("particle_diameter") or config["particle_diameter"],
            truth_species=settings.get("truth_species") or config["evaluation"]["species"],
            localize={**config["localize"], **settings.get("localize", {})},
            fibers={**config["fibers"], **settings.get("fibers", {})},
        )
        for name, settings in targets.items()
    }


def check_model_file(target: str, path: str, shape: str, read: bool = True) -> None:
    """A target's ``model:`` must be a file and, read (``read``), a localiser file
    (:mod:`milopyp.io.localizer`) of the target's shape; else one line naming the file and
    the fix."""
    if not Path(path).is_file():
        raise MilopypError(f"targets.{target}.model: {path} not found; give the model.pt of "
                           "`milopyp train-localize` (an earlier campaign's "
                           "results/targets/<name>/model.pt)")
    if not read:
        return
    from milopyp.io.localizer import read_localizer

    trained = read_localizer(path, "cpu")["settings"].get("shape", "globular")
    if shape_named(trained).filament != shape_named(shape).filament:
        raise MilopypError(f"targets.{target}.model: {path} was trained on a {trained} target, "
                           f"the target's shape is {shape}; set `shape: {trained}` or give "
                           f"a {shape} model")


def copick_tomograms(config: dict) -> tuple[dict, float]:
    """Run name -> ``(shape_zyx, voxel_size_a)`` of the copick project's chosen tomograms,
    and the voxel spacing in Å (config, else the only one that has the tomo_type)."""
    from milopyp.io import copick as cp

    source = f"copick: {config['copick']}"
    settings = config["copick_tomogram"]
    root = cp.open_project(config["copick"])
    spacing = settings["voxel_spacing"]
    if spacing is None:
        found = sorted({vs.voxel_size for run in root.runs for vs in run.voxel_spacings
                        if vs.get_tomograms(settings["tomo_type"])})
        if len(found) != 1:
            raise MilopypError(
                f"{source}: {settings['tomo_type']!r} tomograms at voxel spacings "
                f"{found or 'none'} Å; set copick_tomogram.voxel_spacing (and tomo_type)")
        spacing = found[0]
    names = cp.tomogram_runs(root, spacing, settings["tomo_type"], source)
    bad = [n for n in names if not RUN_NAME.fullmatch(n)]
    if bad:
        raise MilopypError(
            f"{source}: run names {bad[:5]} hold characters other than letters, digits, "
            "_ and -, which cannot name tomograms; rename the runs")
    geometry = {n: cp.tomogram_geometry(root, n, spacing, settings["tomo_type"], source)
                for n in names}
    return geometry, float(spacing)


def relion_tomograms(config: dict, source: str) -> tuple[dict, dict, float | None]:
    """rlnTomoName -> ``(shape_zyx, voxel_size_a)`` and -> MRC path of the
    ``relion_tomograms`` star's tomograms, and the voxel size in Å the commands must be given
    (RELION's, where a header has none) or None."""
    from milopyp.io import relion

    tomograms = relion.read_relion_tomograms(
        config["relion_tomograms"], column=config["relion_tomogram_column"],
        project_dir=config["relion_project_dir"], voxel_size_a=config["voxel_size"] or None)
    override_a = relion.voxel_size_override_a(tomograms, source)
    return ({name: (t.shape_zyx, t.voxel_size_a) for name, t in tomograms.items()},
            {name: str(t.path) for name, t in tomograms.items()}, override_a)


class Campaign:
    """The tomograms, voxel size, targets and outputs of a validated workflow ``config``.

    Reads the tomogram source (headers or metadata, no data) and checks the voxel size when
    built, so that a bad campaign fails before any job runs. ``check_models``: read the
    targets' ``model:`` files too (:func:`resolve_targets`): the Snakefile does in the main
    Snakemake process, not in each job, which parses the Snakefile again.
    """

    def __init__(self, config: dict, check_models: bool = True):
        self.config = config
        self.results = config["results"].rstrip("/")
        self.source_key = tomogram_source(config)  # tomograms, copick or relion_tomograms
        self.source = f"{self.source_key}: {config[self.source_key]}"
        #: name -> (shape_zyx, voxel_size_a) from a copick project's or a star's metadata
        self.source_geometry: dict = {}
        #: voxel spacing (Å) of the copick project's tomograms; None for other sources
        self.copick_spacing_a: float | None = None
        #: rlnTomoName -> the RELION reconstruction that results/tomograms/{name}.mrc links to
        self.relion_paths: dict[str, str] = {}
        self._relion_voxel_size_a = None
        if config["copick"]:
            self.source_geometry, self.copick_spacing_a = copick_tomograms(config)
        elif config["relion_tomograms"]:
            self.source_geometry, self.relion_paths, self._relion_voxel_size_a = (
                relion_tomograms(config, self.source))
        # copick's tomograms are copied, RELION's linked, to results/tomograms/{name}.mrc
        #: tomogram name -> the MRC file the commands read
        self.tomograms: dict[str, str] = (
            discover_tomograms(config["tomograms"]) if self.source_key == "tomograms" else
            {name: f"{self.results}/tomograms/{name}.mrc" for name in sorted(self.source_geometry)})
        self._geometry: dict = {}
        #: voxel size in Å of the whole campaign (checked: one for every tomogram)
        self.voxel_size_a = self._campaign_voxel_size_a()
        #: target name -> Target
        self.targets = resolve_targets(config, check_models)

    @classmethod
    def from_config(cls, config: dict, source: str = "config",
                    check_models: bool = True) -> Campaign:
        """Validate ``config`` (defaults filled in) and build its campaign; ``check_models``:
        read the targets' ``model:`` files (:func:`resolve_targets`)."""
        return cls(validate_config(config, source), check_models)

    # -- tomograms ---------------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        """Tomogram names, sorted."""
        return sorted(self.tomograms)

    @property
    def voxel_size_override_a(self):
        """Voxel size in Å that replaces the headers': config, else RELION's where a RELION
        campaign's headers have none; None = each header's own."""
        return self.config["voxel_size"] or self._relion_voxel_size_a

    def tomogram_geometry(self, name: str) -> tuple[tuple[int, int, int], float]:
        """``(shape_zyx, voxel_size_a)`` of tomogram ``name``: its MRC header (the override
        first) or, for a copick or RELION campaign, its metadata (no data is read)."""
        if name not in self._geometry:
            if name in self.source_geometry:
                shape_zyx, voxel_size_a = self.source_geometry[name]
                self._geometry[name] = (
                    shape_zyx, float(self.voxel_size_override_a or voxel_size_a))
            else:
                self._geometry[name] = read_header(
                    self.tomograms[name], voxel_size_a=self.voxel_size_override_a)
        return self._geometry[name]

    def _campaign_voxel_size_a(self) -> float:
        """Config, else the tomograms' own, which must all agree (mixed voxel sizes raise
        with the list; nothing is rescaled)."""
        if self.voxel_size_override_a:
            return float(self.voxel_size_override_a)
        sizes = {name: self.tomogram_geometry(name)[1] for name in self.tomograms}
        return common_voxel_size(sizes, self.source)

    def tiltseries_path(self, name: str) -> str | None:
        pattern = self.config["tiltseries"]
        return pattern.format(tomogram=name) if pattern else None

    def truth_paths(self) -> list[str]:
        """Ground-truth tables of every tomogram ([] when `truth` is not set)."""
        pattern = self.config["truth"]
        return [pattern.format(tomogram=name) for name in self.names] if pattern else []

    def train_explore_tomograms(self) -> list[str]:
        """The subset the exploration network trains on (names)."""
        subset = self.config["explore"]["train_tomograms"]
        if isinstance(subset, int):
            return self.names[:subset]
        unknown = sorted(set(subset) - set(self.tomograms))
        if unknown:
            raise MilopypError(
                f"explore.train_tomograms names {unknown}, which are not among the tomograms "
                f"({', '.join(self.names[:5])}, ...); use file stems"
            )
        return list(subset)

    # -- targets -----------------------------------------------------------------------------

    @property
    def selected(self) -> list[str]:
        """Targets whose selection is given (the others wait for the user)."""
        return [name for name, target in self.targets.items() if target.selected]

    def exploration_needed(self) -> bool:
        """False only when every target has a coordinate-table selection or a trained model:
        then SimSiam, the embeddings, clustering and the explorer are not run."""
        return not self.targets or not all(
            target.coordinate_selection or target.model for target in self.targets.values())

    def model_file(self, target: Target) -> str:
        """The model that picks ``target``: its ``model:``, else the one the workflow trains
        (targets/<name>/model.pt)."""
        return target.model or f"{self.target_dir(target.name)}/model.pt"

    def selection_file(self, target: Target) -> str:
        """The selection file of ``target`` (for copick picks, the project's config.json)."""
        if is_copick_selection(target.selection):
            if not self.config["copick"]:
                raise MilopypError(
                    f"targets.{target.name}: selection {target.selection} needs `copick:` (the "
                    "project's config.json) in the config")
            return self.config["copick"]
        return target.selection

    # -- outputs -----------------------------------------------------------------------------

    def per_tomogram(self, folder: str, suffix: str = ".csv") -> list[str]:
        """``{folder}/{name}{suffix}`` of every tomogram, by name."""
        return [f"{folder}/{name}{suffix}" for name in self.names]

    def target_dir(self, name: str = "{target}") -> str:
        return f"{self.results}/targets/{name}"

    def geometry_path(self, name: str) -> str:
        """The tilt-series geometry record of tomogram ``name`` (milopyp check-geometry)."""
        return f"{self.results}/geometry/{name}.json"

    def exploration_outputs(self) -> list[str]:
        explore = f"{self.results}/explore"
        return [f"{explore}/points.csv", f"{explore}/explorer.html", f"{explore}/grid.png",
                f"{explore}/gallery.png", *self.per_tomogram(f"{explore}/colormaps", ".png"),
                *self.per_tomogram(f"{explore}/features", ".npz")]

    def exploration_figures(self) -> list[str]:
        """The exploration's figures a report shows (none without exploration)."""
        if not self.exploration_needed():
            return []
        return [f"{self.results}/explore/grid.png", f"{self.results}/explore/gallery.png"]

    def target_outputs(self, name: str) -> list[str]:
        folder = self.target_dir(name)
        filament = self.targets[name].shape.filament
        outputs = self.per_tomogram(f"{folder}/picks")
        outputs += [f"{folder}/picks.star", f"{folder}/picks.csv", f"{folder}/report.html"]
        if filament:
            outputs += self.per_tomogram(f"{folder}/fibers")
            outputs += [f"{folder}/fibers.star", f"{folder}/fibers.csv"]
        if self.config["truth"]:
            outputs.append(f"{folder}/evaluation/picks.csv")
            if filament:
                outputs.append(f"{folder}/evaluation/fibers.csv")
        if self.config["copick"]:
            outputs.append(f"{folder}/copick.json")
        return outputs

    def all_outputs(self) -> list[str]:
        outputs = self.per_tomogram(f"{self.results}/candidates")
        if self.exploration_needed():
            outputs += self.exploration_outputs()
        outputs.append(f"{self.results}/provenance.json")
        if self.config["truth"]:
            outputs.append(f"{self.results}/evaluation/candidates.csv")
        for name in self.selected:
            outputs += self.target_outputs(name)
        return outputs

    def selection_exploration_inputs(self, target: Target) -> dict:
        """points.csv and the clustering's features (explore/features/, the embeddings beside
        the radial profiles) for a selection by clusters or seeds; none for a coordinate table
        (used directly as labels)."""
        if target.coordinate_selection:
            return {"points": [], "embeddings": []}
        return {"points": f"{self.results}/explore/points.csv",
                "embeddings": self.per_tomogram(f"{self.results}/explore/features", ".npz")}

    def overlay_inputs(self, target: Target) -> dict:
        """The tomogram the report's overlay figure shows (the first by name), its picks and,
        for a filament target, its fibres."""
        folder, name = self.target_dir(target.name), self.names[0]
        return {"tomogram": self.tomograms[name], "picks": f"{folder}/picks/{name}.csv",
                "fibers": f"{folder}/fibers/{name}.csv" if target.shape.filament else []}

    def report_inputs(self, target: Target) -> dict:
        """Picks, candidates, model and figures of a target's report; metrics with truth;
        fibres."""
        folder = self.target_dir(target.name)
        inputs = {"picks": self.per_tomogram(f"{folder}/picks"), "model": self.model_file(target),
                  "candidates": self.per_tomogram(f"{self.results}/candidates"),
                  "figures": [f"{folder}/overlay.png", *self.exploration_figures()]}
        if self.config["truth"]:
            inputs["metrics"] = f"{folder}/evaluation/picks.csv"
            if target.shape.filament:
                inputs["fiber_metrics"] = f"{folder}/evaluation/fibers.csv"
        if target.shape.filament:
            inputs["fibers"] = self.per_tomogram(f"{folder}/fibers")
        return inputs

    def provenance_records(self) -> dict:
        """What the jobs decided from the data or the machine, for provenance.json: each
        tomogram's tilt-series geometry and the exploration settings (device defaults)."""
        records = {"geometry": [], "explore": []}
        if self.exploration_needed():
            records["explore"] = [f"{self.results}/explore/settings.json"]
            if self.config["tiltseries"]:
                records["geometry"] = [self.geometry_path(name) for name in self.names]
        return records

    def exploration_instructions(self) -> str:
        """What to do next, printed when the workflow has finished."""
        results = self.results
        lines = []
        for name in self.selected:
            folder = self.target_dir(name)
            line = (f"  {name}: picks {folder}/picks.star (RELION 5), picks.csv; "
                    f"report {folder}/report.html")
            if self.targets[name].shape.filament:
                line += f"; fibres {folder}/fibers.star, fibers.csv"
            lines.append(line)
        waiting = [name for name in self.targets if name not in self.selected]
        if lines and not waiting:
            return "\nmilopyp: finished.\n" + "\n".join(lines) + "\n"
        where = (f"targets.{waiting[0]}.selection" if waiting else "selection")
        return (
            "\nmilopyp: exploration finished" + (" (targets done:\n" + "\n".join(lines) + ")"
                                                 if lines else "") + ".\n"
            f"  open   {results}/explore/explorer.html in a browser (copy it from the cluster "
            "with scp),\n"
            "         select the clusters of your target and press 'Save selection';\n"
            f"  figures: {results}/explore/grid.png, gallery.png, colormaps/;"
            f" table: {results}/explore/points.csv\n"
            f"  then set `{where}: path/to/selection.json` in your config and rerun snakemake\n"
            "  to train the localiser and pick in every tomogram.\n"
        )
