"""launch/segment.launch.py evaluated with the real launch API (no process started): every argument, the
node's name, remappings, parameters and environment; and config/maskclip.rviz against the node's topics.
`ros2 launch` itself runs in test_ros2_cli.py."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml

from maskclip_ros.config import flatten, read_yaml, shipped_config
from maskclip_ros.ros import interface

REPO = Path(__file__).resolve().parents[1]
LAUNCH = REPO / "launch" / "segment.launch.py"
launch = pytest.importorskip("launch", reason="ROS 2 launch is not installed: make setup-ros-tools "
                             "(../shared/ros2-tools) or source a ROS 2 install")
pytest.importorskip("launch_ros", reason="launch_ros is not installed: make setup-ros-tools")


def evaluate(monkeypatch, **arguments):
    """(the Node action after substitution, its parameters dict, the declared argument names)."""
    from launch import LaunchContext
    from launch.actions import DeclareLaunchArgument, OpaqueFunction
    from launch.utilities import perform_substitutions

    import sys

    monkeypatch.setenv("AMENT_PREFIX_PATH", sys.prefix)  # the venv is an ament prefix holding maskclip_ros
    spec = importlib.util.spec_from_file_location("segment_launch", LAUNCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    context = LaunchContext()
    context.launch_configurations.update({"params_file": str(shipped_config("default.yaml")), **arguments})
    declared = [e for e in description.entities if isinstance(e, DeclareLaunchArgument)]
    for action in declared:
        action.execute(context)
    (opaque,) = [e for e in description.entities if isinstance(e, OpaqueFunction)]
    (node,) = opaque.execute(context)
    node._perform_substitutions(context)
    files = [Path(path) for path, _ in node._Node__expanded_parameter_arguments]
    assert files[0] == Path(context.launch_configurations["params_file"]), "the params file comes first"
    params = {}
    for path in files[1:]:  # the command-line overrides, written by launch_ros as a params file
        params.update(next(iter(yaml.safe_load(path.read_text()).values()))["ros__parameters"])
    env = {perform_substitutions(context, k): perform_substitutions(context, v) for k, v in node.additional_env}
    return node, params, env, [a.name for a in declared]


def test_defaults_remap_the_node_topics_and_expose_the_service(monkeypatch):
    monkeypatch.delenv("FASTDDS_DEFAULT_PROFILES_FILE", raising=False)
    node, params, env, declared = evaluate(monkeypatch)
    assert node.node_name == "/" + interface.NODE_NAME and node.node_package == "maskclip_ros"
    remaps = dict(node.expanded_remapping_rules)
    assert remaps == {interface.IMAGE_TOPIC: "/camera/image_raw", interface.COMPRESSED_TOPIC: "/camera/image_raw/compressed",
                      interface.DEPTH_TOPIC: "/camera/depth_registered/image_raw",
                      interface.CAMERA_INFO_TOPIC: "/camera/camera_info",
                      interface.SERVICE_NAME: interface.LAUNCH_SERVICE_NAME.lstrip("/")}
    assert params == {"use_sim_time": False}, "without arguments the params file decides everything"
    profile = Path(env["FASTDDS_DEFAULT_PROFILES_FILE"])  # in the package's share dir (installed by CMake)
    assert profile.parts[-3:] == ("maskclip_ros", "config", "fastdds_large_frames.xml")
    assert set(declared) == {"image", "depth", "camera_info", "params_file", "device", "namespace", "use_sim_time",
                             "compressed", "large_frames"}


def test_arguments_override_only_what_they_name(monkeypatch):
    monkeypatch.delenv("FASTDDS_DEFAULT_PROFILES_FILE", raising=False)
    node, params, env, _ = evaluate(monkeypatch, image="/rs/color/image_raw", device="cuda", compressed="true",
                                    use_sim_time="true", namespace="robot1", large_frames="false",
                                    camera_info="/rs/color/info")
    assert params == {"use_sim_time": True, "device": "cuda", "compressed_input": True}
    assert set(params) - {"use_sim_time"} <= set(flatten(read_yaml(shipped_config("default.yaml"))))
    remaps = dict(node.expanded_remapping_rules)
    assert remaps["image"] == "/rs/color/image_raw" and remaps["camera_info"] == "/rs/color/info"
    assert node.expanded_node_namespace == "/robot1" and env == {}
    assert remaps["~/set_vocabulary"] == "set_vocabulary", "relative: /robot1/set_vocabulary, no clash between robots"


def test_a_profile_the_user_chose_is_kept(monkeypatch):
    monkeypatch.setenv("FASTDDS_DEFAULT_PROFILES_FILE", "/etc/my_profile.xml")
    _, _, env, _ = evaluate(monkeypatch)
    assert env == {}, "the node inherits the user's FASTDDS_DEFAULT_PROFILES_FILE"


def test_rviz_config_shows_camera_overlay_and_3d():
    rviz = yaml.safe_load((REPO / "config" / "maskclip.rviz").read_text())
    displays = {d["Name"]: d for d in rviz["Visualization Manager"]["Displays"]}
    node = "/" + interface.NODE_NAME
    assert displays["Overlay"]["Topic"]["Value"] == node + interface.OUTPUT_TOPICS["overlay"][1:]
    assert displays["Objects3D"]["Class"] == "rviz_default_plugins/MarkerArray"
    assert displays["Objects3D"]["Topic"]["Value"] == node + interface.DEPTH_OUTPUT_TOPICS["markers"][1:]
    assert displays["LabelledCloud"]["Topic"]["Value"] == node + interface.DEPTH_OUTPUT_TOPICS["cloud"][1:]
    assert displays["Camera"]["Topic"]["Value"] == "/camera/image_raw"
    assert displays["Camera"]["Topic"]["Reliability Policy"] == "Best Effort"  # matches camera drivers
