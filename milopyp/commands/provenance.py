"""``milopyp provenance``: write RESULTS/provenance.json (config, seed, versions, git commit).

The workflow's ``provenance`` rule passes the validated config as JSON; by hand, give the
campaign's YAML config file instead (it is validated and completed with defaults).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from milopyp.errors import MilopypError

HELP = "record config, seed, package versions and git commit of a run"
log = logging.getLogger(__name__)


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


def parse_config_json(text: str) -> dict:
    """The config given on the command line as JSON -> dict (MilopypError if not an object)."""
    try:
        config = json.loads(text)
    except json.JSONDecodeError as err:
        raise MilopypError(
            f"--config-json: not valid JSON ({err.msg} at character {err.pos}); "
            "quote the whole object, e.g. --config-json '{\"seed\": 0}'"
        ) from err
    if not isinstance(config, dict):
        raise MilopypError(
            f"--config-json: expected a JSON object of settings, got {type(config).__name__}; "
            "give e.g. '{\"seed\": 0}'"
        )
    return config


#: the parts of a geometry record that provenance.json keeps (the rest is in geometry/*.json)
GEOMETRY_KEYS = ("sign", "verdict", "margin", "scores", "bin", "offset_x_vox", "offset_y_vox",
                 "contrast", "warnings")


def read_json_object(path: str, what: str) -> dict:
    """A JSON object from ``path`` (MilopypError naming the file otherwise)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise MilopypError(f"{path}: cannot read the {what} ({err}); rerun the step that "
                           "writes it") from err
    if not isinstance(data, dict):
        raise MilopypError(f"{path}: expected a JSON object of {what}")
    return data


def parse_extra(items: list[str]) -> dict[str, str]:
    extra = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise MilopypError(f"--extra: expected KEY=VALUE, got {item!r}")
        extra[key] = value
    return extra


def main(args: argparse.Namespace) -> None:
    from milopyp.config import load_config
    from milopyp.io.atomic import prepare_outputs, write_text
    from milopyp.io.geometry import read_geometry
    from milopyp.provenance import collect_provenance

    prepare_outputs(args.output)
    if args.config_json is not None:
        config = parse_config_json(args.config_json)
    else:
        config = load_config(args.configfile)
    geometry = None
    if args.geometry:
        geometry = {}
        for path in args.geometry:
            full = read_geometry(path)
            geometry[full.get("tomogram", Path(path).stem)] = {
                key: full.get(key) for key in GEOMETRY_KEYS
            }
    explore = None
    if args.explore_settings:
        explore = read_json_object(args.explore_settings, "exploration settings")
    record = collect_provenance(config, repo_dir=args.repo, extra=parse_extra(args.extra),
                                geometry=geometry, explore=explore)
    write_text(args.output, json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
    commit = record["git"]["commit"][:12] if record["git"] else "no git checkout"
    log.info("wrote %s (seed %s, milopyp %s, %s)", args.output, record["seed"],
             record["packages"].get("milopyp"), commit)
