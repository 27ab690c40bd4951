"""The node's publishers: one frame's results out (panoptic, semantic, segments, overlay), the latched
vocabulary, and /diagnostics. Every output carries the input image's header."""
from __future__ import annotations

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.event_handler import PublisherEventCallbacks
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from maskclip_ros.msg import Segmentation
from maskclip_ros.msg import Vocabulary as VocabularyMsg
from maskclip_ros.ros import messages, qos
from maskclip_ros.ros.interface import DIAGNOSTICS_TOPIC, OUTPUT_TOPICS
from maskclip_ros.ros.overlay import draw_overlay

TYPES = {"panoptic": Image, "semantic": Image, "segments": Segmentation, "overlay": Image,
         "vocabulary": VocabularyMsg}
LATCHED = ("vocabulary",)
PANOPTIC_ENCODING, SEMANTIC_ENCODING = "32SC1", "mono16"


class Outputs:
    """Creates the publishers on ``node`` (activate) and publishes into them; ``close`` destroys them."""

    def __init__(self, node, *, depth: int, converter) -> None:
        self._node, self._converter = node, converter
        self._pub = {}
        for key, topic in OUTPUT_TOPICS.items():
            self._pub[key] = node.create_publisher(
                TYPES[key], topic, qos.latched() if key in LATCHED else qos.reliable(depth),
                qos_overriding_options=QoSOverridingOptions.with_default_policies(),
                event_callbacks=PublisherEventCallbacks(
                    incompatible_qos=qos.incompatible_qos_warning(node, topic, "publisher")))
        self._pub["diagnostics"] = node.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, qos.DIAGNOSTICS_DEPTH)

    def result(self, frame, result, *, with_embeddings: bool, overlay) -> bool:
        """Publish one frame's segmentation; the overlay only while someone subscribes (returns whether it
        was drawn)."""
        header, conv = frame.header, self._converter
        self._pub["panoptic"].publish(conv.labels_to_image(result.panoptic, PANOPTIC_ENCODING, header))
        self._pub["semantic"].publish(conv.labels_to_image(messages.semantic_labels(result.semantic),
                                                           SEMANTIC_ENCODING, header))
        self._pub["segments"].publish(messages.segmentation_msg(result, header, with_embeddings))
        if self._pub["overlay"].get_subscription_count() == 0:
            return False
        picture = draw_overlay(frame.rgb, result.panoptic, result.semantic, result.segments,
                               result.vocabulary.class_names, alpha=overlay.alpha, labels=overlay.labels)
        self._pub["overlay"].publish(conv.rgb_to_image(picture, header))
        return True

    def vocabulary(self, vocabulary) -> None:
        """The active vocabulary on the latched ~/vocabulary, stamped now."""
        header = Header(stamp=self._node.get_clock().now().to_msg())
        self._pub["vocabulary"].publish(messages.vocabulary_msg(vocabulary, header))

    def diagnostics(self, array: DiagnosticArray) -> None:
        self._pub["diagnostics"].publish(array)

    def close(self) -> None:
        for publisher in self._pub.values():
            self._node.destroy_publisher(publisher)
        self._pub.clear()
