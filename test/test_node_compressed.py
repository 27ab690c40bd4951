"""Issue 7, cross-process: the node with compressed_input (jpeg/png CompressedImage frames): corrupt frames
are dropped and counted, the node keeps serving, and a publisher with incompatible QoS is reported."""
import pytest
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage

from helpers.node_harness import check_segmentation, node_session, scene, write_params

pytestmark = pytest.mark.ros


def test_compressed_input_bad_jpeg_and_qos_warning(tmp_path, ros_isolation):
    """compressed_input: jpeg/png frames work, corrupt ones are dropped and counted; a publisher whose QoS
    cannot match the (overridden) subscription is reported in the log."""
    params = write_params(tmp_path / "params.yaml", {
        "compressed_input": True,
        "qos_overrides": {"/image/compressed": {"subscription": {"reliability": "reliable"}}}})
    with node_session(tmp_path, params, name="compressed") as (node, peer):
        peer.wait_active(compressed=True)
        rgb, labels = scene(31)
        for stamp, fmt in (((1, 0), "jpeg"), ((2, 0), "png")):
            peer.publish(rgb, labels, stamp, compressed=fmt)
            check_segmentation(*peer.wait_outputs(stamp), labels, list(peer.vocabularies[-1].class_names))
        good = bytes(peer.conv.rgb_to_compressed(rgb, fmt="jpeg").data)
        bad = [("jpeg", good[: len(good) // 2]), ("jpeg", b"\xff\xd8 not really a jpeg" * 20),
               ("png", b"\x89PNG garbage" * 10), ("tiff", good), ("jpeg", b"")]
        for count, (fmt, data) in enumerate(bad, start=1):
            msg = CompressedImage(format=fmt)
            msg.data, msg.header.stamp.sec = data, 10 + count
            peer.compressed_pub.publish(msg)
            peer.spin_until(lambda: peer.diagnostics and int(peer.diagnostics[-1]["dropped_bad_frames"]) >= count,
                            20, f"corrupt frame {count} in diagnostics")
        assert int(peer.latest_diagnostics()["dropped_bad_frames"]) == len(bad)
        peer.publish(rgb, labels, (30, 0), compressed="jpeg")
        peer.wait_outputs((30, 0))
        # A best-effort camera cannot feed a subscription overridden to reliable: the node says so.
        peer.node.create_publisher(CompressedImage, "/image/compressed",
                                   QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT))
        peer.spin_until(lambda: "incompatible QoS on /image/compressed" in node.log(), 20, "the QoS warning")
        assert "qos_overrides./image/compressed" in node.log()
