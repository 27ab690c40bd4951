"""Command-line settings shared by `maskclip-ros train` and `maskclip-ros eval`: a params file (model
sections) plus config/train.yaml (training/eval sections), each overridable with ``--set KEY=VALUE``.

A key whose first part names a section of config/train.yaml (``train``, ``loss``, ``coarse``, ``eval``)
changes that file's value; any other dotted key changes the params (e.g. ``maskclip.mode=rma``,
``maskclip.rma_layers=6``). Values are parsed as YAML (``10`` -> int, ``true`` -> bool, ``"6,12"`` -> str).
"""
from __future__ import annotations

from typing import Any, Iterable

import yaml

from maskclip_ros.config import deep_update, load_params, nest


def parse_sets(items: Iterable[str]) -> dict[str, Any]:
    """``["a.b=1", ...]`` -> ``{"a.b": 1, ...}`` (values parsed with yaml.safe_load)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        out[key.strip()] = yaml.safe_load(value) if value.strip() else ""
    return out


def load_settings(params_path: str | None, config_path: str | None, sets: dict[str, Any]) -> tuple[dict, dict]:
    """(params, training sections) with the ``--set`` overrides applied to whichever they belong to."""
    from maskclip_ros.training.trainer import load_sections
    with open(config_path or _default_config(), encoding="utf-8") as f:
        section_names = set(yaml.safe_load(f))
    train_sets = {k: v for k, v in sets.items() if k.split(".")[0] in section_names}
    params = load_params(params_path)
    param_sets = {k: _like(_lookup(params, k), v) for k, v in sets.items() if k not in train_sets}
    params = deep_update(params, nest(param_sets))
    return params, load_sections(config_path, train_sets)


def _lookup(params: dict, dotted: str) -> Any:
    """The current value of a dotted key (None when absent)."""
    node: Any = params
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _like(current: Any, value: Any) -> Any:
    """A string-typed parameter stays a string (``maskclip.rma_layers=6`` means "6", not 6)."""
    return str(value) if isinstance(current, str) and not isinstance(value, str) else value


def _default_config():
    from maskclip_ros.training.trainer import TRAIN_CONFIG_PATH
    return TRAIN_CONFIG_PATH
