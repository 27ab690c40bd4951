"""Issues 2 and 12: the installed package works, not only the source tree.

* The README's `colcon build --packages-select maskclip_ros` in a temporary workspace (helpers/ros2_tools.py,
  built once per session and shared with test_ros2_cli.py), then `source install/setup.bash` in bash: the
  Python package, interfaces, executables, launch and config files and the commands come from the install
  space.
* A non-editable `pip install` of a copy of the source tree into a fresh venv: the commands and the node
  run from it, with no access to the source tree.
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import rclpy
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from helpers.ros2_tools import PACKAGE, REPO, VENV, colcon_workspace, stop_group, system_ros2, user_env
from maskclip_ros.msg import Vocabulary
from maskclip_ros.ros.spin import start_process

pytestmark = pytest.mark.slow
SITE = f"lib/python{sys.version_info.major}.{sys.version_info.minor}/site-packages"
# Commands that read configs or assets when they start or print their help.
HELP_COMMANDS = ("--help", "demo --help", "eval --help")
START_TIMEOUT_S = 240.0  # the node with the default CLIP, from start to its latched vocabulary
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
# Where the modules of every command come from: printed by the interpreter that runs them.
MODULE_FILES = """
import importlib, sys
import maskclip_ros.cli, maskclip_ros.msg, maskclip_ros.srv
for module, _ in maskclip_ros.cli.COMMANDS.values():
    importlib.import_module(module)
print("\\n".join(sorted({m.__file__ for n, m in list(sys.modules.items())
                        if n.split(".")[0] == "maskclip_ros" and getattr(m, "__file__", None)})))
"""


@pytest.fixture(scope="session")
def workspace(tmp_path_factory):
    assert shutil.which("colcon", path=str(VENV / "bin")) or system_ros2(), "colcon is part of the pinned setup"
    return colcon_workspace(tmp_path_factory)


# ------------------------------------------------------------------------------------ colcon install space
def test_source_install_setup_bash_gives_a_working_environment(workspace):
    print(f"colcon build: {workspace.build_seconds:.1f} s")
    out = workspace.ok('echo "$AMENT_PREFIX_PATH"; command -v maskclip-ros; python -c "import sys; '
                       'from ament_index_python.packages import get_package_prefix as p; print(p(sys.argv[1]))" '
                       f"{PACKAGE}")
    ament_prefix_path, executable, prefix = out.split()
    assert ament_prefix_path.split(":")[0] == str(workspace.prefix)
    assert system_ros2() or str(VENV) in ament_prefix_path.split(":"), "the venv stays an ament prefix"
    assert Path(executable) == workspace.prefix / "bin" / "maskclip-ros"
    assert Path(prefix) == workspace.prefix


def test_python_package_and_interfaces_import_from_install_space(workspace):
    files = workspace.ok(f"python -c {shlex.quote(MODULE_FILES)}").split()
    site = workspace.prefix / SITE / PACKAGE
    outside = [f for f in files if not Path(f).is_relative_to(site)]
    assert not outside, f"modules imported from outside the install space: {outside}"
    assert str(site / "msg" / "__init__.py") in files and str(site / "srv" / "__init__.py") in files


def test_executables_launch_and_config_are_installed(workspace):
    share = workspace.prefix / "share" / PACKAGE
    assert (share / "launch" / "segment.launch.py").is_file()
    assert sorted(p.name for p in (share / "config").iterdir()) == sorted(p.name for p in (REPO / "config").iterdir())
    assert (share / "msg" / "Segmentation.msg").is_file() and (share / "srv" / "SetVocabulary.srv").is_file()
    for exe in ("maskclip_node", "maskclip-ros"):
        assert os.access(workspace.prefix / "lib" / PACKAGE / exe, os.X_OK)


@pytest.mark.parametrize("args", HELP_COMMANDS)
def test_commands_run_from_the_install_space(workspace, args):
    out = workspace.ok(f"cd / && maskclip-ros {args}")  # not from the repository: nothing found by cwd
    assert "usage: maskclip-ros" in out, out


# --------------------------------------------------------------------------------- non-editable pip install
@pytest.fixture(scope="module")
def pip_venv(tmp_path_factory):
    """A fresh venv that sees this venv's packages (torch, rclpy, the generated interfaces) through a plain
    path entry, not its .pth files (so not the editable source tree), with a copy of the source tree
    installed into it by its own pip: `pip install --no-deps .`, non-editable, data files in its prefix."""
    root = tmp_path_factory.mktemp("pip")
    source, venv = root / "src", root / "venv"
    shutil.copytree(REPO, source, symlinks=True, ignore=shutil.ignore_patterns(
        ".venv", ".git", "build", "install", "log", "out", "__pycache__", "*.egg-info", ".pytest_cache"))
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    (venv / SITE / "_maskclip_test_base.pth").write_text(f"{VENV / SITE}\n")
    start = time.monotonic()
    result = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                             "--no-deps", "--no-build-isolation", "--no-index", "--ignore-installed", str(source)],
                            env=pip_env(venv), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    print(f"pip install: {time.monotonic() - start:.1f} s")
    return venv


def pip_env(venv: Path) -> dict[str, str]:
    """The user environment with `venv` activated (its bin/ first; ROS libraries as this process has them)."""
    env = user_env()
    env.update(VIRTUAL_ENV=str(venv), PATH=f"{venv / 'bin'}:{env['PATH']}", _ROS_WHEELS_BOOTSTRAP_COMPLETE="1",
               LD_LIBRARY_PATH=os.environ.get("LD_LIBRARY_PATH", str(VENV / "lib")))
    return env


def run_from(venv: Path, command: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd="/", env=pip_env(venv), capture_output=True, text=True, timeout=120)


def test_pip_install_holds_every_module_and_asset(pip_venv):
    result = run_from(pip_venv, [str(pip_venv / "bin" / "python"), "-c", MODULE_FILES])
    assert result.returncode == 0, result.stderr
    installed = pip_venv / SITE / PACKAGE
    generated = VENV / SITE / PACKAGE  # the rosidl interfaces, built into this venv by `make setup`
    outside = [f for f in result.stdout.split() if not Path(f).is_relative_to(installed)
               and not Path(f).is_relative_to(generated)]
    assert not outside, f"modules imported from outside the pip install: {outside}"
    source = {p.relative_to(REPO / PACKAGE) for p in (REPO / PACKAGE).rglob("*")
              if p.is_file() and "__pycache__" not in p.parts}
    copied = {p.relative_to(installed) for p in installed.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    assert not source - copied, f"not installed by pip: {sorted(map(str, source - copied))}"


@pytest.mark.parametrize("args", HELP_COMMANDS)
def test_commands_run_from_a_pip_install(pip_venv, args):
    result = run_from(pip_venv, [str(pip_venv / "bin" / "maskclip-ros"), *args.split()])
    assert result.returncode == 0 and "usage: maskclip-ros" in result.stdout, result.stdout + result.stderr


@pytest.mark.ros
def test_node_runs_from_a_pip_install_with_its_defaults(pip_venv, tmp_path):
    """`maskclip-ros node` with no params file: config/default.yaml and the CLIP checkpoint must come with
    the package; the node publishes its (latched) vocabulary once active and stops cleanly on SIGINT."""
    log_path = tmp_path / "node.log"
    # start_process restores SIGINT in the child: a suite run in the background inherits SIG_IGN for it
    proc = start_process([str(pip_venv / "bin" / "maskclip-ros"), "node"], log_path, env=pip_env(pip_venv), cwd="/")
    rclpy.init()
    try:
        node = rclpy.create_node("pip_node_listener")
        got = []
        node.create_subscription(Vocabulary, "/maskclip/vocabulary", got.append, LATCHED)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not got:
            assert proc.poll() is None, f"the node exited ({proc.returncode}):\n{log_path.read_text()}"
            assert time.monotonic() < deadline, f"no vocabulary from the node:\n{log_path.read_text()}"
            rclpy.spin_once(node, timeout_sec=0.1)
        assert got[0].class_names
        node.destroy_node()
    finally:
        rclpy.try_shutdown()
        code = stop_group(proc)
    assert code == 0, log_path.read_text()
