"""Issue 8: the README's reference matches the node (topics, service, messages, parameters) and the launch
file's arguments; `maskclip-ros docs --write` regenerates it."""
import ast
import re
from pathlib import Path

from maskclip_ros.ros import interface as node, reference

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")


def test_reference_section_is_up_to_date():
    assert reference.readme_section(README) == reference.generate(), \
        "README reference drifted: run `.venv/bin/maskclip-ros docs --write`"


def test_reference_lists_exactly_the_node_topics():
    node_topics = {node.IMAGE_TOPIC, node.COMPRESSED_TOPIC, node.PROPOSALS_TOPIC, node.DEPTH_TOPIC,
                   node.CAMERA_INFO_TOPIC, node.DIAGNOSTICS_TOPIC, *node.OUTPUT_TOPICS.values(),
                   *node.VISION_TOPICS.values(), *node.DEPTH_OUTPUT_TOPICS.values()}
    assert set(reference.TOPICS) == node_topics


def test_every_parameter_and_message_field_is_in_the_readme():
    from maskclip_ros.ros.params import load_specs

    for spec in load_specs():
        assert f"`{spec.name}`" in README, spec.name
    for path in [*(REPO / "msg").glob("*.msg"), *(REPO / "srv").glob("*.srv")]:
        for line in path.read_text().splitlines():
            if line.strip() and not line.startswith("#") and line != "---":
                assert line in README, f"{path.name}: {line!r}"


def test_readme_names_every_launch_argument():
    tree = ast.parse((REPO / "launch" / "segment.launch.py").read_text())
    arguments = {call.args[0].value for call in ast.walk(tree) if isinstance(call, ast.Call)
                 and getattr(call.func, "id", "") == "DeclareLaunchArgument"}
    assert arguments, "the launch file declares no arguments"
    launch_line = re.search(r"Launch arguments:(.*?)\n\n", README, re.S).group(1)
    for argument in arguments:
        assert f"`{argument}`" in launch_line, argument
