"""The node's subscriptions: camera frames (raw or compressed) and, with the external proposals backend,
proposal label images paired with frames by stamp. Bad messages are dropped with a throttled warning and
counted; good frames are handed to the inference worker's one-slot buffer."""
from __future__ import annotations

import time

from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CompressedImage, Image

from maskclip_ros.ros import qos
from maskclip_ros.ros.conversions import ImageError
from maskclip_ros.ros.frames import Frame, LatestFrameSlot, StampPairer, labels_to_masks, stamp_key
from maskclip_ros.ros.interface import COMPRESSED_TOPIC, IMAGE_TOPIC, PROPOSALS_TOPIC

WARN_EVERY_S = 1.0  # throttle of the bad-input warnings


class Inputs:
    """Subscribes on ``node`` (activate); frames go into ``slot``; ``close`` unsubscribes."""

    def __init__(self, node, *, converter, stats, slot: LatestFrameSlot, compressed: bool, external: bool,
                 external_queue: int, group) -> None:
        self._node, self._converter, self._stats, self._slot = node, converter, stats, slot
        topic, msg_type = (COMPRESSED_TOPIC, CompressedImage) if compressed else (IMAGE_TOPIC, Image)
        self.frames = self._subscribe(msg_type, topic, self._on_frame, group)
        self._pairer = self.proposals = None
        if external:
            self._pairer = StampPairer(external_queue, on_evict=self._on_unpaired)
            self.proposals = self._subscribe(Image, PROPOSALS_TOPIC, self._on_proposals, group)

    def _subscribe(self, msg_type, topic: str, callback, group):
        return self._node.create_subscription(
            msg_type, topic, callback, qos.SENSOR, callback_group=group,
            qos_overriding_options=QoSOverridingOptions.with_default_policies(),
            event_callbacks=SubscriptionEventCallbacks(
                incompatible_qos=qos.incompatible_qos_warning(self._node, topic, "subscription")))

    def close(self) -> None:
        for sub in (self.frames, self.proposals):
            if sub is not None:
                self._node.destroy_subscription(sub)
        self.frames = self.proposals = None

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
