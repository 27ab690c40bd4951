"""Test shorthands over maskclip_ros.ros.spin (the one copy of start / stop / spin-until): processes start
from the repository with this interpreter, in their own session, logging to a file."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

from maskclip_ros.ros import spin

REPO = Path(__file__).resolve().parents[1]


def start(args: list[str], log_path: Path, env: dict | None = None) -> subprocess.Popen:
    """Start `python args...` (or an executable when args[0] is an absolute path) in a new session."""
    cmd = args if os.path.isabs(args[0]) and not args[0].endswith(".py") else [sys.executable, *args]
    return spin.start_process(cmd, log_path, env=env, cwd=REPO)


def stop(proc: subprocess.Popen, timeout: float = 15.0) -> int:
    """SIGINT, then SIGKILL if the process does not exit in time; returns its exit code."""
    return spin.stop_process(proc, timeout)


def spin_until(node, condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Spin `node` until condition() is true; fail with `what` after `timeout` seconds."""
    spin.spin_until(node, condition, timeout, what)
