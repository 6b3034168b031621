"""Workflow configuration: defaults and validation against ``config/schema.yaml``.

The Snakefile and the CLI share this one validator, so a misspelt key, a wrong type or an
out-of-range value gives the same one-line error everywhere, naming the key and the fix.
"""

from __future__ import annotations

import copy
import difflib
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from milopyp.errors import MilopypError

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "config" / "schema.yaml"


def load_schema() -> dict:
    """The workflow's JSON schema (draft 2020-12) as a dict."""
    if not SCHEMA_PATH.exists():
        raise MilopypError(
            f"{SCHEMA_PATH}: config schema not found; install milopyp from its repository "
            "(pip install -e .) so that config/schema.yaml sits beside the package"
        )
    return yaml.safe_load(SCHEMA_PATH.read_text())


def with_defaults(config: dict, schema: dict | None = None) -> dict:
    """Return a deep copy of ``config`` with every missing key set to its schema default."""
    schema = load_schema() if schema is None else schema
    return _fill(copy.deepcopy(config), schema)


def _fill(instance: Any, schema: dict) -> Any:
    if not isinstance(instance, dict) or schema.get("type") != "object":
        return instance
    for key, sub in schema.get("properties", {}).items():
        if key not in instance and "default" in sub:
            instance[key] = copy.deepcopy(sub["default"])
        if key in instance:
            instance[key] = _fill(instance[key], sub)
    return instance


def validate_config(config: dict, source: str = "config") -> dict:
    """Validate ``config``, fill in defaults and return the completed config.

    Raises MilopypError with one line naming the offending key, what was found and the fix.
    """
    schema = load_schema()
    if not isinstance(config, dict):
        raise MilopypError(f"{source}: expected a mapping of settings, got {type(config).__name__}")
    full = with_defaults(config, schema)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(full), key=lambda e: list(e.absolute_path))
    if errors:
        raise MilopypError(f"{source}: {_describe(errors[0], schema)}")
    tomogram_source(full, source)
    return full


#: the config keys that can give a campaign's tomograms (exactly one is set)
TOMOGRAM_SOURCES = {
    "tomograms": "MRC files",
    "copick": "a copick project",
    "relion_tomograms": "a RELION tomograms.star",
}


def tomogram_source(config: dict, source: str = "config") -> str:
    """The one key of :data:`TOMOGRAM_SOURCES` that ``config`` sets; raises MilopypError when
    it sets none or several."""
    found = [key for key in TOMOGRAM_SOURCES if config.get(key)]
    if len(found) != 1:
        named = " and ".join(f"`{key}` ({TOMOGRAM_SOURCES[key]})" for key in found)
        choices = ", ".join(f"`{key}`" for key in TOMOGRAM_SOURCES)
        raise MilopypError(
            f"{source}: {named} are {'both' if len(found) == 2 else 'all'} set; set only one "
            f"of {choices}" if found else
            f"{source}: no tomograms; set one of {choices}"
        )
    return found[0]


def load_config(path: str | Path) -> dict:
    """Read a YAML config file, validate it and fill in defaults."""
    path = Path(path)
    if not path.exists():
        raise MilopypError(f"{path}: config file not found; start from config/config.yaml")
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        first = str(err).splitlines()[0]
        raise MilopypError(f"{path}: not valid YAML ({first}); check indentation and quoting") from err
    return validate_config(config, source=str(path))


def _describe(error: jsonschema.ValidationError, schema: dict) -> str:
    """One line for a schema violation: key path, problem, fix."""
    where = ".".join(str(p) for p in error.absolute_path) or "(top level)"
    if error.validator == "additionalProperties":
        known = sorted(_subschema(schema, list(error.absolute_path)).get("properties", {}))
        unknown = sorted(set(error.instance) - set(known))
        key = unknown[0] if unknown else "?"
        full_key = f"{where}.{key}" if error.absolute_path else key
        close = difflib.get_close_matches(key, known, n=1)
        hint = f"did you mean `{close[0]}`? " if close else ""
        return f"unknown config key `{full_key}`; {hint}known keys here: {', '.join(known)}"
    if error.validator == "required":
        return f"{error.message}; set it, e.g. tomograms: \"data/*.mrc\""
    if error.validator == "anyOf" and not error.absolute_path:  # tomograms, copick or RELION
        return (
            "'tomograms' is a required property (or 'copick', or 'relion_tomograms'); set "
            "tomograms: \"data/*.mrc\", copick: path/to/config.json or relion_tomograms: "
            "path/to/tomograms.star"
        )
    sub = _subschema(schema, list(error.absolute_path))
    description = " ".join(sub.get("description", "").split())
    return f"bad value for `{where}`: {error.message}; expected: {description}"


def _subschema(schema: dict, path: list) -> dict:
    """The schema of the value at ``path`` (follows properties, additionalProperties, $ref)."""
    root = schema
    for key in path:
        schema = _resolve(root, schema)
        properties = schema.get("properties", {})
        if key in properties:
            schema = properties[key]
        elif isinstance(schema.get("additionalProperties"), dict):
            schema = schema["additionalProperties"]
        else:
            return {}
    return _resolve(root, schema)


def _resolve(root: dict, schema: dict) -> dict:
    """``schema`` with a local ``$ref`` ("#/a/b") replaced by its target (own keys win)."""
    ref = schema.get("$ref")
    if not ref or not ref.startswith("#/"):
        return schema
    target = root
    for part in ref[2:].split("/"):
        target = target.get(part, {})
    return {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
