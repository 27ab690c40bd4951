"""The node's subscriptions: camera frames (raw or compressed); with the external proposals backend,
proposal label images paired with frames by stamp; with depth enabled, registered depth images (kept to
pair with frames by nearest stamp) and the camera_info of the colour camera. Bad messages are dropped with a
throttled warning and counted; good frames are handed to the inference worker's one-slot buffer."""
from __future__ import annotations

import time

from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from maskclip_ros.ros import qos
from maskclip_ros.ros.conversions import ImageError
from maskclip_ros.ros.frames import (Frame, LatestFrameSlot, StampedBuffer, StampPairer, labels_to_masks,
                                     stamp_key, stamp_seconds)
from maskclip_ros.ros.interface import CAMERA_INFO_TOPIC, COMPRESSED_TOPIC, DEPTH_TOPIC, IMAGE_TOPIC, PROPOSALS_TOPIC

WARN_EVERY_S = 1.0  # throttle of the bad-input warnings


class Inputs:
    """Subscribes on ``node`` (activate); frames go into ``slot``; ``close`` unsubscribes."""

    def __init__(self, node, *, converter, stats, slot: LatestFrameSlot, compressed: bool, external: bool,
                 external_queue: int, depth_queue: int | None, group) -> None:
        self._node, self._converter, self._stats, self._slot = node, converter, stats, slot
        topic, msg_type = (COMPRESSED_TOPIC, CompressedImage) if compressed else (IMAGE_TOPIC, Image)
        self.frames = self._subscribe(msg_type, topic, self._on_frame, group)
        self._pairer = self.proposals = self.depth = self.camera_info = None
        if external:
            self._pairer = StampPairer(external_queue, on_evict=self._on_unpaired)
            self.proposals = self._subscribe(Image, PROPOSALS_TOPIC, self._on_proposals, group)
        self._depths = StampedBuffer(depth_queue) if depth_queue else None
        self.intrinsics = None  # CameraIntrinsics of the latest valid camera_info
        if depth_queue:
            self.depth = self._subscribe(Image, DEPTH_TOPIC, self._on_depth, group)
            self.camera_info = self._subscribe(CameraInfo, CAMERA_INFO_TOPIC, self._on_camera_info, group)

    def _subscribe(self, msg_type, topic: str, callback, group):
        return self._node.create_subscription(
            msg_type, topic, callback, qos.SENSOR, callback_group=group,
            qos_overriding_options=QoSOverridingOptions.with_default_policies(),
            event_callbacks=SubscriptionEventCallbacks(
                incompatible_qos=qos.incompatible_qos_warning(self._node, topic, "subscription")))

    def close(self) -> None:
        for sub in (self.frames, self.proposals, self.depth, self.camera_info):
            if sub is not None:
                self._node.destroy_subscription(sub)
        self.frames = self.proposals = self.depth = self.camera_info = None

    def depth_for(self, frame: Frame, tolerance_s: float, wait_s: float = 0.0):
        """(depth (H, W) float32 metres, CameraIntrinsics) of the depth image nearest the frame's stamp
        within ``tolerance_s``, waiting up to ``wait_s`` for it while a depth publisher is there; None when
        depth is off, or (counted, warned) nothing pairs / no camera_info."""
        subscription = self.depth  # None once closed (the worker may still finish a frame)
        if self._depths is None or subscription is None:
            return None
        expected = len(self._depths) or subscription.get_publisher_count() > 0
        depth = self._depths.nearest(stamp_seconds(frame.header), tolerance_s, wait_s if expected else 0.0)
        if depth is None:
            if expected:
                self._stats.count("depth_unpaired")
                self._warn(self._unpaired_reason(frame, tolerance_s, wait_s))
            return None
        if self.intrinsics is None:
            self._stats.count("camera_info_missing")
            self._warn("depth arrives but no valid camera_info yet: 2D outputs only")
            return None
        return depth, self.intrinsics

    def _unpaired_reason(self, frame: Frame, tolerance_s: float, wait_s: float) -> str:
        """Why no depth paired with ``frame``: evicted (the node lags more than the queue holds) or stamps."""
        head = f"no depth image within {tolerance_s:g} s of frame {stamp_key(frame.header)}"
        if self._depths.outran(stamp_seconds(frame.header), tolerance_s):
            return (f"{head}: all {len(self._depths)} kept depth images are newer (the frame waited longer than "
                    "the queue holds); 2D outputs only; raise depth.queue")
        return (f"{head} ({len(self._depths)} kept, waited {wait_s:g} s): 2D outputs only; check the depth "
                "stamps or raise depth.stamp_tolerance_s")

    def _on_depth(self, msg: Image) -> None:
        try:
            depth = self._converter.image_to_depth(msg)  # (H, W) float32 metres, NaN = invalid
        except ImageError as error:
            self._stats.count("depth_bad")
            self._warn(f"dropped a bad depth image: {error}")
            return
        self._depths.put(stamp_seconds(msg.header), depth)

    def _on_camera_info(self, msg: CameraInfo) -> None:
        from maskclip_ros.tracking.geometry import CameraIntrinsics, DepthError

        try:
            self.intrinsics = CameraIntrinsics.from_k(list(msg.k), int(msg.width), int(msg.height))
        except DepthError as error:
            self._stats.count("camera_info_bad")
            self._warn(f"ignored a bad camera_info: {error}")

    def _warn(self, text: str) -> None:
        self._node.get_logger().warning(text, throttle_duration_sec=WARN_EVERY_S)

    def _on_frame(self, msg: Image | CompressedImage) -> None:
        received = time.monotonic()
        self._stats.count("received", received)
        try:
            rgb = (self._converter.compressed_to_rgb(msg) if isinstance(msg, CompressedImage)
                   else self._converter.image_to_rgb(msg))
        except ImageError as error:
            self._stats.count("bad", received)
            self._warn(f"dropped a bad frame (stamp {stamp_key(msg.header)}): {error}")
            return
        frame = Frame(header=msg.header, rgb=rgb, received=received)
        if self._pairer is None:
            self._hand_over(frame)
        elif (pair := self._pairer.add("frame", stamp_key(msg.header), frame)) is not None:
            self._hand_over(*pair)

    def _on_proposals(self, msg: Image) -> None:
        try:
            masks = labels_to_masks(self._converter.image_to_labels(msg))  # (M, H, W) bool
        except ImageError as error:
            self._stats.count("bad")
            self._warn(f"dropped a bad proposals image: {error}")
            return
        if (pair := self._pairer.add("proposals", stamp_key(msg.header), masks)) is not None:
            self._hand_over(*pair)

    def _on_unpaired(self, side: str) -> None:
        """A frame (or a proposals image) waited too long for its partner: the frame counts as dropped."""
        if side == "frame":
            self._stats.count("dropped")

    def _hand_over(self, frame: Frame, masks=None) -> None:
        if masks is not None:
            if masks.shape[1:] != frame.rgb.shape[:2]:
                self._stats.count("bad")
                self._warn(f"dropped a frame: proposals {masks.shape[1:]} do not match the image {frame.rgb.shape[:2]}")
                return
            frame = Frame(frame.header, frame.rgb, frame.received, masks)
        if self._slot.put(frame):
            self._stats.count("dropped")
