"""The library commands run on a machine without ROS (a GPU training box): with rclpy and every ROS message
package made unimportable, `--help` of the non-ROS commands and a tiny `train` / `eval` still work, and a
ROS command says what it needs instead of a traceback."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from maskclip_ros.cli import COMMANDS
from maskclip_ros.data import world

# Runs maskclip_ros.cli.main(argv) in a fresh interpreter where importing any ROS package fails.
BLOCK_ROS = """
import sys
BLOCKED = ("rclpy", "rcl_interfaces", "sensor_msgs", "std_msgs", "diagnostic_msgs", "lifecycle_msgs",
           "builtin_interfaces", "rosidl_runtime_py", "rosgraph_msgs", "maskclip_ros.msg", "maskclip_ros.srv")
class BlockROS:
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
sys.meta_path.insert(0, BlockROS())
from maskclip_ros.cli import main
code = main(sys.argv[1:])
assert not [m for m in sys.modules if m.split(".")[0] in BLOCKED], "a ROS module was imported"
sys.exit(code)
"""
TINY = ["clip.model_name=maskclip-ros-test-tiny", "clip.random_init=true", "clip.checkpoint=", "clip.short_side=64"]


def run_without_ros(*argv: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK_ROS, *argv], capture_output=True, text=True, timeout=timeout)


# Every library command (maskclip_ros.commands) and `docs` (it reads the parameter declarations, not rclpy).
LIBRARY_COMMANDS = [name for name, (module, _) in COMMANDS.items()
                    if module.startswith("maskclip_ros.commands.")] + ["docs"]


def test_the_library_commands_are_the_ones_a_training_box_needs():
    assert {"train", "eval", "train-clip", "eval-clip", "eval-tracking", "bench", "bench-model", "bench-backends",
            "bench-proposals", "make-world", "train-proposals"} <= set(LIBRARY_COMMANDS)


@pytest.mark.parametrize("command", LIBRARY_COMMANDS)
def test_library_commands_help_without_ros(command):
    done = run_without_ros(command, "--help")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage: maskclip-ros" in done.stdout


def test_top_level_help_without_ros():
    done = run_without_ros("--help")
    assert done.returncode == 0 and "set-vocabulary" in done.stdout, done.stderr[-2000:]


def test_ros_command_without_ros_says_what_it_needs():
    done = run_without_ros("set-vocabulary", "person")
    assert done.returncode == 2 and "needs ROS 2" in done.stderr, done.stderr[-2000:]


def test_tiny_train_and_eval_without_ros(tmp_path):
    import dataclasses

    cfg = dataclasses.replace(world.default_world_config(), width=160, height=128, min_size=24, max_size=40,
                              max_things=4, region_warp=20.0)
    world.write_world(tmp_path / "w", 2, seed=3, split="train", cfg=cfg)
    world.write_world(tmp_path / "w", 2, seed=4, split="val", cfg=cfg)
    sets = [a for s in TINY for a in ("--set", s)]
    done = run_without_ros("train", "--data", str(tmp_path / "w"), "--out", str(tmp_path / "rma"), "--no-progress",
                           *sets, "--set", "train.steps=1", "--set", "train.batch_size=1", "--set",
                           "train.max_proposals=4")
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1])["step"] == 1 and (tmp_path / "rma" / "rma.pt").is_file()
    done = run_without_ros("eval", "--data", str(tmp_path / "w"), "--out", str(tmp_path / "eval"), "--no-progress",
                           *sets, "--set", "eval.proposals=gt", "--set", "maskclip.mode=tokens")
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((tmp_path / "eval" / "results.json").read_text())["eval"]["images"] == 2
