"""Issue 7, bags: `maskclip-ros replay` and `maskclip-ros record` (rosbags, sqlite3 and mcap) across
processes, and a bag replayed through the node whose recorded output holds one segmentation per frame."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.serialization import serialize_message
from rosbags.rosbag2 import Writer
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image
from std_msgs.msg import String

import rosproc
from helpers.node_harness import node_session, scene, write_params
from maskclip_ros.msg import SegmentInstance, Segmentation
from maskclip_ros.ros.bags import READY_LINE, STORAGE, Recorder, read_messages, typestore
from maskclip_ros.ros.conversions import ImageConverter

pytestmark = pytest.mark.ros
CLI = ["-m", "maskclip_ros.cli"]
T0 = 1_700_000_000 * 10**9  # bag time of the first message (ns)


def write_bag(path: Path, messages: list[tuple[str, str, int, object]], storage: str) -> Path:
    """messages: (topic, msgtype, bag time ns, rclpy message), written with rosbags (CDR from rclpy)."""
    store = typestore()
    with Writer(path, version=Writer.VERSION_LATEST, storage_plugin=STORAGE[storage]) as writer:
        connections = {}
        for topic, msgtype, stamp, msg in messages:
            if topic not in connections:
                connections[topic] = writer.add_connection(topic, msgtype, typestore=store)
            writer.write(connections[topic], stamp, serialize_message(msg))
    return path


def frame_messages(count: int, period_ns: int, proposals: bool) -> list[tuple[str, str, int, object]]:
    conv, out = ImageConverter(prefer_cv_bridge=False), []
    for i in range(count):
        rgb, labels = scene(i)
        stamp = T0 + i * period_ns
        image = conv.rgb_to_image(rgb)
        image.header.stamp.sec, image.header.stamp.nanosec = divmod(stamp, 10**9)
        image.header.frame_id = "camera"
        if proposals:
            out.append(("/proposals", "sensor_msgs/msg/Image", stamp,
                        conv.labels_to_image(labels, "mono8", image.header)))
        out.append(("/image", "sensor_msgs/msg/Image", stamp, image))
    return out


def _segmentation(stamp: int) -> Segmentation:
    msg = Segmentation(vocabulary_version=3, height=64, width=96)
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 10**9)
    inst = SegmentInstance(id=7, class_index=1, class_name="boat", score=0.5, is_thing=True, area=12,
                           embedding=[0.6, 0.8])
    inst.bbox.x_offset, inst.bbox.width, inst.bbox.height = 3, 4, 3
    msg.instances = [inst]
    return msg


def _run_cli(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *CLI, *args], capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ), cwd=rosproc.REPO)


@pytest.mark.parametrize("source, target", [("sqlite3", "mcap"), ("mcap", "sqlite3")])
def test_replay_and_record_round_trip(tmp_path, ros_isolation, source, target):
    period = 100_000_000  # 10 Hz in the bag, replayed at rate 2 -> 20 Hz
    messages = frame_messages(5, period, proposals=False)
    messages.append(("/segments_in", "maskclip_ros/msg/Segmentation", T0 + 5 * period, _segmentation(T0)))
    bag = write_bag(tmp_path / "in", messages, source)
    rclpy.init()
    node = rclpy.create_node("bag_test")
    clock = []
    node.create_subscription(Clock, "/clock", clock.append, QoSProfile(depth=50))
    recorder = rosproc.start([*CLI, "record", str(tmp_path / "out"), "--topics", "/cam", "/seg",
                              "--storage", target], tmp_path / "record.log")
    replay = None
    try:
        replay = rosproc.start([*CLI, "replay", str(bag), "--rate", "2", "--topic-map", "/image:=/cam",
                                "/segments_in:=/seg", "--wait-for", "/image", "/segments_in", "/clock"],
                               tmp_path / "replay.log")
        rosproc.spin_until(node, lambda: replay.poll() is not None, 120, "the replay to finish")
        assert "published 6 messages" in (tmp_path / "replay.log").read_text()
        rosproc.spin_until(node, lambda: len(clock) >= 6, 10, "/clock")
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
        assert replay is None or rosproc.stop(replay) == 0, (tmp_path / "replay.log").read_text()
        assert rosproc.stop(recorder) == 0, (tmp_path / "record.log").read_text()
    assert [c.clock.sec * 10**9 + c.clock.nanosec for c in clock[-6:]] == [m[2] for m in messages]
    recorded = read_messages(tmp_path / "out")
    images = [msg for topic, _, msg in recorded if topic == "/cam"]
    assert len(images) == 5
    for got, (_, _, stamp, want) in zip(images, messages):
        assert (got.header.stamp.sec, got.header.stamp.nanosec) == divmod(stamp, 10**9)
        assert (got.encoding, got.height, got.width, got.step) == (want.encoding, want.height, want.width, want.step)
        assert bytes(got.data) == bytes(want.data)
    (seg,) = [msg for topic, _, msg in recorded if topic == "/seg"]
    assert seg.vocabulary_version == 3 and seg.instances[0].class_name == "boat"
    np.testing.assert_allclose(seg.instances[0].embedding, [0.6, 0.8], rtol=1e-6)
    # Real-time pacing: 4 bag periods of 100 ms at rate 2 take about 200 ms of receive time.
    times = [t for topic, t, _ in recorded if topic == "/cam"]
    assert 0.15 < (times[-1] - times[0]) / 1e9 < 1.0


def test_bag_replayed_through_the_node_gives_one_segmentation_per_frame(tmp_path, ros_isolation):
    frames = 6
    bag = write_bag(tmp_path / "camera", frame_messages(frames, 400_000_000, proposals=True), "mcap")
    with node_session(tmp_path, write_params(tmp_path / "params.yaml"), name="bag") as (node, peer):
        peer.wait_active()
        recorder = rosproc.start([*CLI, "record", str(tmp_path / "outputs"), "--topics", "/maskclip/segments"],
                                 tmp_path / "record.log")
        try:
            _through_the_node(peer, bag, frames, tmp_path)
        finally:
            assert rosproc.stop(recorder) == 0, (tmp_path / "record.log").read_text()
    recorded = read_messages(tmp_path / "outputs")
    stamps = [divmod(T0 + i * 400_000_000, 10**9) for i in range(frames)]
    got = sorted((m.header.stamp.sec, m.header.stamp.nanosec) for _, _, m in recorded)
    assert got == stamps, (tmp_path / "record.log").read_text()
    assert all(m.instances and m.height == 64 for _, _, m in recorded)


def _through_the_node(peer, bag: Path, frames: int, logs: Path) -> None:
    """Replay `bag` (the node and the recorder listening) and wait for every frame's segmentation."""
    record_log = logs / "record.log"
    peer.spin_until(lambda: READY_LINE in record_log.read_text(), 60, "the recorder to match the node's publisher")
    replay = rosproc.start([*CLI, "replay", str(bag)], logs / "replay.log")
    try:
        peer.spin_until(lambda: replay.poll() is not None, 120, "the replay to finish")
    finally:
        assert rosproc.stop(replay) == 0, (logs / "replay.log").read_text()
    peer.spin_until(lambda: len(peer.outputs["segments"]) == frames, 30, "every frame's segmentation")
    assert int(peer.latest_diagnostics()["frames_published"]) == frames, "one output per processed frame"


def test_replay_loop_repeats_until_interrupted(tmp_path, ros_isolation):
    bag = write_bag(tmp_path / "loop", frame_messages(2, 50_000_000, proposals=False), "sqlite3")
    rclpy.init()
    node = rclpy.create_node("loop_test")
    images = []
    node.create_subscription(Image, "/image", images.append, QoSProfile(depth=50))
    replay = rosproc.start([*CLI, "replay", str(bag), "--loop", "--rate", "4"], tmp_path / "replay.log")
    try:
        rosproc.spin_until(node, lambda: len(images) >= 7, 60, "the bag played more than three times")
        assert replay.poll() is None, "still looping"
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
        assert rosproc.stop(replay) == 0, (tmp_path / "replay.log").read_text()
    stamps = [(m.header.stamp.sec, m.header.stamp.nanosec) for m in images]
    assert stamps[:4] == stamps[2:6] and stamps[0] != stamps[1], "the same two frames again and again"


def test_recorder_waits_for_a_publisher_and_its_match_before_it_is_ready(tmp_path, ros_isolation):
    """A topic seen only through another subscriber is not subscribed yet (its QoS would be a guess); once a
    reliable publisher appears the recorder subscribes reliable, and is ready only when DDS has matched it."""
    rclpy.init()
    try:
        node, other = rclpy.create_node("recorder_under_test"), rclpy.create_node("talker")
        other.create_subscription(String, "/chatter", lambda _: None, 10)
        recorder = Recorder(node, tmp_path / "bag", ["/chatter"], storage="mcap")
        rosproc.spin_until(node, lambda: "/chatter" in dict(node.get_topic_names_and_types()), 30, "the topic")
        for _ in range(5):  # a few timer ticks with the topic in the graph but no publisher
            rclpy.spin_once(node, timeout_sec=0.15)
        assert not recorder.connections and not recorder.ready
        publisher = other.create_publisher(String, "/chatter", QoSProfile(depth=10))
        rosproc.spin_until(node, lambda: recorder.ready, 30, "the recorder to match the publisher")
        (info,) = [i for i in node.get_subscriptions_info_by_topic("/chatter") if i.node_name == node.get_name()]
        assert info.qos_profile.reliability == ReliabilityPolicy.RELIABLE
        publisher.publish(String(data="after ready"))
        rosproc.spin_until(node, lambda: recorder.total == 1, 30, "the message")
        recorder.close()
    finally:
        rclpy.try_shutdown()
    assert [m.data for _, _, m in read_messages(tmp_path / "bag")] == ["after ready"]
