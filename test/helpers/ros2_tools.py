"""The real ROS 2 command-line tools against a colcon-built install of this package (issue 12).

* `require_tools()`: the `ros2` tools the tests use: those of a sourced ROS 2 install (ROS_DISTRO set, `ros2` on
  PATH outside this venv), else the ros2-tools folder's, installed into this venv by `make setup-ros-tools`.
  Skips the calling test when neither exists, fails when the folder exists but was not installed.
* `Readme`: the commands of README.md's robot section, parsed from its fenced ```bash blocks, never retyped.
* `colcon_workspace()`: builds the package once per test session the way the README tells a robot user.
* `Workspace.bash()` / `Workspace.until()`: a command after `source install/setup.bash`, once or until its
  output says what is wanted (a condition with a timeout, never a fixed sleep).
* `Launch`: `ros2 launch ...` in its own session with SIGINT restored, stopped with SIGINT.
"""
from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from maskclip_ros.ros.spin import stop_process

REPO = Path(__file__).resolve().parents[2]
VENV = Path(sys.prefix)
PACKAGE = "maskclip_ros"
README = REPO / "README.md"
ROBOT_SECTION = "## On a ROS 2 robot"
# The Makefile's default ROS2_TOOLS, relative to the repository (a fresh clone elsewhere has none).
DEFAULT_TOOLS_DIR = REPO.parent / "shared" / "ros2-tools"
# Graph verbs look for the node only --spin-time seconds, and without --no-daemon they spawn a daemon that
# outlives the test: always ask directly, briefly, and retry until the answer is there.
GRAPH_OPTIONS = ("--no-daemon", "--spin-time", "2")
GRAPH_VERBS = {("node", "list"), ("node", "info"), ("topic", "list"), ("topic", "info"), ("topic", "echo"),
               ("param", "get"), ("param", "set"), ("param", "list"), ("param", "dump"), ("lifecycle", "get"),
               ("lifecycle", "set"), ("lifecycle", "nodes"), ("service", "list")}
COMMAND_TIMEOUT_S = 60.0  # one CLI call on a loaded 2-core machine
BUILD_TIMEOUT_S = 900.0  # colcon build of the interfaces and the package
STOP_TIMEOUT_S = 30.0  # SIGINT to exit of ros2 launch and its node
SKIP_REASON = ("no ROS 2 command-line tools: run `make setup-ros-tools` (installs them into .venv from "
               "ROS2_TOOLS, default ../shared/ros2-tools; see its README.md) or source a ROS 2 install "
               "(Jazzy or Kilted) before running the tests")


# ------------------------------------------------------------------------------------------------ the tools
def system_ros2() -> str | None:
    """Path of a sourced ROS 2 install's `ros2` (ROS_DISTRO set and `ros2` on PATH outside this venv)."""
    found = shutil.which("ros2")
    if os.environ.get("ROS_DISTRO") and found and not Path(found).resolve().is_relative_to(VENV.resolve()):
        return found
    return None


def venv_tools_installed() -> bool:
    """The ros2-tools wheels are installed into this venv (`make setup-ros-tools`)."""
    import importlib.util

    return (VENV / "bin" / "ros2").is_file() and all(
        importlib.util.find_spec(module) is not None for module in ("ros2cli", "launch_ros", "ros2launch"))


def tools_folder() -> Path:
    """The ros2-tools folder `make setup-ros-tools` installs from (ROS2_TOOLS, relative to the repository)."""
    configured = os.environ.get("ROS2_TOOLS")
    return (REPO / configured).resolve() if configured else DEFAULT_TOOLS_DIR


def require_tools() -> str:
    """'system' or 'venv'; skips the test when no tools exist, fails when they exist but are not installed."""
    if system_ros2():
        return "system"
    if venv_tools_installed():
        return "venv"
    if (tools_folder() / "install.sh").is_file():
        pytest.fail(f"{tools_folder()} holds the ROS 2 tools but they are not installed in {VENV}: "
                    "run `make setup-ros-tools` (make test does)")
    pytest.skip(SKIP_REASON)


def user_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a user with ROS 2 sourced: a sourced system install as it is, or this venv
    activated with AMENT_PREFIX_PATH=$VIRTUAL_ENV (the venv is the ament prefix of the PyPI wheels and the
    ros2-tools). Keeps the test run's ROS isolation (ROS_DOMAIN_ID, LOCALHOST discovery, ROS_LOG_DIR)."""
    env = dict(os.environ)
    if not system_ros2():
        for key in ("AMENT_PREFIX_PATH", "COLCON_PREFIX_PATH", "CMAKE_PREFIX_PATH", "PYTHONPATH"):
            env.pop(key, None)
        env.update(VIRTUAL_ENV=str(VENV), AMENT_PREFIX_PATH=str(VENV), PATH=f"{VENV / 'bin'}:{env['PATH']}")
    env["PYTHONUNBUFFERED"] = "1"  # node and launch logs reach the log file as they happen
    env.update(extra or {})
    return env


# ----------------------------------------------------------------------------------------------- the README
@dataclass(frozen=True)
class Command:
    """One command of a fenced bash block: `text` as written (continuations joined), `argv` as bash splits
    it (comments dropped)."""

    text: str
    argv: tuple[str, ...]

    def with_args(self, replace: Mapping[str, str] | None = None, extra: Sequence[str] = ()) -> str:
        """The command with whole words replaced (each key must occur: the README cannot drift silently)
        and `extra` arguments appended, quoted for bash. Without either, the text exactly as written."""
        replace = dict(replace or {})
        missing = [key for key in replace if key not in self.argv]
        assert not missing, f"README command {self.text!r} no longer contains {missing}"
        if not replace and not extra:
            return self.text
        return shlex.join([replace.get(arg, arg) for arg in self.argv] + list(extra))

    def graph(self) -> str:
        """The command with the graph options appended (a graph verb: node, topic, param, lifecycle)."""
        assert tuple(self.argv[1:3]) in GRAPH_VERBS, self.text
        return self.with_args(extra=GRAPH_OPTIONS)


class Readme:
    """The commands in the fenced ```bash blocks of one README section."""

    def __init__(self, title: str = ROBOT_SECTION, path: Path = README) -> None:
        self.section = section_text(path.read_text(encoding="utf-8"), title)
        self.blocks = re.findall(r"^```bash\n(.*?)^```", self.section, re.S | re.M)
        self.commands = [command for block in self.blocks for command in parse_block(block)]

    def find(self, *prefix: str, having: Sequence[str] = ()) -> Command:
        """The one command whose words start with `prefix` and include every word of `having`."""
        found = [c for c in self.commands if c.argv[:len(prefix)] == prefix and set(having) <= set(c.argv)]
        assert len(found) == 1, f"README robot section: {len(found)} commands {' '.join(prefix)} ... {having}"
        return found[0]

    def inline_code(self, pattern: str) -> list[str]:
        """Inline `code` spans of the section's prose that match the regular expression `pattern`."""
        return [span for span in re.findall(r"`([^`\n]+)`", self.section) if re.search(pattern, span)]


def section_text(markdown: str, title: str) -> str:
    """From the heading line starting with `title` to the next heading of its level or one level below
    (the robot section's subsections, real weights and GPU training, are not run here)."""
    level = title.split(" ")[0]
    match = re.search(rf"^{re.escape(title)}.*?$(.*?)(?=^{level}#? |\Z)", markdown, re.S | re.M)
    assert match, f"README has no section {title!r}"
    return match.group(1)


def parse_block(block: str) -> list[Command]:
    """Commands of a bash block: backslash continuations joined, comment-only and empty lines skipped."""
    commands, pending = [], ""
    for line in block.splitlines():
        pending += line
        if pending.endswith("\\"):
            pending = pending[:-1]
            continue
        argv = tuple(shlex.split(pending, comments=True))
        if argv:
            commands.append(Command(text=pending.strip(), argv=argv))
        pending = ""
    return commands


# -------------------------------------------------------------------------------------------- the workspace
@dataclass(frozen=True)
class Workspace:
    """A colcon workspace with this repository under src/ and the package built into install/."""

    root: Path
    build_seconds: float

    @property
    def prefix(self) -> Path:
        return self.root / "install" / PACKAGE

    def bash(self, command: str, timeout: float = COMMAND_TIMEOUT_S,
             env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess:
        """`source install/setup.bash && COMMAND` in bash, in the workspace root."""
        return subprocess.run(["bash", "-c", f"source install/setup.bash && {command}"], cwd=self.root,
                              env=dict(env or user_env()), capture_output=True, text=True, timeout=timeout)

    def ok(self, command: str, timeout: float = COMMAND_TIMEOUT_S) -> str:
        """Run `command`; its stdout. Fails with the output when it exits non-zero."""
        result = self.bash(command, timeout)
        assert result.returncode == 0, f"{command}\nexit {result.returncode}\n{result.stdout}{result.stderr}"
        return result.stdout

    def until(self, command: str, wanted: Callable[[str], bool], timeout: float, what: str,
              alive: Callable[[], bool] = lambda: True) -> str:
        """Rerun `command` until wanted(stdout + stderr) holds (discovery can take seconds); that output."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                result = self.bash(command)
                output = result.stdout + result.stderr
            except subprocess.TimeoutExpired as expired:
                output = f"(no answer in {expired.timeout:.0f} s) {expired.stdout or ''}{expired.stderr or ''}"
            if wanted(output):
                return output
            assert alive(), f"{what}: the launched process exited; last output of {command!r}:\n{output}"
            assert time.monotonic() < deadline, f"{what}: not after {timeout:.0f} s of {command!r}:\n{output}"

    def popen(self, command: str, log_path: Path, env: Mapping[str, str] | None = None) -> subprocess.Popen:
        """Start `command` (after sourcing) in its own session with SIGINT restored, logging to a file."""
        with open(log_path, "w") as log:
            return subprocess.Popen(
                ["bash", "-c", f"source install/setup.bash && exec {command}"], cwd=self.root,
                env=dict(env or user_env()), stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: SIGINT reaches launch and its node
                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # undo an inherited SIG_IGN


_BUILT: dict[str, Workspace | str] = {}


def colcon_workspace(tmp_path_factory) -> Workspace:
    """The session's workspace, built on first use (later calls, from any test module, reuse it)."""
    if "workspace" not in _BUILT:
        try:
            _BUILT["workspace"] = build_workspace(tmp_path_factory.mktemp("colcon_ws"))
        except AssertionError as error:
            _BUILT["workspace"] = str(error)
    built = _BUILT["workspace"]
    if isinstance(built, str):
        pytest.fail(f"the colcon build failed (once for the session): {built}")
    return built


def build_workspace(root: Path) -> Workspace:
    """The README's robot commands up to `source install/setup.bash`, in `root`. `git clone` becomes a link
    to this repository; `pip install -r requirements-robot.txt` is checked with --dry-run --no-index (this
    venv must already hold every pin; nothing is installed)."""
    readme = Readme()
    clone = readme.find("git", "clone")
    (root / clone.argv[-1]).parent.mkdir(parents=True)
    (root / clone.argv[-1]).symlink_to(REPO)
    pip = readme.find("pip", "install")
    result = subprocess.run(["bash", "-c", pip.with_args(extra=["--dry-run", "--no-index", "-q"])], cwd=root,
                            env=user_env(), capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    assert result.returncode == 0 and "Would install" not in result.stdout, result.stdout + result.stderr
    build = readme.find("colcon", "build")
    start = time.monotonic()
    result = subprocess.run(["bash", "-c", build.text], cwd=root, env=user_env(), capture_output=True,
                            text=True, timeout=BUILD_TIMEOUT_S)
    assert result.returncode == 0, f"{build.text}: exit {result.returncode}\n{result.stdout[-4000:]}{result.stderr}"
    readme.find("source", "install/setup.bash")  # what Workspace.bash() does before every command
    return Workspace(root=root, build_seconds=time.monotonic() - start)


# ------------------------------------------------------------------------------------------------ launching
def stop_group(proc: subprocess.Popen, timeout: float = STOP_TIMEOUT_S) -> int:
    """SIGINT to the process group (maskclip_ros.ros.spin.stop_process, which also reaps leftovers)."""
    return stop_process(proc, timeout)


class Launch:
    """A `ros2 launch ...` command started from the workspace; `stop()` sends SIGINT to its process group."""

    def __init__(self, workspace: Workspace, command: str, log_path: Path) -> None:
        self.command, self.log_path = command, log_path
        self.proc = workspace.popen(command, log_path)
        self.returncode: int | None = None
        self.active_after_s: float | None = None  # set by whoever waits for the node to become active

    def alive(self) -> bool:
        """ros2 launch runs and its node has not died (launch outlives a node that exits)."""
        return self.proc.poll() is None and "process has died" not in self.log()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        """SIGINT (then SIGKILL after STOP_TIMEOUT_S); the exit code of ros2 launch. Kills what is left of
        its process group (a node that outlived launch) afterwards."""
        if self.returncode is None:
            self.returncode = stop_group(self.proc)
        return self.returncode


@contextlib.contextmanager
def launched(workspace: Workspace, command: str, log_path: Path) -> Iterator[Launch]:
    launch = Launch(workspace, command, log_path)
    try:
        yield launch
    finally:
        launch.stop()


__all__ = ["Command", "GRAPH_OPTIONS", "Launch", "Readme", "SKIP_REASON", "Workspace", "colcon_workspace",
           "launched", "require_tools", "stop_group", "system_ros2", "user_env"]
