"""Shared fixtures. ROS tests run isolated: localhost-only discovery, their own domain id, logs in tmp."""
from __future__ import annotations

import os
import random

import pytest

# One domain id per pytest run (valid ids for Linux: 1..101 without port clashes); every ROS process this
# run starts, in-process or as a subprocess, uses it.
_DOMAIN_ID = str(random.Random(os.getpid()).randint(1, 101))


@pytest.fixture(scope="session", autouse=True)
def ros_isolation(tmp_path_factory):
    """Make every ROS process of this test run private: LOCALHOST discovery, a unique ROS_DOMAIN_ID and
    ROS_LOG_DIR in a temporary directory (rclpy.init fails without a writable log dir)."""
    log_dir = tmp_path_factory.mktemp("ros_log")
    saved = {k: os.environ.get(k) for k in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_LOG_DIR")}
    os.environ.update(ROS_DOMAIN_ID=_DOMAIN_ID, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
                      ROS_LOG_DIR=str(log_dir))
    yield dict(os.environ)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
