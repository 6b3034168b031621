# Resources of each job: memory (MB) and runtime (minutes) grow with the tomogram's size (read
# from its MRC header, no data) and with the attempt, so a job that the scheduler killed for
# memory or time is resubmitted with more (profiles/slurm has `retries: 2`). Threads are set in
# each rule; the profiles map all of this to the machine or to SLURM (docs/cluster.md).
import functools
import os

from milopyp.explore.defaults import EXPLORE_DEFAULTS


@functools.lru_cache(maxsize=None)
def tomogram_mib(name):
    """Tomogram ``name`` as float32 in MiB (z * y * x * 4 bytes), from its MRC header."""
    shape_zyx, _ = checked(CAMPAIGN.tomogram_geometry, name)
    return shape_zyx[0] * shape_zyx[1] * shape_zyx[2] * 4 / 2**20


def files_mib(paths):
    """Total size of the input files ``paths`` in MiB. A file not made yet raises
    FileNotFoundError, which makes Snakemake evaluate the resource again once it exists."""
    return sum(os.path.getsize(p) for p in paths) / 2**20


def gpus_per_job():
    """1 GPU for network rules unless the config says `device: cpu`."""
    return 0 if config["device"] == "cpu" else 1


def per_attempt(value):
    """A fixed request that grows with the attempt: ``value`` first, 2 x ``value`` next..."""

    def scaled(wildcards, attempt):
        return value * attempt

    return scaled


def tomogram_mem_mb(volumes, base_mb=800):
    """mem_mb of a per-tomogram job holding ``volumes`` float32 copies of its tomogram.
    Measured peaks (128 MiB tomogram): preprocess 3.2, candidates 4.6 (--bin 1), patches 2.2
    copies above a ~60 MiB interpreter; the rules ask a little more."""

    def mem_mb(wildcards, attempt):
        return int((base_mb + volumes * tomogram_mib(wildcards.tomogram)) * attempt)

    return mem_mb


def tomogram_runtime(minutes_per_gib, base_min=10, network=False):
    """runtime (minutes) of a per-tomogram job: ``minutes_per_gib`` per GiB of tomogram;
    a ``network`` job (GPU inference) takes about 10x longer with `device: cpu`."""
    if network and config["device"] == "cpu":
        minutes_per_gib *= 10

    def runtime(wildcards, attempt):
        gib = tomogram_mib(wildcards.tomogram) / 1024
        return int((base_min + minutes_per_gib * gib) * attempt)

    return runtime


def embed_mem_mb(wildcards, input, attempt):
    """Model + one tomogram's patches (float32) + torch."""
    return int((1500 + 3 * files_mib([input.patches])) * attempt)


def train_explore_mem_mb(wildcards, input, attempt):
    """Every training patch in memory (twice while they are concatenated) + torch."""
    return int((3000 + 3 * files_mib(input)) * attempt)


def train_explore_runtime(wildcards, input, attempt):
    """Minutes: epochs x training data; about 10x more without a GPU. Training resumes from
    its checkpoint on the next attempt, so a time-out costs only the interrupted epoch."""
    per_epoch = max(0.1, files_mib(input) / 300)  # ~300 MiB of patches per minute on a GPU
    if config["device"] == "cpu":
        per_epoch *= 10
    epochs = config["explore"]["epochs"] or EXPLORE_DEFAULTS[
        "cpu" if config["device"] == "cpu" else "cuda"]["epochs"]
    return int((30 + epochs * per_epoch) * attempt)


def cluster_mem_mb(wildcards, input, attempt):
    """Embeddings + patches of every tomogram (grid, gallery) + the largest tomogram (colour
    maps are drawn one tomogram at a time) + UMAP/numba."""
    largest = max(tomogram_mib(name) for name in TOMOGRAMS)
    data = files_mib(input.embeddings) + files_mib(input.patches)
    return int((3000 + 3 * data + 3 * largest) * attempt)


def cluster_runtime(wildcards, input, attempt):
    """Minutes: k-means + UMAP grow with the number of candidates (embedding files)."""
    return int((30 + files_mib(input.embeddings) / 10) * attempt)


def train_localize_mem_mb(wildcards, input, attempt):
    """The labelled tomograms (memory-mapped, crops are read as needed) + the UNet + torch.
    Before the selection checkpoint has run, the inputs (and so the labels) are not known."""
    labels = getattr(input, "labels", [])
    if isinstance(labels, str):  # before the checkpoint: one placeholder path, not a list
        labels = [labels]
    labelled = [Path(path).stem for path in labels if Path(path).stem in TOMOGRAMS]
    return int((3000 + sum(tomogram_mib(name) for name in labelled)) * attempt)


def train_localize_runtime(wildcards, input, attempt):
    """Minutes: epochs x iterations x batch of 3D crops; about 10x more without a GPU. Training
    resumes from its checkpoint on the next attempt."""
    settings = TARGETS[wildcards.target].localize
    crops = settings["epochs"] * settings["iterations_per_epoch"] * settings["batch_size"]
    minutes = crops / 500  # ~500 crops per minute on a GPU, data loading included
    if config["device"] == "cpu":
        minutes *= 10
    return int((30 + minutes) * attempt)
