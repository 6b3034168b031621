"""``milopyp provenance``: translates the command line into :func:`milopyp.provenance.run`.

The workflow's ``provenance`` rule passes the validated config as JSON; by hand, give the
campaign's YAML config file instead (it is validated and completed with defaults).
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config-json", help="the run's config as a JSON object (a string)")
    source.add_argument("--configfile", help="the run's YAML config file (validated, defaults filled)")
    parser.add_argument(
        "-o", "--output", required=True, help="file to write, e.g. results/provenance.json"
    )
    parser.add_argument(
        "--repo",
        default=None,
        help="git checkout whose commit is recorded (default: the one holding the milopyp package)",
    )
    parser.add_argument(
        "--geometry", nargs="+", default=[], metavar="JSON",
        help="tilt-series geometry records (geometry/{tomogram}.json) to include",
    )
    parser.add_argument(
        "--explore-settings", default=None, metavar="JSON",
        help="the exploration settings used (explore/settings.json of train-explore)",
    )
    parser.add_argument(
        "--extra",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra field to record (repeatable), e.g. --extra snakefile=/path/Snakefile",
    )


def main(args: argparse.Namespace) -> None:
    from milopyp.provenance import run

    run(args.output, config_json=args.config_json, configfile=args.configfile,
        repo_dir=args.repo, geometry_paths=args.geometry,
        explore_settings=args.explore_settings, extra=args.extra)
