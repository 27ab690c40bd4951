"""The one configuration path: resource finder, loader, converter and dotted overrides, and that every
shipped YAML file converts into its typed tree (no key without an owner, no owner without its key)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from maskclip_ros import config
from maskclip_ros.config import ConfigError


@dataclasses.dataclass(frozen=True)
class Inner:
    rate: float
    names: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Outer:
    count: int
    label: str
    flag: bool
    inner: Inner


GOOD = {"count": 3, "label": "x", "flag": True, "inner": {"rate": 1, "names": ["a", "b"]}}


def test_converter_casts_and_recurses():
    out = config.from_dict(Outer, GOOD)
    assert out == Outer(3, "x", True, Inner(1.0, ("a", "b"))) and isinstance(out.inner.rate, float)
    cast = config.from_dict(Outer, {**GOOD, "count": "4", "label": 6, "inner": {"rate": "1e-3", "names": []}})
    assert (cast.count, cast.label, cast.inner.rate) == (4, "6", 1e-3)  # "6" stays a string field's value
    assert config.to_dict(out) == {**GOOD, "inner": {"rate": 1.0, "names": ["a", "b"]}}


@pytest.mark.parametrize("data, message", [
    ({**GOOD, "cuont": 1}, "unknown keys \\['cuont'\\]"),
    ({k: v for k, v in GOOD.items() if k != "flag"}, "lacks \\['flag'\\]"),
    ({**GOOD, "count": 2.5}, "count must be an integer"),
    ({**GOOD, "flag": "yes"}, "flag must be true or false"),
    ({**GOOD, "inner": {"rate": 1, "names": "a"}}, "inner.names must be a list"),
    ({**GOOD, "inner": {"rate": 1, "names": [], "x": 0}}, "inner has unknown keys"),
])
def test_converter_is_strict_and_names_the_key(data, message):
    with pytest.raises(ConfigError, match=message):
        config.from_dict(Outer, data)


def test_partial_leaves_other_owners_keys_and_ros_keys_are_skipped():
    assert config.from_dict(Outer, {**GOOD, "autostart": True}, partial=True).count == 3
    assert config.from_dict(Outer, {**GOOD, "use_sim_time": True, "qos_overrides": {}}).count == 3


def test_overrides_are_dotted_yaml_values_on_existing_keys():
    sets = config.parse_overrides(["inner.rate=2e-1", "label=7", "inner.names=[p, q]"])
    assert sets == {"inner.rate": "2e-1", "label": 7, "inner.names": ["p", "q"]}  # YAML 1.1 reads 2e-1 as text
    out = config.from_dict(Outer, config.apply_overrides(GOOD, sets))
    assert out.inner == Inner(0.2, ("p", "q")) and out.label == "7"
    with pytest.raises(ConfigError, match="unknown setting 'inner.rat'"):
        config.apply_overrides(GOOD, {"inner.rat": 1})
    with pytest.raises(ConfigError, match="is a section"):
        config.apply_overrides(GOOD, {"inner": 1})
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        config.parse_overrides(["no-equals"])
    assert GOOD["inner"]["rate"] == 1, "the caller's tree is not modified"


def test_loader_unwraps_ros_params_files_and_merges_layers(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("/**:\n  ros__parameters:\n    a: {b: 1}\nmaskclip:\n  ros__parameters:\n    a: {c: 2}\n")
    assert config.read_yaml(path) == {"a": {"b": 1, "c": 2}}
    (tmp_path / "plain.yaml").write_text("a: {b: 5}\n")
    assert config.merge(config.read_yaml(path), config.read_yaml(tmp_path / "plain.yaml")) == {"a": {"b": 5, "c": 2}}
    with pytest.raises(ConfigError, match="not found"):
        config.read_yaml(tmp_path / "missing.yaml")


def test_resource_finder_prefers_the_checkout_then_ament_prefixes(tmp_path, monkeypatch):
    checkout = config.resource("config", "default.yaml")
    assert checkout == Path(config.PACKAGE_DIR).parent / "config" / "default.yaml"
    share = tmp_path / "share" / "maskclip_ros" / "config"
    share.mkdir(parents=True)
    (share / "only_in_install.yaml").write_text("x: 1\n")
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(tmp_path))
    assert config.resource("config", "only_in_install.yaml") == share / "only_in_install.yaml"
    with pytest.raises(ConfigError, match="reinstall"):
        config.resource("config", "nowhere.yaml")
    assert config.asset("clip/maskclip-ros-tiny-vit16.pt").is_file()
    assert config.asset("/abs/file.pt") == Path("/abs/file.pt")


def test_every_shipped_file_converts_to_its_typed_tree():
    """Each key of each config file has an owner and each owner's field a key (strict conversion)."""
    from maskclip_ros.data.sequences import SequenceConfig
    from maskclip_ros.data.world import MakeWorldConfig, WorldConfig
    from maskclip_ros.evaluation.runner import EvalConfig
    from maskclip_ros.ros.node_config import NodeConfig
    from maskclip_ros.small_clip.config import EvalClipConfig, SmallClipTrainConfig
    from maskclip_ros.training.coarse import CoarseConfig
    from maskclip_ros.training.losses import LossWeights
    from maskclip_ros.training.trainer import TrainConfig

    assert NodeConfig.load().vocabulary.class_names
    NodeConfig.load(config.shipped_config("demo.yaml"))
    owners = {"train.yaml": {"train": TrainConfig, "loss": LossWeights, "coarse": CoarseConfig, "eval": EvalConfig},
              "world.yaml": {"world": WorldConfig, "make_world": MakeWorldConfig, "sequences": SequenceConfig},
              "small_clip.yaml": {"train_clip": SmallClipTrainConfig, "eval_clip": EvalClipConfig}}
    for name, sections in owners.items():
        tree = config.read_yaml(config.shipped_config(name))
        assert set(tree) <= set(sections), f"{name}: sections without an owner {set(tree) - set(sections)}"
        for section, cls in sections.items():
            config.load_one(cls, name, section=section)


def test_top_level_sections_never_repeat_across_files():
    """A dotted override names one setting: no top-level key is in two shipped files."""
    seen: dict[str, str] = {}
    for name in ("default.yaml", "train.yaml", "world.yaml", "small_clip.yaml", "commands.yaml"):
        for key in config.read_yaml(config.shipped_config(name)):
            assert key not in seen, f"{key} in {seen.get(key)} and {name}"
            seen[key] = name


def test_command_defaults_are_options_of_their_commands():
    from maskclip_ros.cli import build_parser

    sections = config.read_yaml(config.shipped_config("commands.yaml"))
    for section in sections:
        command = section.replace("_", "-")
        build_parser([command])  # set_defaults raises on a key that is not an option of the command
