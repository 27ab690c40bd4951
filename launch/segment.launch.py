"""Launch the MaskCLIP segmentation node.

    ros2 launch maskclip_ros segment.launch.py image:=/camera/color/image_raw device:=cuda

Parameters come from `params_file` (default: the package's config/default.yaml). `device` and `compressed`
override the file only when given, so the file stays the one place for defaults. The node's private
`~/set_vocabulary` service is exposed as `/set_vocabulary`.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

PACKAGE = "maskclip_ros"


def _node(context):
    """The node with the params file plus the overrides given on the command line."""
    overrides = {"use_sim_time": LaunchConfiguration("use_sim_time").perform(context).lower() == "true"}
    device = LaunchConfiguration("device").perform(context)
    if device:
        overrides["device"] = device
    compressed = LaunchConfiguration("compressed").perform(context)
    if compressed:
        overrides["compressed_input"] = compressed.lower() == "true"
    image = LaunchConfiguration("image").perform(context)
    return [Node(
        package=PACKAGE,
        executable="maskclip_node",
        name="maskclip",
        namespace=LaunchConfiguration("namespace"),
        parameters=[LaunchConfiguration("params_file"), overrides],
        remappings=[
            ("image", image),
            ("image/compressed", image + "/compressed"),
            ("~/set_vocabulary", "/set_vocabulary"),
        ],
        output="screen",
    )]


def generate_launch_description():
    share = get_package_share_directory(PACKAGE)
    return LaunchDescription([
        DeclareLaunchArgument("image", default_value="/camera/image_raw",
                              description="camera image topic (its /compressed sibling when compressed:=true)"),
        DeclareLaunchArgument("params_file", default_value=os.path.join(share, "config", "default.yaml"),
                              description="ROS 2 params file with every node parameter"),
        DeclareLaunchArgument("device", default_value="",
                              description="cpu, cuda or cuda:N (empty: as in params_file)"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node"),
        DeclareLaunchArgument("use_sim_time", default_value="false",
                              description="use /clock (e.g. from maskclip-ros replay or ros2 bag play --clock)"),
        DeclareLaunchArgument("compressed", default_value="",
                              description="true: subscribe to IMAGE/compressed (empty: as in params_file)"),
        OpaqueFunction(function=_node),
    ])
