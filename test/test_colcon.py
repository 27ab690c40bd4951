"""Issue 2: `colcon build` of this package (against the ROS 2 wheels in .venv) into a temporary install
space; the installed Python package, interfaces, executables, launch and config come from that space."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VENV = Path(sys.prefix)


@pytest.fixture(scope="module")
def install_space(tmp_path_factory):
    root = tmp_path_factory.mktemp("colcon")
    # A workspace whose src/ links to this repository: CMake rejects exported include paths inside the
    # source directory, and .venv (holding numpy's headers) lives inside the repository.
    (root / "src").mkdir()
    (root / "src" / "maskclip_ros").symlink_to(REPO)
    env = {**os.environ, "PATH": f"{VENV / 'bin'}:{os.environ['PATH']}",
           "AMENT_PREFIX_PATH": str(VENV), "CMAKE_PREFIX_PATH": str(VENV)}
    subprocess.run(
        [str(VENV / "bin" / "colcon"), "--log-base", str(root / "log"), "build", "--base-paths", str(root / "src"),
         "--build-base", str(root / "build"), "--install-base", str(root / "install"),
         "--cmake-args", f"-DPython3_EXECUTABLE={VENV / 'bin' / 'python'}", "-DBUILD_TESTING=OFF"],
        cwd=root, env=env, check=True, capture_output=True, timeout=600)
    return root / "install" / "maskclip_ros"


def run_in_install_space(install: Path, command: str) -> str:
    """Run a shell command after sourcing the install space's local_setup.sh, in a clean environment."""
    env = {"HOME": os.environ["HOME"], "PATH": f"{VENV / 'bin'}:/usr/bin:/bin",
           "ROS_LOG_DIR": os.environ["ROS_LOG_DIR"]}
    result = subprocess.run(["sh", "-c", f". {install}/share/maskclip_ros/local_setup.sh && {command}"],
                            env=env, cwd=install, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_python_package_and_interfaces_import_from_install_space(install_space):
    out = run_in_install_space(install_space, "python -c 'import maskclip_ros, maskclip_ros.msg as m, "
                               "maskclip_ros.srv as s; print(maskclip_ros.__file__); print(m.__file__); "
                               "print(s.SetVocabulary.Request(class_names=[\"a\"]).class_names)'")
    package_file, msg_file, names = out.split()
    site = install_space / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    assert Path(package_file) == site / "maskclip_ros" / "__init__.py"
    assert Path(msg_file) == site / "maskclip_ros" / "msg" / "__init__.py"
    assert names == "['a']"


def test_executables_launch_and_config_are_installed(install_space):
    share = install_space / "share" / "maskclip_ros"
    assert (share / "launch" / "segment.launch.py").is_file() or not (REPO / "launch" / "segment.launch.py").exists()
    assert sorted(p.name for p in (share / "config").iterdir()) == sorted(p.name for p in (REPO / "config").iterdir())
    assert (share / "msg" / "Segmentation.msg").is_file() and (share / "srv" / "SetVocabulary.srv").is_file()
    for exe in ("maskclip_node", "maskclip-ros"):
        assert os.access(install_space / "lib" / "maskclip_ros" / exe, os.X_OK)
    out = run_in_install_space(install_space, f"{install_space}/lib/maskclip_ros/maskclip-ros --help")
    assert "maskclip-ros" in out


@pytest.fixture(autouse=True, scope="module")
def _needs_colcon():
    assert shutil.which("colcon", path=str(VENV / "bin")), "colcon is part of the pinned setup"
