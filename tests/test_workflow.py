"""The Snakemake workflow end to end on a tiny simulated campaign (slow: several minutes)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from workflow_helpers import BIN, REPO, simulate_campaign_data, workflow_env


def run(args, cwd, check=True):
    result = subprocess.run(args, cwd=cwd, env=workflow_env(), capture_output=True, text=True,
                            check=False)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, args))} failed ({result.returncode}):\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
        )
    return result


def snakemake(workdir, *extra, check=True, cores=2):
    return run(
        [BIN / "snakemake", "--snakefile", REPO / "Snakefile", "--cores", str(cores),
         "--configfile", workdir / "config.yaml", "--directory", workdir, *extra],
        cwd=workdir,
        check=check,
    )


def write_config(workdir: Path, **overrides) -> None:
    config = {
        "tomograms": "data/tomograms/*.mrc",
        "tiltseries": "data/tiltseries/{tomogram}.st",
        "truth": "data/truth/{tomogram}.csv",
        "particle_diameter": 260,
        "seed": 3,
        "explore": {"train_tomograms": 1, "epochs": 2, "batch_size": 32, "width": 8,
                    "k": 8, "classes": 3, "umap_neighbors": 10},
        "evaluation": {"species": "ribosome"},
    }
    config.update(overrides)
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return simulate_campaign_data(tmp_path_factory.mktemp("sim") / "data", 2)


def campaign(tmp_path: Path, dataset: Path, **overrides) -> Path:
    (tmp_path / "data").symlink_to(dataset)
    write_config(tmp_path, **overrides)
    return tmp_path


@pytest.mark.slow
def test_workflow_runs_exploration_end_to_end(tmp_path, dataset):
    work = campaign(tmp_path, dataset)
    result = snakemake(work)
    results = work / "results"
    names = sorted(p.name.split(".")[0] for p in (dataset / "tomograms").glob("*.mrc"))
    assert len(names) == 2
    for name in names:
        table = pd.read_csv(results / "candidates" / f"{name}.csv")
        assert list(table.columns[:5]) == ["tomogram", "x", "y", "z", "score"]
        assert len(table) > 0 and (table["tomogram"] == name).all()
        patches = np.load(results / "patches" / f"{name}.npz")
        assert patches["patches"].shape[:2] == (len(table), 2)  # P_t and P_s
        assert (results / "embeddings" / f"{name}.npz").exists()
        assert (results / "explore" / "colormaps" / f"{name}.png").stat().st_size > 0
        # the preprocessed volume is a temporary file, removed once used
        assert not (results / "preprocessed" / f"{name}.mrc").exists()
        assert (results / "logs" / "candidates" / f"{name}.log").exists()
    points = pd.read_csv(results / "explore" / "points.csv")
    assert {"point_id", "tomogram", "x", "y", "z", "cluster", "umap_x", "umap_y"} <= set(points)
    assert points["cluster"].nunique() <= 3
    assert (results / "explore" / "explorer.html").stat().st_size > 10_000
    metrics = pd.read_csv(results / "evaluation" / "candidates.csv")
    overall = metrics.set_index("tomogram").loc["overall"]
    assert overall["recall"] > 0.5, metrics
    assert "explorer.html" in result.stdout + result.stderr

    again = snakemake(work)  # a finished campaign has nothing left to do
    assert "Nothing to be done" in again.stdout + again.stderr


@pytest.mark.slow
def test_same_seed_gives_same_candidates_and_embeddings(tmp_path, dataset):
    outputs = []
    for run_dir in ("a", "b"):
        work = tmp_path / run_dir
        work.mkdir()
        campaign(work, dataset)
        name = min(p.name.split(".")[0] for p in (dataset / "tomograms").glob("*.mrc"))
        snakemake(work, f"results/embeddings/{name}.npz")
        outputs.append(
            (
                (work / "results" / "candidates" / f"{name}.csv").read_text(),
                np.load(work / "results" / "embeddings" / f"{name}.npz")["embeddings"],
            )
        )
    assert outputs[0][0] == outputs[1][0]
    np.testing.assert_array_equal(outputs[0][1], outputs[1][1])


def test_unknown_config_key_stops_with_one_line(tmp_path, dataset):
    work = campaign(tmp_path, dataset, candidate={"threshold_std": 1})
    result = snakemake(work, "--dry-run", check=False)
    assert result.returncode != 0
    assert "unknown config key `candidate`; did you mean `candidates`" in result.stderr


def test_pattern_matching_no_tomogram_is_a_clear_error(tmp_path, dataset):
    work = campaign(tmp_path, dataset, tomograms="nowhere/*.mrc")
    result = snakemake(work, "--dry-run", check=False)
    assert result.returncode != 0
    assert "matched no file" in result.stderr


def test_selection_and_targets_together_is_a_clear_error(tmp_path, dataset):
    work = campaign(tmp_path, dataset, selection="a.yaml",
                    targets={"ribosome": {"selection": "b.yaml"}})
    result = snakemake(work, "--dry-run", check=False)
    assert result.returncode != 0
    assert "set either `selection` (one target) or `targets`" in result.stderr


def test_a_target_without_selection_waits(tmp_path, dataset):
    work = campaign(tmp_path, dataset, targets={"ribosome": {"selection": None}})
    result = snakemake(work, "--dry-run")
    assert "import_selection" not in result.stdout and "train_localize" not in result.stdout


def test_lint_is_clean(tmp_path, dataset):
    work = campaign(tmp_path, dataset)
    result = snakemake(work, "--lint", check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def job_counts(dry_run_stdout: str) -> dict[str, int]:
    """Rule -> number of jobs, from the "Job stats" table of a dry run."""
    table = dry_run_stdout.split("Job stats:")[1].split("total")[0].splitlines()[3:]
    return {line.split()[0]: int(line.split()[1]) for line in table if line.strip()}


def test_tilt_series_geometry_is_checked_before_patches(tmp_path, dataset):
    work = campaign(tmp_path, dataset, tiltseries_geometry={"sign": -1, "offset": [1.5, -2]})
    dry = snakemake(work, "--dry-run", "--printshellcmds")
    assert job_counts(dry.stdout)["check_geometry"] == 2
    assert "milopyp check-geometry --tomogram data/tomograms/tomo_000.mrc" in dry.stdout
    assert "--sign -1 --offset 1.5 -2" in dry.stdout  # pinned parts reach the command
    assert "--geometry results/geometry/tomo_000.json" in dry.stdout  # patches use it
    assert "--geometry results/geometry/tomo_000.json results/geometry/tomo_001.json" in (
        dry.stdout)  # and provenance.json records it
    assert "--settings-output results/explore/settings.json" in dry.stdout
    # --cores is no param of provenance (a rerun with other --cores would redo it)
    assert "snakemake_cores" not in dry.stdout
    assert "--epochs 2" in dry.stdout and "--lr" not in dry.stdout  # unset: chosen by device

    write_config(work, tiltseries_geometry={"sign": 2})
    result = snakemake(work, "--dry-run", check=False)
    assert result.returncode != 0 and "bad value for `tiltseries_geometry.sign`" in result.stderr


def test_coordinate_table_selection_needs_no_exploration(tmp_path, dataset):
    work = campaign(tmp_path, dataset)
    labels = filament_labels(work, dataset, "tomo_000")
    write_config(work, selection=labels.name)
    dry = snakemake(work, "--dry-run", "--printshellcmds").stdout
    jobs = job_counts(dry)
    assert jobs["import_selection"] == 1 and jobs["candidates"] == 2
    assert not {"train_explore", "embed", "cluster", "patches", "check_geometry"} & set(jobs)
    assert "milopyp --threads 2 train-localize" in dry
    write_config(work, selection=labels.name, localize={"recentre_labels": "auto"})
    dry = snakemake(work, "--dry-run", "--printshellcmds").stdout
    assert "--recentre-labels" not in dry  # labels placed by a person stay where they are
    # a selection by seeds (or clusters) still explores; with recentre_labels: auto its labels
    # (candidate positions) move to the model's maxima during training (default: off)
    seeds_file(work, dataset, "tomo_000")
    write_config(work, selection="seeds.yaml")
    dry = snakemake(work, "--dry-run", "--printshellcmds").stdout
    jobs = job_counts(dry)
    assert jobs["train_explore"] == 1 and jobs["check_geometry"] == 2
    assert "--recentre-labels" not in dry
    write_config(work, selection="seeds.yaml", localize={"recentre_labels": "auto"})
    assert "--recentre-labels" in snakemake(work, "--dry-run", "--printshellcmds").stdout


def seeds_file(workdir: Path, dataset: Path, name: str, n: int = 3,
               negatives: str | None = None) -> Path:
    """A few ribosome centres of one tomogram, as a user would click them (and, given
    ``negatives``, that coordinate table as what is not the target)."""
    truth = pd.read_csv(dataset / "truth" / f"{name}.csv")
    ribosomes = truth[truth["species"] == "ribosome"].head(n)
    seeds = [
        {"tomogram": name, "x": round(r.x), "y": round(r.y), "z": round(r.z)}
        for r in ribosomes.itertuples()
    ]
    path = workdir / "seeds.yaml"
    doc = {"seeds": seeds, **({"negatives": negatives} if negatives else {})}
    path.write_text(yaml.safe_dump(doc))
    return path


def look_alikes(workdir: Path, dataset: Path, name: str, n: int = 6) -> Path:
    """Centres of particles that are not ribosomes (small complexes, gold) in one tomogram."""
    truth = pd.read_csv(dataset / "truth" / f"{name}.csv")
    others = truth[truth["species"].isin(["small", "gold"])].head(n)
    assert len(others) > 0
    path = workdir / "not-ribosome.csv"
    others[["tomogram", "x", "y", "z"]].round(1).to_csv(path, index=False)
    return path


def filament_labels(workdir: Path, dataset: Path, name: str) -> Path:
    """Centre-line points of the filament of one tomogram, as traced by hand (every 2 voxels)."""
    truth = pd.read_csv(dataset / "truth" / f"{name}.csv")
    line = truth[truth["species"] == "filament"][["tomogram", "x", "y", "z"]]
    assert len(line) > 20
    path = workdir / "microtubule.csv"
    line.round(1).to_csv(path, index=False)
    return path


@pytest.mark.slow
def test_two_targets_share_exploration_and_get_their_own_outputs(tmp_path, dataset):
    """A globular and a fibre target in one campaign: the selection checkpoint (per target)
    drives training, picking, fibre tracing, export, scoring and reports. The ribosome's
    seeds stay few-shot, and its negatives (a coordinate table) reach the training."""
    first = "tomo_000"
    work = campaign(tmp_path, dataset)
    look_alikes(work, dataset, first)
    seeds_file(work, dataset, first, negatives="not-ribosome.csv")
    filament_labels(work, dataset, first)
    quick = {"label_tomograms": [first], "epochs": 1, "iterations_per_epoch": 5, "crop_xy": 32}
    write_config(
        work,
        targets={
            "ribosome": {"selection": "seeds.yaml", "truth_species": "ribosome",
                         "localize": {**quick, "max_labels_per_tomogram": 20}},
            "microtubule": {"shape": "fiber", "selection": "microtubule.csv",
                            "truth_species": "filament", "localize": quick},
        },
    )
    dry = snakemake(work, "--dry-run")
    # before the checkpoint has run, the DAG cannot know the labelled tomograms yet
    jobs = dict(line.split() for line in dry.stdout.split("Job stats:")[1].split("total")[0]
                .splitlines()[3:] if line.strip())
    assert jobs["import_selection"] == "2" and jobs["train_localize"] == "2", jobs
    assert jobs["train_explore"] == "1" and jobs["cluster"] == "1"  # exploration is shared
    result = snakemake(work)
    results = work / "results"
    for target in ("ribosome", "microtubule"):
        folder = results / "targets" / target
        assert sorted(p.name for p in (folder / "labels").glob("*.csv")) == [f"{first}.csv"]
        train_log = (results / "logs" / target / "train_localize.log").read_text()
        assert "training on 1 tomogram(s)" in train_log
        for name in ("tomo_000", "tomo_001"):
            picks = pd.read_csv(folder / "picks" / f"{name}.csv")
            assert list(picks.columns[:5]) == ["tomogram", "x", "y", "z", "score"]
        star = (folder / "picks.star").read_text()
        assert "rlnCenteredCoordinateXAngst" in star and "rlnTomoName" in star
        report = (folder / "report.html").read_text()
        assert "data:image/png;base64," in report and "overlay.png" in report
        # the model's calibration, and whether it learned the target, as the training log
        assert "<h2>Model</h2>" in report and "learned the target" in report
        assert ("did not learn" in report) is ("did not learn" in train_log)
        metrics = pd.read_csv(folder / "evaluation" / "picks.csv")
        assert set(metrics["tomogram"]) == {"tomo_000", "tomo_001", "overall"}
        assert str(folder / "report.html").split("results/", 1)[1] in result.stdout
    # the seeds' labels: 3 seeds, at most max(20, 10 x 3) labels, in the seeds' tomogram
    ribosome = results / "targets" / "ribosome"
    import_log = (results / "logs" / "ribosome" / "import_selection.log").read_text()
    assert "3 labels from seeds" in import_log and "dropped by the cap" in import_log
    assert "from table not-ribosome.csv" in import_log
    # negatives: one file per tomogram (empty without any), the labelled one's reach training
    negatives = {p.stem: pd.read_csv(p) for p in (ribosome / "negatives").glob("*.csv")}
    assert sorted(negatives) == ["tomo_000", "tomo_001"]
    assert list(negatives["tomo_001"].columns[:4]) == ["tomogram", "x", "y", "z"]
    assert len(negatives["tomo_001"]) == 0
    train_log = (results / "logs" / "ribosome" / "train_localize.log").read_text()
    assert f"{len(negatives[first])} negatives" in train_log
    assert all(len(t) == 0 for t in
               (pd.read_csv(p) for p in (results / "targets" / "microtubule" / "negatives")
                .glob("*.csv")))
    mt = results / "targets" / "microtubule"
    from milopyp.localize.train import load_localizer

    assert load_localizer(mt / "model.pt").settings["shape"] == "fiber"
    assert "(ridge centre-line points, " in (results / "logs" / "microtubule" / "localize"
                                            / f"{first}.log").read_text()
    fibres = pd.read_csv(mt / "fibers.csv")
    assert {"tomogram", "fiber_id", "x", "y", "z"} <= set(fibres.columns)
    assert "rlnHelicalTubeID" in (mt / "fibers.star").read_text()
    fibre_metrics = pd.read_csv(mt / "evaluation" / "fibers.csv")
    assert set(fibre_metrics["tomogram"]) == {"tomo_000", "tomo_001", "overall"}
    assert "Traced fibres per tomogram" in (mt / "report.html").read_text()
    assert not (results / "targets" / "ribosome" / "fibers").exists()


@pytest.mark.slow
def test_empty_selection_fails_with_a_clear_message(tmp_path, dataset):
    work = campaign(tmp_path, dataset)
    (work / "empty.yaml").write_text("clusters: []\n")
    write_config(work, selection="empty.yaml")
    result = snakemake(work, check=False)
    assert result.returncode != 0
    log = (work / "results" / "logs" / "particles" / "import_selection.log").read_text()
    assert "selects nothing" in log
    assert not (work / "results" / "targets" / "particles" / "labels").exists()


@pytest.mark.slow
def test_same_coordinates_for_any_core_count(tmp_path, dataset):
    """--cores only decides how many jobs run side by side: every computing job uses
    `threads_per_job` threads (Snakemake would give it min(its threads, --cores)), so the
    candidates, clusters and picks are identical with --cores 1, 2 and 8."""
    first = "tomo_000"
    runs = {}
    for cores in (1, 2, 8):
        work = tmp_path / f"cores{cores}"
        work.mkdir()
        campaign(work, dataset)
        seeds_file(work, dataset, first)
        write_config(work, targets={"ribosome": {
            "selection": "seeds.yaml", "truth_species": "ribosome",
            "localize": {"epochs": 1, "iterations_per_epoch": 6, "crop_xy": 32,
                         "test_time_flips": 1}}})
        snakemake(work, "results/targets/ribosome/picks.csv", cores=cores)
        runs[cores] = work / "results"
    for other in (2, 8):
        for name in ("tomo_000", "tomo_001"):
            for part in (f"candidates/{name}.csv", f"targets/ribosome/picks/{name}.csv"):
                assert (runs[1] / part).read_text() == (runs[other] / part).read_text(), part
            np.testing.assert_array_equal(
                np.load(runs[1] / "embeddings" / f"{name}.npz")["embeddings"],
                np.load(runs[other] / "embeddings" / f"{name}.npz")["embeddings"])
        pd.testing.assert_frame_equal(pd.read_csv(runs[1] / "explore" / "points.csv"),
                                      pd.read_csv(runs[other] / "explore" / "points.csv"))
    assert len(pd.read_csv(runs[1] / "targets" / "ribosome" / "picks.csv")) > 0
    # --cores 1, still threads_per_job threads (torch takes at most the machine's cores)
    log = (runs[1] / "logs" / "ribosome" / "train_localize.log").read_text()
    assert f"{min(2, os.cpu_count() or 1)} torch thread(s)" in log, log[-2000:]


def tiny_model(work: Path, dataset: Path, name: str, *, shape: str = "globular",
               voxel_size_a: float | None = None) -> Path:
    """A model file as `milopyp train-localize` writes it (a few steps on one tomogram's
    truth, ``shape`` fibre: its filament): what an earlier campaign left behind. With
    ``voxel_size_a``, trained on a copy of the tomogram carrying that voxel size."""
    from milopyp import cli
    from milopyp.io.mrc import read_tomogram, write_tomogram

    truth = pd.read_csv(dataset / "truth" / f"{name}.csv")
    species = "filament" if shape == "fiber" else "ribosome"
    labels = work / f"{shape}-labels.csv"
    truth[truth["species"] == species][["tomogram", "x", "y", "z"]].head(12).to_csv(
        labels, index=False)
    tomogram = dataset / "tomograms" / f"{name}.mrc"
    if voxel_size_a is not None:
        volume, _ = read_tomogram(tomogram)
        tomogram = work / f"{name}.mrc"
        write_tomogram(tomogram, volume, voxel_size_a)
    model = work / f"{shape}-{name}-{voxel_size_a or 'native'}.pt"
    assert cli.main(["train-localize", "--tomograms", str(tomogram), "--labels", str(labels),
                     "--epochs", "1", "--iterations-per-epoch", "2", "--crop-xy", "32",
                     "--crop-z", "4", "--base-channels", "4", "--particle-diameter", "260",
                     "--shape", shape, "--device", "cpu", "-o", str(model)]) == 0
    return model


def test_a_target_with_a_trained_model_needs_no_selection_training_or_exploration(
        tmp_path, dataset):
    """`targets.<name>.model`: an earlier campaign's model picks every tomogram; no
    selection, exploration or training runs; a bad model file stops before any job."""
    work = campaign(tmp_path, dataset)
    model = tiny_model(work, dataset, "tomo_000")
    write_config(work, targets={"ribosome": {"model": model.name}})
    dry = snakemake(work, "--dry-run", "--printshellcmds").stdout
    jobs = job_counts(dry)
    assert jobs["localize"] == 2 and jobs["report"] == 1 and jobs["candidates"] == 2
    assert not {"import_selection", "train_localize", "train_explore", "embed", "cluster",
                "patches"} & set(jobs)
    assert f"localize --model {model.name} --tomogram data/tomograms/tomo_000.mrc" in dry
    assert "report --picks" in dry and f"--model {model.name}" in dry
    for targets, message in (
            ({"ribosome": {"model": "missing.pt"}}, "targets.ribosome.model: missing.pt not found"),
            ({"ribosome": {"model": model.name, "selection": "seeds.yaml"}},
             "set either `selection` (train a model on it) or `model`"),
            ({"mt": {"model": model.name, "shape": "fiber"}},
             f"{model.name} was trained on a globular target, the target's shape is fiber")):
        write_config(work, targets=targets)
        result = snakemake(work, "--dry-run", check=False)
        assert result.returncode != 0 and message in result.stderr, result.stderr


@pytest.mark.slow
def test_a_model_from_another_voxel_size_picks_a_campaign_and_reruns_when_replaced(
        tmp_path, dataset):
    """A model trained at 1.5 times the campaign's voxel size picks through the workflow (the
    tomograms read resampled to its grid, picks in their voxels); a new model file
    in its place redoes the picks, not the candidates."""
    from milopyp.io.mrc import read_tomogram
    from milopyp.localize.train import load_localizer

    work = campaign(tmp_path, dataset)
    _, voxel_a = read_tomogram(dataset / "tomograms" / "tomo_000.mrc")
    model = tiny_model(work, dataset, "tomo_000", voxel_size_a=1.5 * voxel_a)
    assert load_localizer(model).voxel_size_a == 1.5 * voxel_a
    write_config(work, targets={"ribosome": {"model": model.name,
                                             "truth_species": "ribosome"}})
    snakemake(work)
    results = work / "results" / "targets" / "ribosome"
    log = (work / "results" / "logs" / "ribosome" / "localize" / "tomo_001.log").read_text()
    assert f"the model's training tomograms {1.5 * voxel_a:g} Å" in log
    volume, _ = read_tomogram(dataset / "tomograms" / "tomo_001.mrc")
    picks = pd.read_csv(results / "picks" / "tomo_001.csv")
    assert len(picks) and (picks[["x", "y", "z"]].to_numpy() < volume.shape[::-1]).all()
    assert "<h2>Model</h2>" in (results / "report.html").read_text()
    # another model in its place: the picks (and what follows) are redone, nothing else
    other = tiny_model(work, dataset, "tomo_001", voxel_size_a=1.5 * voxel_a)
    other.replace(model)
    dry = job_counts(snakemake(work, "--dry-run").stdout)
    assert dry["localize"] == 2 and dry["report"] == 1 and "candidates" not in dry
