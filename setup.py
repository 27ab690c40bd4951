"""Standalone install of the maskclip_ros Python package (the ROS 2 build uses CMakeLists.txt)."""
from setuptools import find_packages, setup

setup(
    name="maskclip_ros",
    version="0.1.0",
    description="Open-vocabulary panoptic segmentation for ROS 2 with MaskCLIP",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=("maskclip_ros", "maskclip_ros.*")),
    package_data={"maskclip_ros": ["assets/*", "assets/**/*"]},
    entry_points={"console_scripts": ["maskclip-ros = maskclip_ros.cli:main"]},
)
