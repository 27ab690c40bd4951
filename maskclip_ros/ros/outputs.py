"""The node's publishers: one frame's results out (panoptic, semantic, segments, overlay; with vision_msgs
the 2D detections; with depth the 3D detections, RViz markers and optionally the labelled cloud), the
latched vocabulary (and label info), and /diagnostics. Every output carries the input image's header."""
from __future__ import annotations

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.event_handler import PublisherEventCallbacks
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import Image, PointCloud2
from std_msgs.msg import Header
from visualization_msgs.msg import MarkerArray

from maskclip_ros.msg import Segmentation
from maskclip_ros.msg import Vocabulary as VocabularyMsg
from maskclip_ros.ros import markers, messages, qos, vision
from maskclip_ros.ros.interface import DEPTH_OUTPUT_TOPICS, DIAGNOSTICS_TOPIC, OUTPUT_TOPICS, VISION_TOPICS
from maskclip_ros.ros.overlay import draw_overlay

TYPES = {"panoptic": Image, "semantic": Image, "segments": Segmentation, "overlay": Image,
         "vocabulary": VocabularyMsg, "markers": MarkerArray, "cloud": PointCloud2}
LATCHED = ("vocabulary", "label_info")
PANOPTIC_ENCODING, SEMANTIC_ENCODING = "32SC1", "mono16"


class Outputs:
    """Creates the publishers on ``node`` (activate) and publishes into them; ``close`` destroys them."""

    def __init__(self, node, *, depth: int, converter, with_depth: bool, cloud: bool) -> None:
        self._node, self._converter, self._depth = node, converter, depth
        self._pub = {}
        topics, types = dict(OUTPUT_TOPICS), dict(TYPES)
        if with_depth:
            topics.update({k: v for k, v in DEPTH_OUTPUT_TOPICS.items() if k != "cloud" or cloud})
        if vision.available():
            from vision_msgs.msg import Detection2DArray, Detection3DArray, LabelInfo

            types.update(detections=Detection2DArray, detections_3d=Detection3DArray, label_info=LabelInfo)
            topics.update({k: v for k, v in VISION_TOPICS.items() if k != "detections_3d" or with_depth})
        for key, topic in topics.items():
            self._add(key, topic, types[key])
        self._pub["diagnostics"] = node.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, qos.DIAGNOSTICS_DEPTH)

    def _add(self, key: str, topic: str, msg_type) -> None:
        self._pub[key] = self._node.create_publisher(
            msg_type, topic, qos.latched() if key in LATCHED else qos.reliable(self._depth),
            qos_overriding_options=QoSOverridingOptions.with_default_policies(),
            event_callbacks=PublisherEventCallbacks(
                incompatible_qos=qos.incompatible_qos_warning(self._node, topic, "publisher")))

    def result(self, frame, result, tracks, *, with_embeddings: bool, overlay, depth=None, cloud_stride=1) -> bool:
        """Publish one frame's outputs; ``tracks``: one messages.SegmentTrack per segment; ``depth``: the
        frame's (depth metres, intrinsics) or None. The overlay is drawn only while someone subscribes
        (returns whether it was)."""
        header, conv, pub = frame.header, self._converter, self._pub
        pub["panoptic"].publish(conv.labels_to_image(result.panoptic, PANOPTIC_ENCODING, header))
        pub["semantic"].publish(conv.labels_to_image(messages.semantic_labels(result.semantic), SEMANTIC_ENCODING,
                                                     header))
        pub["segments"].publish(messages.segmentation_msg(result, header, with_embeddings, tracks))
        if "detections" in pub:
            pub["detections"].publish(vision.detections_msg(result, header, tracks))
        if depth is not None:
            self._depth_outputs(frame, result, tracks, depth, cloud_stride)
        if pub["overlay"].get_subscription_count() == 0:
            return False
        picture = draw_overlay(frame.rgb, result.panoptic, result.semantic, result.segments,
                               result.vocabulary.class_names, alpha=overlay.alpha, labels=overlay.labels,
                               track_ids=[t.track_id for t in tracks])
        pub["overlay"].publish(conv.rgb_to_image(picture, header))
        return True

    def _depth_outputs(self, frame, result, tracks, depth, cloud_stride: int) -> None:
        header, pub = frame.header, self._pub
        if "detections_3d" in pub:
            pub["detections_3d"].publish(vision.detections_3d_msg(result, header, tracks))
        if "markers" in pub:
            pub["markers"].publish(markers.markers_msg(result, header, tracks))
        if "cloud" in pub and pub["cloud"].get_subscription_count() > 0:
            from maskclip_ros.tracking.geometry import resize_nearest

            depth_m, intrinsics = depth
            h, w = result.panoptic.shape
            if depth_m.shape != (h, w):  # the cloud is on the frame's pixel grid
                depth_m, intrinsics = resize_nearest(depth_m, h, w), intrinsics.scaled_to(w, h)
            pub["cloud"].publish(markers.cloud_msg(result, header, tracks, frame.rgb, depth_m, intrinsics,
                                                   cloud_stride))

    def vocabulary(self, vocabulary, threshold: float) -> None:
        """The active vocabulary on the latched ~/vocabulary (and ~/label_info), stamped now."""
        header = Header(stamp=self._node.get_clock().now().to_msg())
        self._pub["vocabulary"].publish(messages.vocabulary_msg(vocabulary, header))
        if "label_info" in self._pub:
            self._pub["label_info"].publish(vision.label_info_msg(vocabulary, header, threshold))

    def diagnostics(self, array: DiagnosticArray) -> None:
        self._pub["diagnostics"].publish(array)

    def close(self) -> None:
        for publisher in self._pub.values():
            self._node.destroy_publisher(publisher)
        self._pub.clear()
