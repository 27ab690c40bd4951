"""Helpers for cross-process ROS tests: start a process in its own session, stop it with SIGINT, and
spin until a condition holds (with a timeout, never a fixed sleep)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import rclpy

from maskclip_ros.procutil import stop_process

REPO = Path(__file__).resolve().parents[1]


def start(args: list[str], log_path: Path, env: dict | None = None) -> subprocess.Popen:
    """Start `python args...` (or an executable when args[0] is a path) in a new session, logging to a file."""
    cmd = args if os.path.isabs(args[0]) and not args[0].endswith(".py") else [sys.executable, *args]
    log = open(log_path, "w")
    return subprocess.Popen(cmd, cwd=REPO, env=env or dict(os.environ), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def stop(proc: subprocess.Popen, timeout: float = 15.0) -> int:
    """SIGINT, then SIGKILL if the process does not exit in time; returns its exit code."""
    return stop_process(proc, timeout)


def spin_until(node, condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Spin `node` until condition() is true; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        rclpy.spin_once(node, timeout_sec=0.05)
