"""`maskclip-ros node [--params-file FILE] [--ros-args ...]`: run the segmentation node (the same node as
`ros2 run maskclip_ros maskclip_node` and launch/segment.launch.py). Parameter defaults come from
config/default.yaml; params files override them; anything after --ros-args goes to ROS (remaps,
-p name:=value)."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params-file", action="append", default=[], metavar="FILE",
                        help="ROS 2 params file (repeatable; later files win)")
    parser.add_argument("--ros-args", dest="ros_args", nargs=argparse.REMAINDER, default=[],
                        help="everything after it goes to ROS (remaps, -p name:=value, --params-file, ...)")


def run(args) -> int:
    from maskclip_ros.ros.node import run as run_node

    files = [arg for path in args.params_file for arg in ("--params-file", path)]
    ros_args = [*files, *args.ros_args]
    return run_node(["--ros-args", *ros_args] if ros_args else [])
