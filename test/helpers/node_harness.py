"""Harness of the cross-process node tests: params files, the node in its own process, and a peer node in
the test process that publishes frames (with external proposals) and collects the node's outputs.

Every wait is a condition with a timeout (rosproc.spin_until), never a fixed sleep."""
from __future__ import annotations

import contextlib
import time
from pathlib import Path

import numpy as np
import rclpy
import yaml
from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rcl_interfaces.srv import SetParameters
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image

import rosproc
from maskclip_ros.config import merge
from maskclip_ros.ros.interface import parse_diagnostics
from maskclip_ros.msg import Segmentation
from maskclip_ros.msg import Vocabulary as VocabularyMsg
from maskclip_ros.ros.conversions import ImageConverter
from maskclip_ros.srv import SetVocabulary

NODE = "/maskclip"
# A tiny random-init CLIP with external proposals (the masks the test publishes): starts in seconds,
# segments a 64x96 frame in milliseconds. Every proposal is kept (threshold 0) so outputs are predictable.
TINY_PARAMS = {
    "clip": {"model_name": "maskclip-ros-test-tiny", "checkpoint": "", "random_init": True, "short_side": 64},
    "merge": {"object_mask_threshold": 0.0, "overlap_threshold": 0.0, "min_area": 1},
    "proposals": {"backend": "external", "min_area": 1},
    "num_threads": 1,
    "diagnostics": {"period": 0.2, "window": 30.0},
    # Reliable inputs (a reliable camera driver, matched through the standard QoS override parameters):
    # with best effort the first frame after discovery can be lost, and these tests count every frame.
    # The overload test keeps the default sensor-data QoS.
    "qos_overrides": {topic: {"subscription": {"reliability": "reliable"}}
                      for topic in ("/image", "/proposals", "/cam/image_raw")},
}
RELIABLE = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


def write_params(path: Path, *overrides: dict) -> Path:
    """A ROS 2 params file holding TINY_PARAMS updated with `overrides` (nested dicts)."""
    params = TINY_PARAMS
    for extra in overrides:
        params = merge(params, extra)
    path.write_text(yaml.safe_dump({"/**": {"ros__parameters": params}}))
    return path


def scene(seed: int, height: int = 64, width: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """A frame and its proposal labels: (H, W, 3) uint8 RGB and (H, W) uint8 ids 1..K of K regions
    (two background bands and 2-3 rectangles, each region one flat colour)."""
    rng = np.random.default_rng(seed)
    labels = np.ones((height, width), np.uint8)
    labels[height // 2:] = 2
    for k in range(3 + seed % 2):
        h, w = rng.integers(8, height // 2), rng.integers(8, width // 3)
        y, x = rng.integers(0, height - h), rng.integers(0, width - w)
        labels[y:y + h, x:x + w] = 3 + k
    colours = rng.integers(0, 256, (labels.max() + 1, 3), dtype=np.uint8)
    return colours[labels], labels


def check_segmentation(panoptic, semantic, msg, labels, class_names):
    """The three outputs agree with each other and with the proposals they were made from."""
    assert (msg.height, msg.width) == panoptic.shape == semantic.shape == labels.shape
    ids = [inst.id for inst in msg.instances]
    assert len(set(ids)) == len(ids) and 0 not in ids
    assert set(np.unique(panoptic).tolist()) == set(ids), "instance ids are exactly the panoptic ids"
    for inst in msg.instances:
        pixels = panoptic == inst.id
        ys, xs = np.nonzero(pixels)
        assert inst.area == pixels.sum()
        bbox = (inst.bbox.x_offset, inst.bbox.y_offset, inst.bbox.width, inst.bbox.height)
        assert bbox == (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
        assert np.all(semantic[pixels] == inst.class_index + 1)
        assert inst.class_name == class_names[inst.class_index]
        assert 0.0 <= inst.score <= 1.0 and len(inst.embedding) == 0
    assert np.all(semantic[panoptic == 0] == 0)
    # Every proposal region (flat colour) ends up inside one segment: the node adds no pixels of its own.
    for region in np.unique(labels):
        assert len(np.unique(panoptic[labels == region])) == 1
    things = {inst.id for inst in msg.instances if inst.is_thing}
    for seg_id in things:  # a thing is one proposal, never a merge of several
        assert len(np.unique(labels[panoptic == seg_id])) == 1


class NodeProcess:
    """`maskclip-ros node --params-file FILE [--ros-args ...]` in its own session; stop() sends SIGINT."""

    def __init__(self, tmp_path: Path, params_file: Path, ros_args: tuple[str, ...] = (), name: str = "node"):
        self.log_path = tmp_path / f"{name}.log"
        args = ["-m", "maskclip_ros.cli", "node", "--params-file", str(params_file)]
        self.proc = rosproc.start(args + (["--ros-args", *ros_args] if ros_args else []), self.log_path)

    def log(self) -> str:
        return self.log_path.read_text()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def rss_mb(self) -> float:
        """Resident memory of the node process in MiB (Linux /proc)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("VmRSS not found")

    def stop(self) -> int:
        return rosproc.stop(self.proc)


class Peer:
    """The test side: publishes frames and proposals, collects outputs by stamp, calls services."""

    def __init__(self, name: str = "node_test_peer", node_ns: str = NODE, image_topic: str = "/image"):
        self.node = rclpy.create_node(name)
        self.ns = node_ns
        self.conv = ImageConverter(prefer_cv_bridge=False)
        self.outputs: dict[str, dict[tuple[int, int], tuple[object, float]]] = {
            "panoptic": {}, "semantic": {}, "segments": {}}  # no overlay: it is drawn only for listeners
        self.vocabularies: list[VocabularyMsg] = []
        self.diagnostics: list[dict] = []  # parsed by maskclip_ros.ros.interface.parse_diagnostics
        self._output_subscriptions = [
            self.node.create_subscription(Segmentation if key == "segments" else Image, f"{node_ns}/{key}",
                                          self._collector(key), RELIABLE) for key in self.outputs]
        self.node.create_subscription(VocabularyMsg, f"{node_ns}/vocabulary", self.vocabularies.append, LATCHED)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, RELIABLE)
        self.image_pub = self.node.create_publisher(Image, image_topic, RELIABLE)
        self.compressed_pub = self.node.create_publisher(CompressedImage, image_topic + "/compressed", RELIABLE)
        self.proposals_pub = self.node.create_publisher(Image, "/proposals", RELIABLE)

    def _collector(self, key: str):
        def collect(msg) -> None:
            stamp = (msg.header.stamp.sec, msg.header.stamp.nanosec)
            self.outputs[key].setdefault(stamp, (msg, time.monotonic()))
        return collect

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        values = parse_diagnostics(msg, self.ns)
        if values is not None:
            self.diagnostics.append(values)

    def spin_until(self, condition, timeout: float, what: str) -> None:
        rosproc.spin_until(self.node, condition, timeout, what)

    def wait_active(self, timeout: float = 90.0, compressed: bool = False) -> None:
        """Until the node subscribes to our frames and proposals and we hear its outputs and vocabulary. Matched
        counts (DDS), not the graph's view: an output published before the match would not reach us."""
        frames = self.compressed_pub if compressed else self.image_pub
        self.spin_until(lambda: frames.get_subscription_count() > 0 and self.proposals_pub.get_subscription_count() > 0
                        and all(s.get_publisher_count() > 0 for s in self._output_subscriptions)
                        and self.vocabularies, timeout, "the node to become active")

    def publish(self, rgb: np.ndarray, labels: np.ndarray | None, stamp: tuple[int, int], *,
                compressed: str = "", frame_id: str = "camera") -> float:
        """Publish a frame (Image, or CompressedImage in format `compressed`) and, if given, its proposals
        (mono8 label image) with the same header; returns the publish time (time.monotonic)."""
        header = Image().header
        header.stamp.sec, header.stamp.nanosec = stamp
        header.frame_id = frame_id
        if labels is not None:
            self.proposals_pub.publish(self.conv.labels_to_image(labels, "mono8", header))
        sent = time.monotonic()
        if compressed:
            self.compressed_pub.publish(self.conv.rgb_to_compressed(rgb, header, compressed))
        else:
            self.image_pub.publish(self.conv.rgb_to_image(rgb, header))
        return sent

    def wait_outputs(self, stamp: tuple[int, int],
                     timeout: float = 30.0) -> tuple[np.ndarray, np.ndarray, Segmentation]:
        """(panoptic (H, W) int32, semantic (H, W) uint16, Segmentation) of the frame with `stamp`."""
        keys = ("panoptic", "semantic", "segments")
        self.spin_until(lambda: all(stamp in self.outputs[k] for k in keys), timeout, f"outputs of {stamp}")
        panoptic, semantic, segments = (self.outputs[k][stamp][0] for k in keys)
        for msg in (panoptic, semantic, segments):
            assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == stamp
        return self.conv.image_to_labels(panoptic), self.conv.image_to_labels(semantic), segments

    def latest_diagnostics(self, timeout: float = 10.0) -> dict:
        """The values of the next diagnostics message the node publishes."""
        count = len(self.diagnostics)
        self.spin_until(lambda: len(self.diagnostics) > count, timeout, "a diagnostics message")
        return self.diagnostics[-1]

    def call(self, srv_type, name: str, request, timeout: float = 30.0):
        client = self.node.create_client(srv_type, name)
        try:
            self.spin_until(client.service_is_ready, timeout, f"service {name}")
            future = client.call_async(request)
            self.spin_until(future.done, timeout, f"the reply of {name}")
            return future.result()
        finally:
            self.node.destroy_client(client)

    def set_vocabulary(self, names, is_thing=(), templates=(), service: str | None = None):
        request = SetVocabulary.Request(class_names=list(names), is_thing=list(is_thing),
                                        prompt_templates=list(templates))
        return self.call(SetVocabulary, service or f"{self.ns}/set_vocabulary", request)

    def set_parameters(self, **values) -> list:
        """Set node parameters (dots written as __ in keyword names); returns the SetParametersResults."""
        params = [Parameter(name.replace("__", "."), value=value).to_parameter_msg()
                  for name, value in values.items()]
        return self.call(SetParameters, f"{self.ns}/set_parameters", SetParameters.Request(parameters=params)).results

    def state(self) -> str:
        return self.call(GetState, f"{self.ns}/get_state", GetState.Request()).current_state.label

    def transition(self, transition_id: int) -> bool:
        request = ChangeState.Request(transition=Transition(id=transition_id))
        return self.call(ChangeState, f"{self.ns}/change_state", request).success

    def close(self) -> None:
        self.node.destroy_node()


@contextlib.contextmanager
def node_session(tmp_path: Path, params_file: Path, ros_args: tuple[str, ...] = (), name: str = "node",
                 image_topic: str = "/image"):
    """Start the node process and a Peer; on exit close both and check the node stopped cleanly (exit 0
    after SIGINT). Yields (NodeProcess, Peer)."""
    rclpy.init()
    node = peer = None
    try:
        node = NodeProcess(tmp_path, params_file, ros_args, name)
        peer = Peer(f"{name}_peer", image_topic=image_topic)
        yield node, peer
    finally:
        if peer is not None:
            peer.close()
        rclpy.try_shutdown()
        if node is not None:
            assert node.stop() == 0, node.log()


__all__ = ["NODE", "TINY_PARAMS", "NodeProcess", "Peer", "node_session", "Transition", "check_segmentation", "scene",
           "write_params"]
