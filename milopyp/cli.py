"""The ``milopyp`` command: one entry point, a sub-command per pipeline step.

Each sub-command lives in ``milopyp/commands/<name>.py`` and exposes ``add_arguments(parser)``
and ``main(args)``; its one-line help is in :data:`COMMANDS`. A command only translates: it
declares the options (each length with its unit in the name: ``-a`` Å, ``-vox`` voxels,
``-px`` tilt-series pixels; old names kept hidden with :func:`renamed`) and hands them to one
stage function of the package. Modules are imported only when their command runs, so
``milopyp --help`` stays fast (torch and UMAP are slow to import).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from milopyp.errors import MilopypError

# command name -> (module under milopyp.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "simulate": ("simulate", "make a synthetic dataset with ground truth (tomograms, tilt series, truth)"),
    "preprocess": ("preprocess", "denoise and histogram-equalise a tomogram"),
    "candidates": ("candidates", "find candidate particle positions (DoG pyramid + greedy NMS)"),
    "check-geometry": ("check_geometry", "check the tilt-series geometry (projection sign, binning, x/y offset) against the tomogram"),
    "patches": ("patches", "cut 2D inputs (tilt-series patch average, central slices) per candidate"),
    "train-explore": ("train_explore", "train the SimSiam exploration network"),
    "embed": ("embed", "embed every candidate of a tomogram with a trained exploration network"),
    "cluster": ("cluster", "over-cluster embeddings, project with UMAP, draw figures and the explorer"),
    "evaluate": ("evaluate", "precision / recall / F1 of picks against ground truth"),
    "import-selection": ("import_selection", "turn a selection (explorer, clusters, seeds, coordinates) into labels"),
    "train-localize": ("train_localize", "train the few-shot localisation network on the labels"),
    "localize": ("localize", "predict a heat map for a tomogram and pick particle centres"),
    "trace-fibers": ("trace_fibers", "trace filaments through dense fibre picks (fibres CSV, segments, RELION STAR)"),
    "overlay": ("overlay", "draw picks and traced fibres over a slab of a tomogram (PNG)"),
    "export": ("export", "collect picks into one CSV and a RELION-5 STAR file (and a copick project)"),
    "copick-tomogram": ("copick_tomogram", "write a copick project's tomogram (one run) as MRC"),
    "report": ("report", "HTML report of pick counts, score histograms and accuracy"),
    "provenance": ("provenance", "record config, seed, package versions and git commit of a run"),
}


#: option names kept for old command lines: accepted, but not shown by --help (see renamed)
HIDDEN_ALIASES: set[str] = set()


def renamed(*old_flags: str) -> tuple[str, ...]:
    """Old names of an option, accepted but hidden from --help::

        parser.add_argument("--voxel-size-a", *renamed("--voxel-size"), type=float, ...)

    Put the new name first: it sets the destination (``args.voxel_size_a``)."""
    HIDDEN_ALIASES.update(old_flags)
    return old_flags


class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter without the hidden aliases of :func:`renamed`."""

    def _format_action_invocation(self, action):
        shown = [flag for flag in action.option_strings if flag not in HIDDEN_ALIASES]
        if not action.option_strings or not shown:
            return super()._format_action_invocation(action)
        saved, action.option_strings = action.option_strings, shown
        try:
            return super()._format_action_invocation(action)
        finally:
            action.option_strings = saved


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="milopyp",
        description="Find proteins in cryo-electron tomograms; one sub-command per pipeline step.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="threads this command computes with (torch, FAISS, OpenMP, the "
                             "filters); default: $OMP_NUM_THREADS, else the usable CPUs. The "
                             "workflow passes its `threads_per_job`: results depend on it")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_module, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


#: OpenMP settings for every command unless the user's environment sets them. PASSIVE: idle
#: OpenMP threads sleep instead of spinning, so a job beside another busy process does not
#: fight for the core it waits on (localiser training with 2 threads beside one busy process:
#: 0.27-0.41 s per step with PASSIVE against 4-6 s with the default; benchmarks/contention.py).
OPENMP_DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE"}


def openmp_defaults(environ=os.environ) -> dict[str, str]:
    """Put :data:`OPENMP_DEFAULTS` into ``environ`` where it has no value of its own; return
    what was set. Must run before torch (or anything linking OpenMP) is imported: the runtime
    reads its settings once, when it loads."""
    added = {k: v for k, v in OPENMP_DEFAULTS.items() if not environ.get(k)}
    environ.update(added)
    return added


#: environment variables that fix the thread count of the numerical libraries a command loads
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def fix_threads(threads: int, environ=os.environ) -> None:
    """Make every library of this process compute with ``threads`` threads, whatever the
    scheduler set (Snakemake sets ``OMP_NUM_THREADS`` to min(rule threads, --cores)): torch,
    FAISS and OpenMP read these variables when they load, and the thread count decides the
    order of floating-point sums, so it must not depend on ``--cores``. Must run before they
    are imported."""
    if threads < 1:
        raise MilopypError(f"--threads: expected a positive number, got {threads}")
    environ.update({name: str(threads) for name in THREAD_VARIABLES})


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    openmp_defaults()
    parser = build_parser()
    # Parse only the command name first, then hand the rest to that command's own parser.
    head, _rest = parser.parse_known_args(argv[: _command_index(argv) + 1] if argv else argv)
    if head.threads is not None:
        try:
            fix_threads(head.threads)
        except MilopypError as err:
            print(f"milopyp: error: {err}", file=sys.stderr)
            return 2
    module = importlib.import_module(f"milopyp.commands.{COMMANDS[head.command][0]}")
    sub_parser = argparse.ArgumentParser(
        prog=f"milopyp {head.command}", description=COMMANDS[head.command][1],
        formatter_class=HelpFormatter,
    )
    sub_parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    module.add_arguments(sub_parser)
    args = sub_parser.parse_args(argv[_command_index(argv) + 1 :])
    logging.basicConfig(
        level=logging.DEBUG if (head.verbose or args.verbose) else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        module.main(args)
    except MilopypError as err:
        print(f"milopyp {head.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        # disk full, quota, read-only, permission outside an atomic write: one line too
        from milopyp.io.atomic import WRITE_ERRORS

        if err.errno not in WRITE_ERRORS:
            raise
        where = f"{os.fsdecode(err.filename)}: " if err.filename is not None else ""
        print(f"milopyp {head.command}: error: {where}{WRITE_ERRORS[err.errno][0]}",
              file=sys.stderr)
        return 2
    return 0


def _command_index(argv: list[str]) -> int:
    """Index of the first argument that is a command name (options may precede it)."""
    for i, arg in enumerate(argv):
        if arg in COMMANDS:
            return i
    return len(argv) - 1


if __name__ == "__main__":
    # `python -m milopyp.cli`: run the imported module's main, whose HIDDEN_ALIASES are the
    # ones the commands fill (they import milopyp.cli, not __main__)
    from milopyp.cli import main as _main

    sys.exit(_main())
