"""Issue 2: the interfaces work across two processes (publish/subscribe and a SetVocabulary call)."""
import rclpy
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

import rosproc
from helpers.interface_peer import sample_segmentation
from maskclip_ros.msg import Segmentation
from maskclip_ros.srv import SetVocabulary

pytestmark = __import__("pytest").mark.ros


def test_segmentation_and_set_vocabulary_cross_process(tmp_path):
    peer = rosproc.start(["test/helpers/interface_peer.py"], tmp_path / "peer.log",
                         env={**__import__("os").environ, "PYTHONPATH": str(rosproc.REPO / "test")})
    rclpy.init()
    node = rclpy.create_node("interface_test")
    try:
        received = []
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        node.create_subscription(Segmentation, "segments", received.append, latched)
        rosproc.spin_until(node, lambda: received, 30, "the peer's Segmentation message")

        got, want = received[0], sample_segmentation()
        assert got.header == want.header
        assert (got.vocabulary_version, got.height, got.width) == (7, 480, 640)
        assert len(got.instances) == 2
        for g, w in zip(got.instances, want.instances):
            assert (g.id, g.class_index, g.class_name, g.is_thing, g.area) == \
                   (w.id, w.class_index, w.class_name, w.is_thing, w.area)
            assert g.score == w.score and g.bbox == w.bbox
            assert list(g.embedding) == list(w.embedding)

        client = node.create_client(SetVocabulary, "set_vocabulary")
        rosproc.spin_until(node, client.service_is_ready, 30, "the set_vocabulary service")
        future = client.call_async(SetVocabulary.Request(class_names=["boat", "water"], is_thing=[True, False]))
        rosproc.spin_until(node, future.done, 30, "the SetVocabulary reply")
        reply = future.result()
        assert reply.success and reply.version == 8
        assert list(reply.class_names) == ["boat", "water"] and reply.message == "2 classes"
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
        assert rosproc.stop(peer) == 0, (tmp_path / "peer.log").read_text()
