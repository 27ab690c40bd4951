"""Peer process for test_interfaces: publishes a two-instance Segmentation (transient local, so a late
subscriber still gets it) and serves SetVocabulary, echoing the request with version + 1. Exits on SIGINT."""
import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from maskclip_ros.msg import SegmentInstance, Segmentation
from maskclip_ros.srv import SetVocabulary


def sample_segmentation() -> Segmentation:
    """The message the test expects, field for field."""
    msg = Segmentation(vocabulary_version=7, height=480, width=640)
    msg.header.frame_id = "camera_optical"
    msg.header.stamp.sec, msg.header.stamp.nanosec = 1234, 5678
    boat = SegmentInstance(id=1, class_index=2, class_name="boat", score=0.875, is_thing=True, area=1500,
                           embedding=[0.6, 0.8])
    boat.bbox.x_offset, boat.bbox.y_offset, boat.bbox.width, boat.bbox.height = 10, 20, 30, 50
    water = SegmentInstance(id=2, class_index=0, class_name="water", score=0.5, is_thing=False, area=300000)
    water.bbox.width, water.bbox.height = 640, 480
    msg.instances = [boat, water]
    return msg


def main() -> None:
    rclpy.init()
    node = rclpy.create_node("interface_peer")
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
    node.create_publisher(Segmentation, "segments", latched).publish(sample_segmentation())

    def set_vocabulary(request, response):
        response.success = True
        response.message = f"{len(request.class_names)} classes"
        response.version = 8
        response.class_names = list(request.class_names)
        return response

    node.create_service(SetVocabulary, "set_vocabulary", set_vocabulary)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
