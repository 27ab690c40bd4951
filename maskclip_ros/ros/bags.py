"""rosbag2 replay and record with the `rosbags` library (sqlite3 or mcap storage; no rosbag2_py needed).

Replay publishes each message's raw CDR bytes at the bag's pace (scaled by `rate`), after waiting until the
camera topics have subscribers, with /clock carrying the bag time for nodes that run with use_sim_time.
Record subscribes raw to the given topics once each has a publisher (QoS matched to it), writes what arrives,
and logs READY_LINE once DDS has matched every subscription to its publishers.
Our own message types (maskclip_ros/msg/*.msg) are registered in the typestore so bags holding them can be
written and read anywhere.
"""
from __future__ import annotations

import importlib
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, TypesysError, get_types_from_msg, get_typestore
from rosgraph_msgs.msg import Clock

from maskclip_ros.config import resource
from maskclip_ros.ros.spin import spin_until

PACKAGE = "maskclip_ros"
CAMERA_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
STORAGE = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
READY_LINE = "recorder ready"  # logged once every recorded topic is matched to its publishers


# Message packages outside rosbags' Kilted typestore whose definitions are registered when installed.
EXTRA_PACKAGES = ("vision_msgs",)


def matched_line(topic: str) -> str:
    """What the recorder logs once DDS has matched its subscription to `topic` with a publisher."""
    return f"{topic}: matched"


def typestore():
    """The ROS 2 Kilted typestore of rosbags plus maskclip_ros's own message types (and vision_msgs')."""
    store = get_typestore(Stores.ROS2_KILTED)
    dirs = {PACKAGE: resource("msg")}
    for package in EXTRA_PACKAGES:
        found = [p / "share" / package / "msg" for p in _prefixes() if (p / "share" / package / "msg").is_dir()]
        if found:
            dirs[package] = found[0]
    types = {}
    for package, folder in dirs.items():
        for path in sorted(folder.glob("*.msg")):
            types.update(get_types_from_msg(path.read_text(encoding="utf-8"), f"{package}/msg/{path.stem}"))
    store.register(types)
    return store


def _prefixes() -> list[Path]:
    import os

    return [Path(p) for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p] + [Path(sys.prefix)]


def message_class(msgtype: str):
    """'sensor_msgs/msg/Image' -> the rclpy message class."""
    package, kind, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{package}.{kind}"), name)


def parse_topic_map(pairs: Sequence[str]) -> dict[str, str]:
    """['/camera/image_raw:=/image', ...] -> {'/camera/image_raw': '/image'}."""
    mapping = {}
    for pair in pairs:
        source, sep, target = pair.partition(":=")
        if not sep or not source or not target:
            raise ValueError(f"topic map entry {pair!r} is not FROM:=TO")
        mapping[source] = target
    return mapping


def _wait(node: Node, condition, timeout: float) -> bool:
    """Spin until ``condition`` or ``timeout``; whether it held."""
    try:
        spin_until(node, condition, timeout, "subscribers")
    except TimeoutError:
        return False
    return True


class Replayer:
    """Publishes a bag in real time. Use `run()`; `published` counts the messages sent (without /clock)."""

    def __init__(self, node: Node, bag: Path, *, rate: float = 1.0, loop: bool = False,
                 topic_map: Mapping[str, str] | None = None, clock: bool = True,
                 wait_for: Sequence[str] | None = None, wait_timeout: float = 30.0,
                 min_subscribers: int = 1) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be > 0, got {rate}")
        self.node, self.bag, self.rate, self.loop, self.clock = node, Path(bag), rate, loop, clock
        self.topic_map = dict(topic_map or {})
        self.wait_for, self.wait_timeout, self.min_subscribers = wait_for, wait_timeout, min_subscribers
        self.published = 0

    def run(self) -> int:
        """Replay (once, or until interrupted with loop); returns the number of messages published."""
        with AnyReader([self.bag], default_typestore=typestore()) as reader:
            publishers = {c.topic: self.node.create_publisher(
                message_class(c.msgtype), self.topic_map.get(c.topic, c.topic), QoSProfile(depth=10))
                for c in reader.connections}
            clock = self.node.create_publisher(Clock, "/clock", QoSProfile(depth=10)) if self.clock else None
            self._wait_for_subscribers(reader, {**publishers, "/clock": clock} if clock else publishers)
            while True:
                self._play_once(reader, publishers, clock)
                if not self.loop:
                    break
            for publisher in [*publishers.values(), clock]:  # let reliable subscribers get the last ones
                if publisher is not None:
                    publisher.wait_for_all_acked(Duration(seconds=self.wait_timeout))
            return self.published

    def _wait_for_subscribers(self, reader, publishers) -> None:
        """Until every `wait_for` topic (default: the bag's camera topics; "/clock" may be named too)
        has `min_subscribers` subscribers, or wait_timeout."""
        wanted = self.wait_for if self.wait_for is not None else \
            [c.topic for c in reader.connections if c.msgtype in CAMERA_TYPES]
        missing = [t for t in wanted if t not in publishers]
        if missing:
            raise ValueError(f"--wait-for topics {missing} are not in the bag (topics: {sorted(publishers)})")
        waiting = [publishers[t] for t in wanted]
        ok = _wait(self.node, lambda: all(p.get_subscription_count() >= self.min_subscribers for p in waiting), self.wait_timeout)
        names = [p.topic_name for p in waiting]
        if not ok:
            self.node.get_logger().warning(f"no subscriber on {names} after {self.wait_timeout:.0f} s; "
                                           "publishing anyway")
        elif names:
            self.node.get_logger().info(f"subscribers present on {names}")

    def _play_once(self, reader, publishers, clock) -> None:
        start_wall, start_bag = time.monotonic(), None
        for connection, timestamp, rawdata in reader.messages():
            start_bag = timestamp if start_bag is None else start_bag
            delay = start_wall + (timestamp - start_bag) / 1e9 / self.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if clock is not None:
                clock.publish(Clock(clock=_time_msg(timestamp)))
            publishers[connection.topic].publish(bytes(rawdata))
            self.published += 1


def _time_msg(nanoseconds: int):
    from builtin_interfaces.msg import Time

    return Time(sec=nanoseconds // 1_000_000_000, nanosec=nanoseconds % 1_000_000_000)


class Recorder:
    """Writes the given topics to a new rosbag2 (`storage` "mcap" or "sqlite3"); topics are subscribed as
    soon as they appear in the graph (their type is taken from there). Call `close()` to finish the bag."""

    def __init__(self, node: Node, out: Path, topics: Sequence[str], storage: str = "mcap") -> None:
        if storage not in STORAGE:
            raise ValueError(f"storage must be one of {sorted(STORAGE)}, got {storage!r}")
        self.node = node
        self.topics = [node.resolve_topic_name(t) for t in topics]
        self.store = typestore()
        self.writer = Writer(Path(out), version=Writer.VERSION_LATEST, storage_plugin=STORAGE[storage])
        self.writer.open()
        self.connections: dict[str, object] = {}
        self.counts: dict[str, int] = {t: 0 for t in self.topics}
        self._subscriptions: dict[str, object] = {}
        self._matched: set[str] = set()
        self._timer = node.create_timer(0.1, self._on_timer)

    @property
    def ready(self) -> bool:
        """Every topic is subscribed (or skipped) and matched by DDS to at least one publisher."""
        return len(self.connections) == len(self.topics) and self._matched >= set(self._subscriptions)

    def _on_timer(self) -> None:
        self._subscribe_new_topics()
        self._log_new_matches()
        if self.ready:
            self.node.get_logger().info(f"{READY_LINE}: every publisher of {len(self._subscriptions)} topic(s) matched")
            self._timer.cancel()

    def _subscribe_new_topics(self) -> None:
        """Subscribe each topic once it has a publisher, so the subscription's QoS can match the publisher's
        (a topic seen only through another subscriber would otherwise be recorded best effort)."""
        types = dict(self.node.get_topic_names_and_types())
        for topic in self.topics:
            if topic in self.connections or topic not in types or not self.node.count_publishers(topic):
                continue
            msgtype = types[topic][0]
            qos = self._matching_qos(topic)
            try:
                self.connections[topic] = self.writer.add_connection(topic, msgtype, typestore=self.store)
            except TypesysError as error:  # a type whose definition is not installed here: skip the topic
                self.node.get_logger().warning(f"not recording {topic}: {error}")
                self.connections[topic] = None
                continue
            self._subscriptions[topic] = self.node.create_subscription(
                message_class(msgtype), topic, self._writer_for(topic), qos, raw=True)
            self.node.get_logger().info(f"recording {topic} ({msgtype})")

    def _log_new_matches(self) -> None:
        """The graph shows a subscription before DDS has matched it to the publishers; what is published in
        between is not delivered, so readiness waits for the match itself."""
        for topic, subscription in self._subscriptions.items():
            if topic not in self._matched and subscription.get_publisher_count() > 0:
                self._matched.add(topic)
                self.node.get_logger().info(f"{matched_line(topic)} {subscription.get_publisher_count()} publisher(s)")

    def _matching_qos(self, topic: str) -> QoSProfile:
        """Reliable / transient-local only when every publisher offers it (else best effort / volatile)."""
        infos = self.node.get_publishers_info_by_topic(topic)
        reliable = bool(infos) and all(i.qos_profile.reliability == ReliabilityPolicy.RELIABLE for i in infos)
        latched = bool(infos) and all(
            i.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for i in infos)
        return QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE if reliable
                          else ReliabilityPolicy.BEST_EFFORT,
                          durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)

    def _writer_for(self, topic: str):
        def write(data: bytes) -> None:
            self.writer.write(self.connections[topic], time.time_ns(), data)
            self.counts[topic] += 1
        return write

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def close(self) -> None:
        self.writer.close()


def read_messages(bag: Path, topics: Sequence[str] | None = None) -> list[tuple[str, int, object]]:
    """Every message of `bag` (optionally only `topics`) as (topic, bag timestamp ns, deserialised message)."""
    with AnyReader([Path(bag)], default_typestore=typestore()) as reader:
        connections = [c for c in reader.connections if topics is None or c.topic in topics]
        return [(c.topic, t, reader.deserialize(raw, c.msgtype))
                for c, t, raw in reader.messages(connections=connections)]


# ------------------------------------------------------------------------------------- writing bags
def stamp(store, nanoseconds: int):
    """A builtin_interfaces/Time of the rosbags typestore."""
    return store.types["builtin_interfaces/msg/Time"](sec=nanoseconds // 10**9, nanosec=nanoseconds % 10**9)


def header(store, nanoseconds: int, frame_id: str):
    return store.types["std_msgs/msg/Header"](stamp=stamp(store, nanoseconds), frame_id=frame_id)


def image_message(store, head, array: np.ndarray, encoding: str):
    """A rosbags sensor_msgs/Image of an (H, W) or (H, W, C) array in ``encoding``."""
    data = np.ascontiguousarray(array)
    return store.types["sensor_msgs/msg/Image"](
        header=head, height=data.shape[0], width=data.shape[1], encoding=encoding,
        is_bigendian=int(sys.byteorder == "big"), step=data.strides[0], data=data.view(np.uint8).reshape(-1))


def image_pixels(msg) -> np.ndarray:
    """A rosbags sensor_msgs/Image (32SC1, 16UC1, mono16 or rgb8) -> (H, W) or (H, W, 3) array."""
    dtype, channels = {"32SC1": (np.int32, 1), "16UC1": (np.uint16, 1), "mono16": (np.uint16, 1),
                       "32FC1": (np.float32, 1), "rgb8": (np.uint8, 3)}[msg.encoding]
    rows = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.step)
    pixels = rows[:, : msg.width * channels * np.dtype(dtype).itemsize].copy().view(dtype)
    return pixels.reshape(msg.height, msg.width, channels).squeeze(-1 if channels == 1 else ())


class BagWriter:
    """A new mcap rosbag2 written message by message: ``write(topic, msgtype, bag_ns, message)``."""

    def __init__(self, path: Path) -> None:
        self.store = typestore()
        self._writer = Writer(Path(path), version=Writer.VERSION_LATEST, storage_plugin=StoragePlugin.MCAP)
        self._connections: dict[str, object] = {}

    def __enter__(self) -> "BagWriter":
        self._writer.open()
        return self

    def __exit__(self, *exc) -> None:
        self._writer.close()

    def write(self, topic: str, msgtype: str, nanoseconds: int, message) -> None:
        if topic not in self._connections:
            self._connections[topic] = self._writer.add_connection(topic, msgtype, typestore=self.store)
        self._writer.write(self._connections[topic], nanoseconds, self.store.serialize_cdr(message, msgtype))
