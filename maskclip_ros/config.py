"""Configuration: the one resource finder, the one YAML loader, the one override syntax and the one
dict-to-dataclass converter of the project.

* **Files.** Every default lives once, in a YAML file under ``config/``: ``default.yaml`` (the node's ROS 2
  params file: model, proposals, merge, vocabulary, node settings), ``train.yaml`` (RMA training and
  evaluation), ``world.yaml`` (the generated world), ``small_clip.yaml`` (the small CLIP's training and
  evaluation) and ``commands.yaml`` (defaults of the command-line tools). Their top-level sections never
  repeat a name, so a dotted key names one setting of the whole tree.
* **Resource finder** (``resource``): files shipped beside the package (``config/``, ``launch/``, ``msg/``)
  are found in the source checkout, in every ament prefix of ``AMENT_PREFIX_PATH`` (a colcon install space
  or a ROS install: ``share/maskclip_ros/...``) and in ``sys.prefix/share/maskclip_ros`` (a pip install);
  ``asset`` finds package data under ``maskclip_ros/assets``.
* **Loader** (``read_yaml``): ``yaml.safe_load``; a ROS 2 params file's ``/**: ros__parameters:`` level is
  unwrapped. Later files update earlier ones (``merge``).
* **Overrides** (``parse_overrides`` / ``apply_overrides``): ``KEY=VALUE`` with a dotted key, the value read
  as YAML (``train.steps=100``, ``maskclip.mode=rma``, ``vocabulary.class_names=[a, b]``). The key must exist
  in the packaged file that owns its first part.
* **Converter** (``from_dict``): builds a (frozen) dataclass from a mapping, recursively for dataclass-typed
  fields; every field must be present and unknown keys are errors (typos); values are cast to the annotated
  type (``"1e-3"`` to a float field, ``6`` to a string field), so dataclasses never repeat defaults.
"""
from __future__ import annotations

import copy
import dataclasses
import os
import sys
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence, TypeVar

import yaml

PACKAGE = "maskclip_ros"
PACKAGE_DIR = Path(__file__).resolve().parent
ASSETS_DIR = PACKAGE_DIR / "assets"
# Keys of a ROS 2 params file that ROS itself owns (rclpy declares them); the converter skips them.
ROS_OWNED_KEYS = frozenset({"use_sim_time", "qos_overrides", "start_type_description_service"})

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration file, section, key or value is missing or malformed; the message says what to fix."""


# ------------------------------------------------------------------------------------ resource finder
def share_dirs() -> list[Path]:
    """Where the package's shared files may live, in search order: the source checkout (the directory
    above the package holding package.xml), every ament prefix's ``share/maskclip_ros``, and
    ``sys.prefix/share/maskclip_ros`` (pip's data files)."""
    dirs = []
    checkout = PACKAGE_DIR.parent
    if (checkout / "package.xml").is_file():
        dirs.append(checkout)
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p] + [sys.prefix]
    dirs += [Path(p) / "share" / PACKAGE for p in prefixes]
    return list(dict.fromkeys(dirs))


def resource(*parts: str) -> Path:
    """A shipped file or directory, e.g. ``resource("config", "default.yaml")`` or ``resource("msg")``."""
    for base in share_dirs():
        path = base.joinpath(*parts)
        if path.exists():
            return path
    raise ConfigError(f"{'/'.join(parts)} not found in {[str(d) for d in share_dirs()]}: reinstall the "
                      "package (colcon build / pip install) or run from a source checkout")


def shipped_config(name: str) -> Path:
    """A config file shipped with the package, e.g. ``shipped_config("default.yaml")``."""
    return resource("config", name)


def asset(path: str | os.PathLike) -> Path:
    """A weights or model-config file: absolute paths stay; relative ones resolve against the package's
    assets directory when the file is there, else against the working directory."""
    path = Path(os.path.expanduser(str(path)))
    if path.is_absolute():
        return path
    in_assets = ASSETS_DIR / path
    return in_assets if in_assets.exists() else path.resolve()


# ----------------------------------------------------------------------------------------------- loader
def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """A YAML file as nested dicts; a ROS 2 params file's node level and ``ros__parameters`` are unwrapped
    (several node entries merged in order). A fresh dict."""
    path = Path(os.path.expanduser(str(path)))
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    nodes = [v for v in data.values() if isinstance(v, Mapping) and "ros__parameters" in v]
    return merge({}, *(n["ros__parameters"] for n in nodes)) if nodes else data


def merge(base: Mapping[str, Any], *updates: Mapping[str, Any]) -> dict[str, Any]:
    """A new dict: ``base`` with each of ``updates`` applied recursively (no input is modified)."""
    out = copy.deepcopy(dict(base))
    for update in updates:
        for key, value in update.items():
            if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
                out[key] = merge(out[key], value)
            else:
                out[key] = copy.deepcopy(value)
    return out


def flatten(nested: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1} (leaves only; lists are leaves)."""
    flat: dict[str, Any] = {}
    for key, value in nested.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """{"a.b": 1} -> {"a": {"b": 1}}: dotted names (ROS parameters, overrides) in the files' layout."""
    nested: dict[str, Any] = {}
    for name, value in flat.items():
        *parents, leaf = name.split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


# -------------------------------------------------------------------------------------------- overrides
def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """``["a.b=1", "c=[x, y]"]`` -> ``{"a.b": 1, "c": ["x", "y"]}`` (values read with yaml.safe_load)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"an override is KEY=VALUE with a dotted key (e.g. train.steps=100), got {item!r}")
        try:
            out[key.strip()] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError as err:
            raise ConfigError(f"override {item!r}: the value is not valid YAML ({err})") from None
    return out


def apply_overrides(tree: Mapping[str, Any], overrides: Mapping[str, Any], where: str = "") -> dict[str, Any]:
    """A new tree with each dotted override set; the key must already exist (a typo is an error)."""
    out = copy.deepcopy(dict(tree))
    for key, value in overrides.items():
        node, parts = out, key.split(".")
        for depth, part in enumerate(parts):
            if not isinstance(node, dict) or part not in node:
                known = sorted(node) if isinstance(node, dict) else []
                raise ConfigError(f"unknown setting {key!r}{f' in {where}' if where else ''}: "
                                  f"{'.'.join(parts[:depth]) or 'the top level'} has {known}")
            if depth == len(parts) - 1:
                if isinstance(node[part], dict):
                    raise ConfigError(f"{key!r} is a section; set one of its keys {sorted(node[part])}")
                node[part] = value
            node = node[part]
    return out


# -------------------------------------------------------------------------------------------- converter
def from_dict(cls: type[T], data: Mapping[str, Any], where: str = "", *, partial: bool = False) -> T:
    """Dataclass ``cls`` from a mapping: every field required, unknown keys refused (``partial``: keys of
    other owners allowed at this level; ROS-owned keys are always skipped); dataclass fields converted
    recursively, values cast to the annotated types. Raises ConfigError naming the key."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where or cls.__name__} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = [f.name for f in dataclasses.fields(cls)]
    missing = [f for f in fields if f not in data]
    unknown = [] if partial else sorted(k for k in data if k not in fields and k not in ROS_OWNED_KEYS)
    label = where or cls.__name__
    if missing:
        raise ConfigError(f"{label} lacks {missing}; every key needs a value (see config/*.yaml)")
    if unknown:
        raise ConfigError(f"{label} has unknown keys {unknown} (typo?); known: {fields}")
    values = {f: _cast(hints[f], data[f], f"{where}.{f}" if where else f) for f in fields}
    try:
        return cls(**values)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{label}: {err}") from err


def to_dict(obj: Any) -> Any:
    """A config dataclass as plain nested dicts/lists (tuples become lists): YAML/JSON-ready."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


def _cast(kind: Any, value: Any, where: str) -> Any:
    """``value`` as type ``kind`` (bool, int, float, str, tuple[X, ...], list, a dataclass)."""
    if dataclasses.is_dataclass(kind):
        return from_dict(kind, value, where)
    origin = typing.get_origin(kind)
    if origin in (tuple, list):
        item = typing.get_args(kind)[0] if typing.get_args(kind) else Any
        if value is None:  # an empty list as a ROS parameter reads back unset
            value = []
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        return origin(_cast(item, v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin in (typing.Union, types.UnionType) or kind is Any:
        return value
    return _cast_scalar(kind, value, where)


def _cast_scalar(kind: type, value: Any, where: str) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if kind is str:
        if isinstance(value, (list, dict)) or value is None:
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return value if isinstance(value, str) else str(value)
    if kind in (int, float):
        try:
            number = float(value) if not isinstance(value, bool) else None
        except (TypeError, ValueError):
            number = None
        if number is None or (kind is int and not number.is_integer()):
            raise ConfigError(f"{where} must be a{'n integer' if kind is int else ' number'}, got {value!r}")
        return kind(number)
    return value


# ------------------------------------------------------------------------------------- a command's tree
@dataclass(frozen=True)
class Source:
    """One typed part of a command's configuration: a root dataclass read from a shipped file.

    cls: the dataclass; name: the shipped file (``default.yaml``, ``train.yaml``, ...); files: the user's
    files layered on top (same layout); section: convert only this top-level section of the file;
    partial: the file also holds sections of other owners (e.g. the model part of the node's params)."""

    cls: type
    name: str
    files: tuple[str | os.PathLike, ...] = ()
    section: str | None = None
    partial: bool = False


def load(sources: Mapping[str, Source], overrides: Mapping[str, Any] | Sequence[str] = ()) -> dict[str, Any]:
    """Read every source's files, apply the overrides (each to the shipped file that has its first part as
    a top-level key) and convert: ``{name: config dataclass}``. Unknown override keys are errors."""
    if not isinstance(overrides, Mapping):
        overrides = parse_overrides(overrides)
    trees: dict[tuple, dict] = {}
    for source in sources.values():
        key = (source.name, tuple(map(str, source.files)))
        if key not in trees:
            trees[key] = merge(read_yaml(shipped_config(source.name)), *(read_yaml(f) for f in source.files))
    by_tree: dict[tuple, dict] = {k: {} for k in trees}
    for name, value in overrides.items():
        owners = [k for k, tree in trees.items() if name.split(".")[0] in tree]
        if not owners:
            known = sorted({top for tree in trees.values() for top in tree})
            raise ConfigError(f"unknown setting {name!r}: its first part must be one of {known}")
        for owner in owners:
            by_tree[owner][name] = value
    trees = {k: apply_overrides(tree, by_tree[k], k[0]) for k, tree in trees.items()}
    out = {}
    for label, source in sources.items():
        tree = trees[(source.name, tuple(map(str, source.files)))]
        data = tree if source.section is None else tree.get(source.section)
        if data is None:
            raise ConfigError(f"{source.name} has no section {source.section!r}")
        out[label] = from_dict(source.cls, data, source.section or "", partial=source.partial)
    return out


def load_one(cls: type[T], name: str, *files: str | os.PathLike, section: str | None = None,
             overrides: Mapping[str, Any] | Sequence[str] = (), partial: bool = False) -> T:
    """``load`` for a single source: one typed config from a shipped file (+ user files, overrides)."""
    return load({"config": Source(cls, name, tuple(files), section, partial)}, overrides)["config"]
