"""A stand-in camera driver for cross-process tests: publishes generated 640x480 rgb8 frames on /image at a
fixed rate (reliable, as many drivers are), until SIGINT. Usage: python camera_process.py RATE_HZ"""
import sys
import time

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from maskclip_ros.data.world import generate_scene
from maskclip_ros.ros.conversions import ImageConverter

FRAMES = 5  # distinct scenes, cycled


def main(rate_hz: float) -> None:
    rclpy.init()
    node = rclpy.create_node("test_camera")
    publisher = node.create_publisher(Image, "/image", QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE))
    converter = ImageConverter(prefer_cv_bridge=False)
    frames = [converter.rgb_to_image(generate_scene(5, i).image) for i in range(FRAMES)]
    index, due = 0, time.monotonic()
    try:
        while True:
            if time.monotonic() >= due:
                msg = frames[index % FRAMES]
                msg.header.stamp.sec, msg.header.frame_id = index, "camera_optical"
                publisher.publish(msg)
                index, due = index + 1, due + 1.0 / rate_hz
            rclpy.spin_once(node, timeout_sec=0.002)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main(float(sys.argv[1]))
