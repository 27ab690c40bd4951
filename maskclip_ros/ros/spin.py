"""Waiting on a ROS graph and on child processes, one copy for the demo, bench-node, the client, the bag
tools and the tests: spin until a condition holds (with a deadline, never a fixed sleep), start a process in
its own session with its output in a log file, stop it with SIGINT (then SIGKILL)."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path

SPIN_STEP_S = 0.05  # longest single wait for callbacks between two checks of the condition
STOP_TIMEOUT_S = 30.0  # how long a stopped process may take to exit before SIGKILL


def spin_until(node, condition: Callable[[], bool], timeout: float, what: str, *,
               watch: Mapping[str, subprocess.Popen] | None = None, details: Callable[[], str] = lambda: "",
               step: float = SPIN_STEP_S) -> None:
    """Spin ``node`` until ``condition()`` is true. Raises TimeoutError naming ``what`` after ``timeout``
    seconds, and RuntimeError as soon as a ``watch``ed process has exited."""
    import rclpy

    deadline = time.monotonic() + timeout
    while not condition():
        dead = {name: p.returncode for name, p in (watch or {}).items() if p.poll() is not None}
        if dead:
            raise RuntimeError(f"{dead} exited (name: exit code) while waiting for {what} {details()}".rstrip())
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what} {details()}".rstrip())
        rclpy.spin_once(node, timeout_sec=step)


def wait_until(condition: Callable[[], bool], timeout: float, step: float = SPIN_STEP_S) -> bool:
    """Poll ``condition`` (no ROS) until true or ``timeout``; returns whether it held."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(step)
    return True


def start_process(cmd: list[str], log_path: Path, *, env: Mapping[str, str] | None = None,
                  cwd: str | Path | None = None) -> subprocess.Popen:
    """Start ``cmd`` in a new session (so SIGINT reaches it and its children, and an inherited SIG_IGN of
    SIGINT is undone), stdout and stderr into ``log_path``."""
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:  # the child has its own copy of the descriptor
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=dict(env) if env else None,
                                cwd=cwd, start_new_session=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def stop_process(proc: subprocess.Popen, timeout: float = STOP_TIMEOUT_S) -> int:
    """SIGINT to the process group of ``proc`` (started by ``start_process``), SIGKILL if it has not exited
    after ``timeout`` seconds, then SIGKILL to whatever is left of the group (a child that outlived its
    parent, e.g. a node under ``ros2 launch``); returns its exit code."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode
