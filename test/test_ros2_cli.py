"""Issue 12: the README's robot section, run as written with the real ROS 2 tools (`ros2 launch`, `ros2 service
call`, `ros2 param`, `ros2 lifecycle`, `ros2 topic echo`) against the package built by `colcon build` the
way the README says (helpers/ros2_tools.py builds it once per session and parses the commands out of the
README's fenced bash blocks, so the docs cannot drift from what is tested).

Two launches: the README's first one (`image:=/camera/image_raw`, device:=cpu instead of cuda, the installed
config/default.yaml and CLIP checkpoint) and its namespaced one (namespace, compressed, use_sim_time,
params_file) fed by `maskclip-ros replay` of a generated bag. Graph verbs get `--no-daemon --spin-time 2`
and are retried until their answer appears; nothing waits a fixed time.
"""
from __future__ import annotations

import ast
import contextlib
import re
import time
from pathlib import Path

import pytest
import rclpy
import yaml
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.serialization import serialize_message
from rosbags.rosbag2 import StoragePlugin, Writer
from sensor_msgs.msg import Image

from helpers.node_harness import scene, write_params
from helpers.ros2_tools import GRAPH_OPTIONS, REPO, Readme, colcon_workspace, launched, require_tools
from maskclip_ros.msg import Segmentation
from maskclip_ros.ros.bags import typestore
from maskclip_ros.ros.conversions import ImageConverter

# Tests that need the colcon build (about a minute, once per session) are slow, launches also ros; the two
# README guards are neither.

README = Readme()
GRAPH = " ".join(GRAPH_OPTIONS)  # --no-daemon --spin-time S
START_TIMEOUT_S = 240.0  # launch -> active with the default CLIP on a loaded 2-core machine
ANSWER_TIMEOUT_S = 60.0  # one graph verb until its answer appears
LIFECYCLE_STATE = re.compile(r"^\w+ \[\d+\]$", re.MULTILINE)  # what `ros2 lifecycle get` prints: "active [3]"
NAMESPACE = "robot1"
NS_NODE = f"/{NAMESPACE}/maskclip"
NS_CAMERA = f"/{NAMESPACE}/camera/image_raw/compressed"  # image:=camera/image_raw, compressed:=true
NS_PROPOSALS = f"/{NAMESPACE}/proposals"
BAG_T0_NS = 1000 * 10**9  # bag time of the first frame: far from wall-clock time (~1.7e9 s)
BAG_FRAMES, BAG_PERIOD_NS = 5, 100_000_000
NS_VOCABULARY = ["alpha", "beta", "gamma"]
RELIABLE = {"subscription": {"reliability": "reliable"}}
# The namespaced launch's params file: the tiny random-init CLIP with external proposals (starts in seconds),
# its own vocabulary, and reliable inputs on the namespaced topics (the replay publishes reliably).
NS_PARAMS = {"vocabulary": {"class_names": NS_VOCABULARY, "is_thing": [True, True, False]},
             "qos_overrides": {NS_CAMERA: RELIABLE, NS_PROPOSALS: RELIABLE}}

# Every command of the README's robot section (fenced bash blocks) and what runs it here.
# test_every_readme_command_is_run keeps this table complete: a new README command fails until listed.
RUN_BY = {
    "git clone": "helpers/ros2_tools.build_workspace (links this repository as src/maskclip_ros)",
    "pip install -r": "helpers/ros2_tools.build_workspace (--dry-run --no-index: every pin already installed)",
    "colcon build": "helpers/ros2_tools.build_workspace",
    "source install/setup.bash": "helpers/ros2_tools.Workspace.bash, before every command",
    "ros2 launch maskclip_ros segment.launch.py image:=/camera/image_raw": "TestReadmeLaunch (device:=cpu instead of cuda)",
    "ros2 launch maskclip_ros segment.launch.py image:=/camera/color": "TestDepthLaunch",
    "ros2 launch maskclip_ros segment.launch.py namespace:=": "TestNamespacedSimTimeLaunch",
    "maskclip-ros replay": "TestNamespacedSimTimeLaunch.test_replayed_bag_drives_the_node_on_bag_time",
    "ros2 lifecycle get": "TestReadmeLaunch.test_launch_reaches_active",
    "ros2 topic echo --once": "TestReadmeLaunch.test_readme_service_call_changes_the_latched_vocabulary",
    "ros2 param set /maskclip merge.min_area": "TestReadmeLaunch.test_readme_param_set_and_get",
    "ros2 param get": "TestReadmeLaunch.test_readme_param_set_and_get",
    "ros2 lifecycle set /maskclip deactivate": "TestReadmeLaunch.test_readme_lifecycle_deactivate_activate",
    "ros2 lifecycle set /maskclip activate": "TestReadmeLaunch.test_readme_lifecycle_deactivate_activate",
    "ros2 service call": "TestReadmeLaunch.test_readme_service_call_changes_the_latched_vocabulary",
    "maskclip-ros set-vocabulary": "TestReadmeLaunch.test_readme_set_vocabulary_command",
    "ros2 param set /maskclip vocabulary.class_names": "TestReadmeLaunch.test_readme_param_sets_the_vocabulary",
    "export FASTDDS_DEFAULT_PROFILES_FILE": "test_readme_installed_paths_exist",
}


@pytest.fixture(scope="session")
def workspace(tmp_path_factory):
    require_tools()
    return colcon_workspace(tmp_path_factory)


def test_every_readme_command_is_run():
    names = {name for cls in (TestReadmeLaunch, TestNamespacedSimTimeLaunch, TestDepthLaunch)
             for name in dir(cls)} | set(globals())
    for command in README.commands:
        words = " ".join(command.argv)
        matches = [key for key in RUN_BY if words.startswith(key)]
        assert len(matches) == 1, f"README command {command.text!r}: add it to RUN_BY (matches: {matches})"
    for where in RUN_BY.values():
        test = where.split(" ")[0].split(".")[-1]
        assert where.startswith("helpers/") or test in names, f"RUN_BY names a missing test: {where}"


def test_every_launch_argument_is_exercised():
    """Each argument launch/segment.launch.py declares is given on one of the README launch lines that the
    classes below run (a new argument fails here until the README shows it and a test runs it)."""
    tree = ast.parse((REPO / "launch" / "segment.launch.py").read_text())
    declared = {call.args[0].value for call in ast.walk(tree) if isinstance(call, ast.Call)
                and getattr(call.func, "id", "") == "DeclareLaunchArgument"}
    given = {arg.split(":=")[0] for command in README.commands if command.argv[:2] == ("ros2", "launch")
             for arg in command.argv if ":=" in arg}
    assert declared, "the launch file declares no arguments"
    assert not declared - given, f"launch arguments no README launch line (and so no test) gives: {declared - given}"


@pytest.mark.slow
def test_readme_installed_paths_exist(workspace):
    """The README's `$(ros2 pkg prefix maskclip_ros)/...` paths (Fast DDS profile, RViz config) exist."""
    export = README.find("export", having=[]).text
    workspace.ok(f'{export} && test -f "$FASTDDS_DEFAULT_PROFILES_FILE"')
    (rviz,) = README.inline_code(r"^rviz2 -d \$\(ros2 pkg prefix maskclip_ros\)")
    workspace.ok(f"test -f {rviz.split(' -d ', 1)[1]}")


# ------------------------------------------------------------------------------- the README's first launch
@pytest.fixture(scope="class")
def robot(workspace, tmp_path_factory):
    """The README's first launch, active (when it never gets there, every test of the class fails at once)."""
    command = README.find("ros2", "launch", having=["device:=cuda"]).with_args({"device:=cuda": "device:=cpu"})
    with launched(workspace, command, tmp_path_factory.mktemp("launch") / "launch.log") as launch:
        wait_active(workspace, launch, README.find("ros2", "lifecycle", "get").graph())
        yield launch


def wait_active(workspace, launch, lifecycle_get: str) -> None:
    start = time.monotonic()
    try:
        workspace.until(lifecycle_get, lambda out: "active [3]" in LIFECYCLE_STATE.findall(out), START_TIMEOUT_S,
                        "the launched node to become active", launch.alive)
    except AssertionError as error:
        pytest.fail(f"{error}\nlaunch log:\n{launch.log()[-4000:]}")
    launch.active_after_s = time.monotonic() - start


def graph(command: str, workspace, robot, wanted, what: str) -> str:
    """Run a README graph command (options added) until `wanted(output)`."""
    cmd = README.find(*command.split()) if isinstance(command, str) else command
    return workspace.until(cmd.graph(), wanted, ANSWER_TIMEOUT_S, what, robot.alive)


def echo_vocabulary(workspace, robot, topic: str = "/maskclip/vocabulary", min_version: int = 0) -> dict:
    """The latched vocabulary as the README's `ros2 topic echo --once` prints it (YAML), rerun until its
    version is at least `min_version`."""
    echo = README.find("ros2", "topic", "echo")
    command = echo.with_args({"/maskclip/vocabulary": topic}, extra=(*GRAPH_OPTIONS, "--timeout", "10"))

    def parse(output: str) -> dict | None:
        with contextlib.suppress(yaml.YAMLError, AttributeError, IndexError):
            message = yaml.safe_load(output.split("\n---")[0])
            if isinstance(message, dict) and message.get("version", -1) >= min_version:
                return message
        return None

    output = workspace.until(command, lambda out: parse(out) is not None, ANSWER_TIMEOUT_S,
                             f"version >= {min_version} on {topic}", robot.alive)
    return parse(output)


@pytest.mark.usefixtures("robot")
@pytest.mark.ros
@pytest.mark.slow
class TestReadmeLaunch:
    """`ros2 launch maskclip_ros segment.launch.py image:=/camera/image_raw device:=cpu` from the install space,
    then the README's commands against it, in the README's order of use."""

    def test_launch_reaches_active(self, workspace, robot):
        """The README's `ros2 lifecycle get /maskclip` says active [3] (the fixture waited for it)."""
        print(f"active {robot.active_after_s:.1f} s after ros2 launch started")
        state = graph("ros2 lifecycle get", workspace, robot, LIFECYCLE_STATE.search, "lifecycle get")
        assert LIFECYCLE_STATE.search(state).group(0) == "active [3]", state
        assert "[ERROR]" not in robot.log(), robot.log()

    def test_readme_service_call_changes_the_latched_vocabulary(self, workspace, robot):
        output = workspace.ok(README.find("ros2", "service", "call").text)
        assert "success=True" in output, output
        assert "class_names=['person', 'chair', 'mug', 'floor', 'wall']" in output, output
        version = int(output.split("version=")[1].split(",")[0])
        vocabulary = echo_vocabulary(workspace, robot, min_version=version)
        assert vocabulary["class_names"] == ["person", "chair", "mug", "floor", "wall"]
        assert vocabulary["is_thing"] == [True, True, True, False, False]
        assert vocabulary["version"] == version, "the reply names the published version"

    def test_readme_set_vocabulary_command(self, workspace, robot):
        before = echo_vocabulary(workspace, robot)["version"]
        output = workspace.ok(README.find("maskclip-ros", "set-vocabulary").text)
        assert "accepted" in output, output
        vocabulary = echo_vocabulary(workspace, robot, min_version=before + 1)
        assert vocabulary["class_names"] == ["person", "chair", "mug", "floor", "wall"]
        assert vocabulary["is_thing"] == [True, True, True, False, False], "floor:stuff and wall:stuff are stuff"
        assert vocabulary["version"] == before + 1, "one request, one vocabulary version"

    def test_readme_param_sets_the_vocabulary(self, workspace, robot):
        before = echo_vocabulary(workspace, robot)["version"]
        command = README.find("ros2", "param", "set", having=["vocabulary.class_names"])
        graph(command, workspace, robot, lambda out: "Set parameter successful" in out, "param set class_names")
        vocabulary = echo_vocabulary(workspace, robot, min_version=before + 1)
        assert vocabulary["class_names"] == ["person", "chair"] and vocabulary["version"] == before + 1

    def test_readme_param_set_and_get(self, workspace, robot):
        graph(README.find("ros2", "param", "set", having=["merge.min_area"]), workspace, robot,
              lambda out: "Set parameter successful" in out, "param set merge.min_area")
        got = graph("ros2 param get", workspace, robot, lambda out: "value is" in out, "param get merge.min_area")
        assert got.strip() == "Integer value is: 64", got

    def test_readme_lifecycle_deactivate_activate(self, workspace, robot):
        lifecycle_get = README.find("ros2", "lifecycle", "get").graph()
        for transition, state in (("deactivate", "inactive [2]"), ("activate", "active [3]")):
            graph(README.find("ros2", "lifecycle", "set", having=[transition]), workspace, robot,
                  lambda out: "Transitioning successful" in out, f"lifecycle set {transition}")
            # "Node not found" when discovery is slow, or a log line before the answer: ask again / skip it
            got = workspace.until(lifecycle_get, LIFECYCLE_STATE.search, ANSWER_TIMEOUT_S, "lifecycle get",
                                  robot.alive)
            assert LIFECYCLE_STATE.search(got).group(0) == state, got

    def test_node_segments_a_camera_frame(self, workspace, robot):
        """A frame on the launch's image topic comes back segmented by the installed default model."""
        topic = README.find("ros2", "launch", having=["device:=cuda"]).argv[4].split(":=")[1]
        rgb, _ = scene(3)
        with ros_node("readme_launch_camera") as node:
            segments = []
            node.create_subscription(Segmentation, "/maskclip/segments", segments.append, 10)
            camera = node.create_publisher(Image, topic, 10)
            frame = ImageConverter(prefer_cv_bridge=False).rgb_to_image(rgb)
            frame.header.stamp.sec, frame.header.frame_id = 42, "camera"
            spin_until(node, lambda: camera.get_subscription_count() > 0, ANSWER_TIMEOUT_S, f"a subscriber on {topic}")
            deadline = time.monotonic() + ANSWER_TIMEOUT_S
            while not segments:  # best-effort input: send again until one frame is through
                assert time.monotonic() < deadline and robot.alive(), "no segmentation of the camera frame"
                camera.publish(frame)
                spin_until(node, lambda: bool(segments), 2.0, "", fail=False)
        assert segments[0].header.stamp.sec == 42 and segments[0].header.frame_id == "camera"
        assert (segments[0].height, segments[0].width) == rgb.shape[:2]

    def test_sigint_stops_the_launch_cleanly(self, robot):
        assert robot.stop() == 0, robot.log()
        assert "process has finished cleanly" in robot.log(), robot.log()


# ---------------------------------------------------------------- the namespaced launch on a bag's clock
@pytest.fixture(scope="class")
def ns_robot(workspace, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ns_launch")
    params = write_params(tmp / "my_params.yaml", NS_PARAMS)
    command = README.find("ros2", "launch", having=[f"namespace:={NAMESPACE}"])
    text = command.with_args({"params_file:=my_params.yaml": f"params_file:={params}"}, extra=["device:=cpu"])
    with launched(workspace, text, tmp / "launch.log") as launch:
        wait_active(workspace, launch, f"ros2 lifecycle get {NS_NODE} {GRAPH}")
        yield launch


def node_info(workspace, robot, node: str, wanted) -> dict[str, set[str]]:
    """`ros2 node info NODE` as {section: {"name: type", ...}}, rerun until wanted(that dict)."""
    def parse(output: str) -> dict[str, set[str]]:
        sections: dict[str, set[str]] = {}
        current = None
        for line in output.splitlines():
            if line.startswith("  ") and not line.startswith("    ") and line.strip().endswith(":"):
                current = sections.setdefault(line.strip()[:-1], set())
            elif line.startswith("    ") and current is not None:
                current.add(line.strip())
        return sections
    output = workspace.until(f"ros2 node info {node} {GRAPH}", lambda out: wanted(parse(out)),
                             ANSWER_TIMEOUT_S, f"ros2 node info {node}", robot.alive)
    return parse(output)


def write_bag(path: Path) -> Path:
    """A rosbag2 (mcap) of BAG_FRAMES png frames on NS_CAMERA and their proposals on NS_PROPOSALS, bag time
    from BAG_T0_NS (what `maskclip-ros replay` puts on /clock)."""
    conv, store = ImageConverter(prefer_cv_bridge=False), typestore()
    with Writer(path, version=Writer.VERSION_LATEST, storage_plugin=StoragePlugin.MCAP) as writer:
        camera = writer.add_connection(NS_CAMERA, "sensor_msgs/msg/CompressedImage", typestore=store)
        proposals = writer.add_connection(NS_PROPOSALS, "sensor_msgs/msg/Image", typestore=store)
        for index in range(BAG_FRAMES):
            rgb, labels = scene(index)
            stamp = BAG_T0_NS + index * BAG_PERIOD_NS
            header = Image().header
            header.stamp.sec, header.stamp.nanosec = divmod(stamp, 10**9)
            header.frame_id = "camera"
            writer.write(proposals, stamp, serialize_message(conv.labels_to_image(labels, "mono8", header)))
            writer.write(camera, stamp, serialize_message(conv.rgb_to_compressed(rgb, header, "png")))
    return path


@pytest.mark.usefixtures("ns_robot")
@pytest.mark.ros
@pytest.mark.slow
class TestNamespacedSimTimeLaunch:
    """`ros2 launch ... namespace:=robot1 image:=camera/image_raw compressed:=true use_sim_time:=true
    params_file:=my_params.yaml` (+ device:=cpu), then `maskclip-ros replay my_bag`."""

    def test_node_and_topics_are_in_the_namespace(self, workspace, ns_robot):
        info = node_info(workspace, ns_robot, NS_NODE,
                         lambda s: any(NS_CAMERA in line for line in s.get("Subscribers", ())))
        subscribers, publishers = info["Subscribers"], info["Publishers"]
        assert f"{NS_CAMERA}: sensor_msgs/msg/CompressedImage" in subscribers, "compressed:=true"
        assert not any(line.startswith(f"/{NAMESPACE}/camera/image_raw:") for line in subscribers)
        assert "/clock: rosgraph_msgs/msg/Clock" in subscribers, "use_sim_time:=true subscribes to /clock"
        for output in ("segments", "panoptic", "semantic", "vocabulary"):
            assert any(line.startswith(f"{NS_NODE}/{output}:") for line in publishers), (output, publishers)
        # the launch remap is relative: each namespaced robot has its own /<namespace>/set_vocabulary
        assert any(line.startswith(f"/{NAMESPACE}/set_vocabulary:") for line in info["Service Servers"]), info

    def test_params_file_and_sim_time_are_applied(self, workspace, ns_robot):
        dump = workspace.until(f"ros2 param dump {NS_NODE} {GRAPH}", lambda out: "ros__parameters" in out,
                               ANSWER_TIMEOUT_S, "param dump", ns_robot.alive)
        params = yaml.safe_load(dump)[NS_NODE]["ros__parameters"]
        assert params["use_sim_time"] is True, "use_sim_time:=true"
        assert params["clip"]["model_name"] == "maskclip-ros-test-tiny", "the params file's, not default.yaml's"
        vocabulary = echo_vocabulary(workspace, ns_robot, f"{NS_NODE}/vocabulary")
        assert vocabulary["class_names"] == NS_VOCABULARY
        assert vocabulary["header"]["stamp"] == {"sec": 0, "nanosec": 0}, "sim time before any /clock is 0"

    def test_replayed_bag_drives_the_node_on_bag_time(self, workspace, ns_robot, tmp_path):
        bag = write_bag(tmp_path / "my_bag")
        stamps = [divmod(BAG_T0_NS + i * BAG_PERIOD_NS, 10**9) for i in range(BAG_FRAMES)]
        with ros_node("ns_launch_listener") as node:
            segments = []
            listener = node.create_subscription(Segmentation, f"{NS_NODE}/segments", segments.append,
                                                QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE))
            spin_until(node, lambda: node.count_subscribers(NS_CAMERA) and node.count_subscribers(NS_PROPOSALS)
                       and listener.get_publisher_count(), ANSWER_TIMEOUT_S, "the active node")
            replay = README.find("maskclip-ros", "replay").with_args({"my_bag": str(bag)})
            output = workspace.ok(replay, timeout=120)
            assert f"published {2 * BAG_FRAMES} messages" in output, output
            spin_until(node, lambda: len(segments) >= BAG_FRAMES, ANSWER_TIMEOUT_S, "a segmentation per frame")
        assert sorted((m.header.stamp.sec, m.header.stamp.nanosec) for m in segments) == stamps
        assert all(m.instances and m.height == 64 for m in segments)
        # The node's own clock follows the bag's /clock: a new vocabulary is stamped with bag time.
        before = echo_vocabulary(workspace, ns_robot, f"{NS_NODE}/vocabulary")["version"]
        output = workspace.ok(README.find("maskclip-ros", "set-vocabulary").text)
        assert "accepted" in output, output
        vocabulary = echo_vocabulary(workspace, ns_robot, f"{NS_NODE}/vocabulary", min_version=before + 1)
        assert vocabulary["class_names"] == ["person", "chair", "mug", "floor", "wall"]
        assert vocabulary["header"]["stamp"]["sec"] == BAG_T0_NS // 10**9, vocabulary["header"]

    def test_sigint_stops_the_launch_cleanly(self, ns_robot):
        assert ns_robot.stop() == 0, ns_robot.log()
        assert "process has finished cleanly" in ns_robot.log(), ns_robot.log()


# ---------------------------------------------------------------------- the README's depth-camera launch
DEPTH_FRAMES, DEPTH_HZ = 6, 2.0


@pytest.fixture(scope="class")
def depth_robot(workspace, tmp_path_factory):
    """The README's depth-camera launch (default model: the small CLIP, regions proposals), active."""
    tmp = tmp_path_factory.mktemp("depth_launch")
    command = README.find("ros2", "launch", having=["large_frames:=true"])
    with launched(workspace, command.with_args(extra=["device:=cpu"]), tmp / "launch.log") as launch:
        wait_active(workspace, launch, README.find("ros2", "lifecycle", "get").graph())
        yield launch


def write_depth_bag(path: Path, command) -> Path:
    """A demo-style bag of a moving generated world on the topics the depth launch line remaps to."""
    from maskclip_ros.ros.demo import DemoSettings, write_demo_bag

    topics = dict(arg.split(":=") for arg in command.argv if ":=" in arg)
    settings = DemoSettings(bag=None, topic=topics["image"], depth_topic=topics["depth"],
                            camera_info_topic=topics["camera_info"], frames=DEPTH_FRAMES, hz=DEPTH_HZ, seed=4040,
                            params_files=(), switch_to=(), timeout=0, service_timeout=0, gif_frame_ms=0,
                            gif_scale=1, out=path.parent)
    return write_demo_bag(path, settings)


@pytest.mark.usefixtures("depth_robot")
@pytest.mark.ros
@pytest.mark.slow
class TestDepthLaunch:
    """`ros2 launch ... image:=/camera/color/image_raw depth:=... camera_info:=... large_frames:=true`, a replayed
    bag with depth (the camera side with the README's Fast DDS profile): track ids and 3D geometry come out."""

    def test_replayed_depth_bag_gives_tracks_and_3d(self, workspace, depth_robot, tmp_path):
        command = README.find("ros2", "launch", having=["large_frames:=true"])
        bag = write_depth_bag(tmp_path / "depth_bag", command)
        export = README.find("export", having=[]).text
        with ros_node("depth_launch_listener") as node:
            segments = []
            listener = node.create_subscription(Segmentation, "/maskclip/segments", segments.append,
                                                QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE))
            spin_until(node, lambda: node.count_publishers("/maskclip/markers") and listener.get_publisher_count(),
                       ANSWER_TIMEOUT_S, "the 3D publishers")
            output = workspace.ok(f"{export} && maskclip-ros replay {bag} --wait-for "
                                  f"{' '.join(dict(a.split(':=') for a in command.argv if ':=' in a)[t] for t in ('image', 'depth'))}",
                                  timeout=180)
            assert "published" in output, output
            spin_until(node, lambda: len(segments) >= 2, ANSWER_TIMEOUT_S, "two processed frames")
        with_depth = [m for m in segments if any(i.geometry.valid for i in m.instances)]
        assert with_depth, "depth paired with the frames: segments have 3D geometry"
        assert all(0.5 < i.geometry.depth < 25 for m in with_depth for i in m.instances if i.geometry.valid)
        tracked = [i.track_id for m in segments[1:] for i in m.instances if i.is_thing]
        assert not tracked or any(tracked), "things get track ids"


# ------------------------------------------------------------------------------------------------- helpers
@contextlib.contextmanager
def ros_node(name: str):
    rclpy.init()
    try:
        node = rclpy.create_node(name)
        yield node
        node.destroy_node()
    finally:
        rclpy.try_shutdown()


def spin_until(node, condition, timeout: float, what: str, fail: bool = True) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            assert not fail, f"timed out after {timeout:.0f} s waiting for {what}"
            return False
        rclpy.spin_once(node, timeout_sec=0.05)
    return True
