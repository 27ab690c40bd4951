"""Parameters: every default lives once, in ``config/default.yaml`` (a ROS 2 params file).

``load_params`` reads such a file with ``yaml.safe_load``, unwraps the ``/**: ros__parameters:`` level and
returns plain nested dicts (nested keys are the dotted ROS parameter names). ``from_section`` builds a
config dataclass from one section, so dataclasses never repeat defaults: every field must be in the YAML.
"""
from __future__ import annotations

import copy
import dataclasses
import os
import sys
from pathlib import Path
from typing import Any, Mapping, TypeVar

import yaml

PACKAGE = "maskclip_ros"
DEFAULT_PARAMS_NAME = "default.yaml"

T = TypeVar("T")


class ConfigError(ValueError):
    """A parameter file or section is missing, malformed or has unknown/missing keys."""


def default_params_path() -> Path:
    """The package's ``config/default.yaml``: the source tree (editable install) or an ament share dir."""
    candidates = [Path(__file__).resolve().parents[1] / "config" / DEFAULT_PARAMS_NAME]
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p] + [sys.prefix]
    candidates += [Path(p) / "share" / PACKAGE / "config" / DEFAULT_PARAMS_NAME for p in prefixes]
    for path in candidates:
        if path.is_file():
            return path
    raise ConfigError(f"config/{DEFAULT_PARAMS_NAME} not found (looked in {[str(c) for c in candidates]}); "
                      "reinstall the package or pass a params file explicitly")


def load_params(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """Read a ROS 2 params file (default: the package's config/default.yaml) into nested dicts.

    The file's node level (``/**`` or a node name) and ``ros__parameters`` are unwrapped; a file without
    them is returned as is. Returns a fresh dict (callers may modify it).
    """
    path = Path(path) if path is not None else default_params_path()
    if not path.is_file():
        raise ConfigError(f"params file not found: {path}")
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return unwrap_ros_params(data)


def unwrap_ros_params(data: Mapping[str, Any]) -> dict[str, Any]:
    """``{'/**': {'ros__parameters': {...}}}`` -> ``{...}``; several node entries are merged in order."""
    nodes = [v for v in data.values() if isinstance(v, Mapping) and "ros__parameters" in v]
    if not nodes:
        return copy.deepcopy(dict(data))
    merged: dict[str, Any] = {}
    for node in nodes:
        merged = deep_update(merged, node["ros__parameters"])
    return merged


def deep_update(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A new dict: ``base`` with ``overrides`` applied recursively (neither input is modified)."""
    out = copy.deepcopy(dict(base))
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_update(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def from_section(cls: type[T], section: Mapping[str, Any], name: str = "", *, shared: bool = False) -> T:
    """Build dataclass ``cls`` from a params section; every field must be present.

    Unknown keys are errors (typos), except nested mappings (sub-sections owned by other code) and, for a
    ``shared`` section that other code also reads, any key.
    """
    fields = {f.name for f in dataclasses.fields(cls)}
    missing = sorted(fields - set(section))
    unknown = [] if shared else sorted(k for k, v in section.items() if k not in fields and not isinstance(v, Mapping))
    where = f"params section '{name or cls.__name__}'"
    if missing:
        raise ConfigError(f"{where} lacks {missing}; add them (see config/{DEFAULT_PARAMS_NAME})")
    if unknown:
        raise ConfigError(f"{where} has unknown keys {unknown} (typo?); known: {sorted(fields)}")
    return cls(**{k: section[k] for k in fields})


def section(params: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    """``params[name]`` with a clear error when the section is missing."""
    value = params.get(name)
    if not isinstance(value, Mapping):
        raise ConfigError(f"params lack the '{name}' section (see config/{DEFAULT_PARAMS_NAME})")
    return value


def flatten(nested: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1} (leaves only; lists are leaves)."""
    flat: dict[str, Any] = {}
    for key, value in nested.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """{"a.b": 1} -> {"a": {"b": 1}}: dotted names (ROS parameters, --set overrides) back into the params-file
    layout."""
    nested: dict[str, Any] = {}
    for name, value in flat.items():
        *parents, leaf = name.split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested
