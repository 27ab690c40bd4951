"""Small shared helpers for the commands: stopping child processes and writing result files."""
from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path


def stop_process(proc: subprocess.Popen, timeout: float = 30.0) -> int:
    """SIGINT to the process group of `proc` (started with start_new_session=True), then SIGKILL if it has
    not exited after `timeout` seconds; returns its exit code."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode


def write_json(path: Path, data: dict) -> None:
    """Write `data` as indented JSON (creating the directory) and say where."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    print(f"wrote {path}")
