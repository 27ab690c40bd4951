"""Standalone install of the maskclip_ros Python package (the ROS 2 build uses CMakeLists.txt).

Besides the package and its assets, the files the ROS build installs into share/maskclip_ros (config,
launch, msg/srv definitions, package.xml) go to <prefix>/share/maskclip_ros, where maskclip_ros.config's
resource finder looks (as it does in an ament prefix), so a non-editable pip install finds them too."""
from glob import glob
from pathlib import Path

from setuptools import find_packages, setup

SHARED = ("config", "config/proposals", "launch", "msg", "srv")

setup(
    name="maskclip_ros",
    version="0.1.0",
    description="Open-vocabulary panoptic segmentation for ROS 2 with MaskCLIP",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=("maskclip_ros", "maskclip_ros.*")),
    package_data={"maskclip_ros": ["assets/*", "assets/**/*"]},
    data_files=[(f"share/maskclip_ros/{d}", sorted(f for f in glob(f"{d}/*") if Path(f).is_file()))
                for d in SHARED] + [("share/maskclip_ros", ["package.xml"])],
    entry_points={"console_scripts": ["maskclip-ros = maskclip_ros.cli:main"]},
)
