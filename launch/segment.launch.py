"""Launch the MaskCLIP segmentation node.

    ros2 launch maskclip_ros segment.launch.py image:=/camera/color/image_raw device:=cuda

Parameters come from `params_file` (default: the package's config/default.yaml). `device` and `compressed`
override the file only when given, so the file stays the one place for defaults. The node's private
`~/set_vocabulary` service is exposed as `/set_vocabulary` (`/<namespace>/set_vocabulary` with a namespace). The depth input (`depth`, registered to the
colour camera) and `camera_info` are remapped too; the node uses them when they publish.

Camera frames are large: with Fast DDS's default transport a 640x480 stream reaches another process only
in small part. Unless `large_frames:=false` or the environment already names a profile
(FASTDDS_DEFAULT_PROFILES_FILE), the node gets the package's config/fastdds_large_frames.xml; give the
camera driver the same profile (see the README).
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

PACKAGE = "maskclip_ros"
PROFILE_VARIABLE = "FASTDDS_DEFAULT_PROFILES_FILE"


def _overrides(context) -> dict:
    """Parameters given on the command line (empty launch arguments leave the params file's values)."""
    overrides = {"use_sim_time": LaunchConfiguration("use_sim_time").perform(context).lower() == "true"}
    device = LaunchConfiguration("device").perform(context)
    if device:
        overrides["device"] = device
    compressed = LaunchConfiguration("compressed").perform(context)
    if compressed:
        overrides["compressed_input"] = compressed.lower() == "true"
    return overrides


def _environment(context, share: str) -> dict:
    """The large-frame Fast DDS profile for the node, unless turned off or one is already chosen."""
    if LaunchConfiguration("large_frames").perform(context).lower() != "true" or os.environ.get(PROFILE_VARIABLE):
        return {}
    return {PROFILE_VARIABLE: os.path.join(share, "config", "fastdds_large_frames.xml")}


def _node(context, share: str):
    """The node with the params file plus the overrides given on the command line."""
    image = LaunchConfiguration("image").perform(context)
    camera_info = LaunchConfiguration("camera_info").perform(context) or os.path.join(os.path.dirname(image),
                                                                                       "camera_info")
    return [Node(
        package=PACKAGE,
        executable="maskclip_node",
        name="maskclip",
        namespace=LaunchConfiguration("namespace"),
        parameters=[LaunchConfiguration("params_file"), _overrides(context)],
        remappings=[
            ("image", image),
            ("image/compressed", image + "/compressed"),
            ("depth", LaunchConfiguration("depth").perform(context)),
            ("camera_info", camera_info),
            ("~/set_vocabulary", "set_vocabulary"),  # /set_vocabulary, or /<namespace>/set_vocabulary
        ],
        additional_env=_environment(context, share),
        output="screen",
    )]


def generate_launch_description():
    share = get_package_share_directory(PACKAGE)
    return LaunchDescription([
        DeclareLaunchArgument("image", default_value="/camera/image_raw",
                              description="camera image topic (its /compressed sibling when compressed:=true)"),
        DeclareLaunchArgument("depth", default_value="/camera/depth_registered/image_raw",
                              description="depth image registered to the camera (16UC1 mm or 32FC1 m)"),
        DeclareLaunchArgument("camera_info", default_value="",
                              description="camera_info of the colour camera (empty: the image topic's sibling)"),
        DeclareLaunchArgument("params_file", default_value=os.path.join(share, "config", "default.yaml"),
                              description="ROS 2 params file with every node parameter"),
        DeclareLaunchArgument("device", default_value="",
                              description="cpu, cuda or cuda:N (empty: as in params_file)"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node"),
        DeclareLaunchArgument("use_sim_time", default_value="false",
                              description="use /clock (e.g. from maskclip-ros replay or ros2 bag play --clock)"),
        DeclareLaunchArgument("compressed", default_value="",
                              description="true: subscribe to IMAGE/compressed (empty: as in params_file)"),
        DeclareLaunchArgument("large_frames", default_value="true",
                              description="give the node the package's large-frame Fast DDS profile (unless "
                                          "FASTDDS_DEFAULT_PROFILES_FILE is set)"),
        OpaqueFunction(function=_node, args=[share]),
    ])
