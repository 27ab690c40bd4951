"""The node's parameters come from config/default.yaml and nowhere else.

The YAML gives each parameter's dotted name, type and default (values read with yaml.safe_load through
``maskclip_ros.config``) and its description (the comment on the key, read with ruamel.yaml). A numeric
range written as ``[lo, hi]`` in the comment becomes the descriptor's FloatingPointRange/IntegerRange. An
empty list default has no ROS type, so such a parameter is declared dynamically typed (unset = empty).
The same specs render the README's parameter reference (``markdown_reference``).

Each parameter has a kind (decided by the node, which knows what it can apply when):
  "runtime"   - settable any time, applied from the next frame (thresholds, vocabulary, ...);
  "configure" - read by configure/activate (model, device, topics): settable only while unconfigured,
                so a failed configure can be fixed and retried without restarting the process;
  "startup"   - read once at startup (read_only).
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ruamel.yaml import YAML

from maskclip_ros.config import flatten, read_yaml, shipped_config
from maskclip_ros.ros.interface import parameter_kind

PARAMS_FILE = "default.yaml"

Kind = Literal["runtime", "configure", "startup"]
CONFIGURE_CONSTRAINT = "settable only while the node is unconfigured; applies at the next configure"
_RANGE = re.compile(r"\[\s*([-+]?\d[\d.eE+-]*)\s*,\s*([-+]?\d[\d.eE+-]*)\s*\]")


@dataclass(frozen=True)
class ParamSpec:
    """One parameter as config/default.yaml states it."""

    name: str                                # dotted ROS parameter name, e.g. "merge.overlap_threshold"
    default: Any                             # YAML value; None for an empty list (dynamically typed)
    description: str                         # the YAML comment on the key
    value_range: tuple[float, float] | None  # "[lo, hi]" from the comment (numeric parameters only)
    kind: Kind                               # when a change applies (see the module docstring)

    @property
    def ros_type(self) -> int:
        """rcl_interfaces ParameterType of the default (PARAMETER_NOT_SET for an empty list)."""
        from rcl_interfaces.msg import ParameterType
        from rclpy.parameter import Parameter

        return Parameter.Type.from_parameter_value(self.default).value if self.default is not None \
            else ParameterType.PARAMETER_NOT_SET


def _comments(path: Path) -> dict[str, str]:
    """Dotted key -> first line of the comment on that key in the params file."""
    with open(path, encoding="utf-8") as f:
        data = YAML(typ="rt").load(f)
    nodes = [v for v in data.values() if isinstance(v, Mapping) and "ros__parameters" in v]
    out: dict[str, str] = {}

    def walk(mapping, prefix: str) -> None:
        for key, value in mapping.items():
            tokens = mapping.ca.items.get(key) or []
            comment = next((t.value for t in tokens[2:3] if t is not None), "")
            out[prefix + key] = comment.strip().split("\n")[0].lstrip("#").strip()
            if isinstance(value, Mapping):
                walk(value, f"{prefix}{key}.")

    for node in nodes:
        walk(node["ros__parameters"], "")
    return out


def _value_range(description: str, default: Any) -> tuple[float, float] | None:
    if isinstance(default, bool) or not isinstance(default, (int, float)):
        return None
    match = _RANGE.search(description)
    return (float(match.group(1)), float(match.group(2))) if match else None


def load_specs(kind_of: Callable[[str], Kind] = parameter_kind, path: str | Path | None = None) -> list[ParamSpec]:
    """Every parameter in the params file (default: the package's config/default.yaml), in file order.

    kind_of(name): the parameter's kind ("runtime", "configure" or "startup"; default: the node's).
    Raises ValueError when a key has no comment: every default must say what it means."""
    path = Path(path) if path is not None else shipped_config(PARAMS_FILE)
    comments = _comments(path)
    specs = []
    for name, default in flatten(read_yaml(path)).items():
        description = comments.get(name, "")
        if not description:
            raise ValueError(f"{path}: parameter {name!r} has no comment; describe it on its line")
        if isinstance(default, list) and not default:
            default = None
        specs.append(ParamSpec(name, default, description, _value_range(description, default), kind_of(name)))
    return specs


def descriptor(spec: ParamSpec):
    """The rcl_interfaces ParameterDescriptor the node declares `spec` with (type, description, range,
    read_only, and the configure-time constraint in additional_constraints)."""
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType

    desc = ParameterDescriptor(name=spec.name, type=spec.ros_type, description=spec.description,
                               read_only=spec.kind == "startup", dynamic_typing=spec.default is None,
                               additional_constraints=CONFIGURE_CONSTRAINT if spec.kind == "configure" else "")
    if spec.value_range is not None:
        lo, hi = spec.value_range
        if spec.ros_type == ParameterType.PARAMETER_INTEGER:
            desc.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi), step=1)]
        else:
            desc.floating_point_range = [FloatingPointRange(from_value=lo, to_value=hi, step=0.0)]
    return desc


def markdown_reference(specs: list[ParamSpec]) -> str:
    """A Markdown table of every parameter (name, default, range, when settable, description)."""
    rows = ["| parameter | default | range | settable | description |", "|---|---|---|---|---|"]
    for spec in specs:
        default = "[]" if spec.default is None else repr(spec.default)
        lo_hi = "" if spec.value_range is None else f"[{spec.value_range[0]:g}, {spec.value_range[1]:g}]"
        runtime = {"runtime": "any time", "configure": "unconfigured", "startup": "startup"}[spec.kind]
        text = spec.description.replace("|", "\\|")
        rows.append(f"| `{spec.name}` | `{default}` | {lo_hi} | {runtime} | {text} |")
    return "\n".join(rows) + "\n"
