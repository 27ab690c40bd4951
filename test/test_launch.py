"""launch/segment.launch.py and config/maskclip.rviz checked without launch_ros (not installable here): the
launch file is parsed with `ast` and its contract compared with the node, CMakeLists.txt and config/."""
import ast
import re
from pathlib import Path

import yaml

from maskclip_ros.config import flatten, read_yaml, shipped_config
from maskclip_ros.ros import interface as segmentation_node

REPO = Path(__file__).resolve().parents[1]
LAUNCH = REPO / "launch" / "segment.launch.py"


def _tree() -> ast.Module:
    return ast.parse(LAUNCH.read_text(), filename=str(LAUNCH))


def _calls(name: str) -> list[ast.Call]:
    return [n for n in ast.walk(_tree()) if isinstance(n, ast.Call)
            and (getattr(n.func, "id", None) == name or getattr(n.func, "attr", None) == name)]


def _kwargs(call: ast.Call) -> dict[str, ast.expr]:
    return {k.arg: k.value for k in call.keywords}


def _value(expr: ast.expr):
    """A literal, or the literal a module-level NAME = ... assigns."""
    if isinstance(expr, ast.Name):
        (assign,) = [n for n in _tree().body if isinstance(n, ast.Assign)
                     and any(getattr(t, "id", None) == expr.id for t in n.targets)]
        expr = assign.value
    return ast.literal_eval(expr)


def _declared_arguments() -> dict[str, ast.Call]:
    return {ast.literal_eval(c.args[0]): c for c in _calls("DeclareLaunchArgument")}


def test_launch_declares_the_documented_arguments():
    declared = _declared_arguments()
    assert set(declared) == {"image", "params_file", "device", "namespace", "use_sim_time", "compressed"}
    assert all("description" in _kwargs(c) for c in declared.values())
    used = {ast.literal_eval(c.args[0]) for c in _calls("LaunchConfiguration")}
    assert used == set(declared), "every argument is used and every LaunchConfiguration is declared"


def test_launch_starts_the_installed_executable():
    (node,) = _calls("Node")
    kw = _kwargs(node)
    package, executable = _value(kw["package"]), _value(kw["executable"])
    cmake = (REPO / "CMakeLists.txt").read_text()
    assert re.search(r"project\((\w+)\)", cmake).group(1) == "maskclip_ros"
    assert "<name>maskclip_ros</name>" in (REPO / "package.xml").read_text()
    assert re.search(rf"install\(PROGRAMS [^)]*scripts/{executable}\b[^)]*DESTINATION lib/\$\{{PROJECT_NAME\}}",
                     cmake), "the executable is installed where ros2 run / launch_ros look"
    assert 'main(["node"' in (REPO / "scripts" / executable).read_text(), "it runs `maskclip-ros node`"
    assert ast.literal_eval(kw["name"]) == segmentation_node.NODE_NAME
    assert package == "maskclip_ros"


def test_launch_params_file_default_exists_and_is_installed():
    default = _kwargs(_declared_arguments()["params_file"])["default_value"]
    parts = [ast.literal_eval(a) for a in default.args[1:]]  # os.path.join(share, "config", "default.yaml")
    assert (REPO.joinpath(*parts)).is_file()
    assert re.search(r"install\(DIRECTORY [^)]*\bconfig\b[^)]*DESTINATION share/\$\{PROJECT_NAME\}",
                     (REPO / "CMakeLists.txt").read_text())


def test_launch_remappings_match_the_node_topics():
    (node,) = _calls("Node")
    pairs = [tuple(e.elts) for e in _kwargs(node)["remappings"].elts]
    sources = [ast.literal_eval(src) for src, _ in pairs]
    assert sources == [segmentation_node.IMAGE_TOPIC, segmentation_node.COMPRESSED_TOPIC,
                       segmentation_node.SERVICE_NAME]
    assert ast.literal_eval(pairs[2][1]) == "/set_vocabulary"


def test_launch_overrides_only_known_parameters():
    """Every key the launch file sets on the node is a node parameter (or ROS's own use_sim_time)."""
    keys = {ast.literal_eval(t.slice) for t in ast.walk(_tree())
            if isinstance(t, ast.Subscript) and getattr(t.value, "id", None) == "overrides"}
    keys |= {ast.literal_eval(k) for d in ast.walk(_tree()) if isinstance(d, ast.Dict) for k in d.keys}
    assert keys == {"use_sim_time", "device", "compressed_input"}
    assert keys - {"use_sim_time"} <= set(flatten(read_yaml(shipped_config("default.yaml"))))


def test_rviz_config_shows_camera_and_overlay():
    rviz = yaml.safe_load((REPO / "config" / "maskclip.rviz").read_text())
    displays = {d["Name"]: d for d in rviz["Visualization Manager"]["Displays"]}
    assert {d["Class"] for d in displays.values()} == {"rviz_default_plugins/Image"}
    overlay_topic = "/" + segmentation_node.NODE_NAME + segmentation_node.OUTPUT_TOPICS["overlay"][1:]
    assert displays["Overlay"]["Topic"]["Value"] == overlay_topic
    camera = _kwargs(_declared_arguments()["image"])["default_value"]
    assert displays["Camera"]["Topic"]["Value"] == ast.literal_eval(camera)
    assert displays["Camera"]["Topic"]["Reliability Policy"] == "Best Effort"  # matches camera drivers
