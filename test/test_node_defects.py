"""Issue 12, defects found by driving the node from outside as a new user would (cross-process, tiny CLIP):
one set_vocabulary request makes exactly one version whatever the suffixes; the CLI finds the service that
has a server; the start-up log says what runs; refusals stay short; Ctrl-C with a frame in flight and the
lifecycle shutdown both end the process cleanly (exit 0)."""
import importlib.util
import os
import signal
import subprocess
import sys
import time

import pytest
import rclpy
from rcl_interfaces.srv import GetParameters

import rosproc
from helpers.node_harness import NodeProcess, Peer, Transition, node_session, scene, write_params
from maskclip_ros.config import asset
from maskclip_ros.srv import SetVocabulary

pytestmark = pytest.mark.ros
LAUNCH_SERVICE = ("-r", "~/set_vocabulary:=/set_vocabulary")


def _parameters(peer, *names):
    reply = peer.call(GetParameters, "/maskclip/get_parameters", GetParameters.Request(names=list(names)))
    return [v.string_array_value or list(v.bool_array_value) for v in reply.values]


def test_suffixes_make_one_version_and_params_agree(tmp_path, ros_isolation):
    with node_session(tmp_path, write_params(tmp_path / "p.yaml")) as (node, peer):
        peer.wait_active()
        before = peer.vocabularies[-1].version
        reply = peer.set_vocabulary(["person", "floor:stuff", "cup:thing"], is_thing=[])
        assert reply.success and reply.version == before + 1 and f"v{reply.version}" in reply.message
        assert list(reply.class_names) == ["person", "floor", "cup"]
        peer.spin_until(lambda: peer.vocabularies[-1].version == reply.version, 10, "the new vocabulary")
        assert list(peer.vocabularies[-1].is_thing) == [True, False, True]
        names = lambda: _parameters(peer, "vocabulary.class_names", "vocabulary.is_thing")  # noqa: E731
        peer.spin_until(lambda: names() == [["person", "floor", "cup"], [True, False, True]], 10, "the parameter sync")
        deadline = time.monotonic() + 2.0  # nothing else may follow (the sync made a second version before)
        peer.spin_until(lambda: time.monotonic() > deadline, 5, "a quiet period")
        assert [v.version for v in peer.vocabularies if v.version > before] == [reply.version]
        refused = peer.set_vocabulary(["x" * 100_000])
        assert not refused.success and len(refused.message) < 200 and refused.version == reply.version


def test_cli_finds_the_server_not_a_lonely_client(tmp_path, ros_isolation):
    with node_session(tmp_path, write_params(tmp_path / "p.yaml"), LAUNCH_SERVICE) as (node, peer):
        peer.wait_active()
        decoy = peer.node.create_client(SetVocabulary, "/maskclip/set_vocabulary")  # a client, no server
        peer.spin_until(lambda: peer.node.count_clients("/maskclip/set_vocabulary") > 0, 10, "the decoy client")
        done = subprocess.run([sys.executable, "-m", "maskclip_ros.cli", "set-vocabulary", "mug", "table:stuff",
                               "--timeout", "60"], capture_output=True, text=True, timeout=120)
        peer.node.destroy_client(decoy)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "calling /set_vocabulary" in done.stdout and "active vocabulary" in done.stdout
        peer.spin_until(lambda: list(peer.vocabularies[-1].class_names) == ["mug", "table"], 10, "the change")


def test_startup_log_says_what_runs(tmp_path, ros_isolation):
    """With the project's checkpoint: no open_clip "initialized randomly" line; the weights file, the
    vocabulary and the output topics are named."""
    params = write_params(tmp_path / "p.yaml", {"clip": {"model_name": "maskclip-ros-tiny-vit16",
                                                         "checkpoint": "clip/maskclip-ros-tiny-vit16.pt",
                                                         "random_init": False, "short_side": 96}})
    with node_session(tmp_path, params) as (node, peer):
        peer.wait_active()
        log = node.log()
    assert "initialized randomly" not in log
    assert str(asset("clip/maskclip-ros-tiny-vit16.pt")) in log
    assert "ring, cross, star" in log and "/maskclip/panoptic" in log and "/maskclip/segments" in log


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_ctrl_c_with_a_frame_in_flight_exits_cleanly(tmp_path, ros_isolation, signum):
    """SIGINT (Ctrl-C, ros2 launch) or SIGTERM (docker stop, systemd) while the worker segments a 480x640
    frame: no publish on a dead context, exit code 0."""
    params = write_params(tmp_path / "p.yaml", {"clip": {"model_name": "maskclip-ros-tiny-vit16", "short_side": 480},
                                                "num_threads": 1})
    rclpy.init()
    try:
        node = NodeProcess(tmp_path, params, name="sigint")
        peer = Peer("sigint_peer")
        peer.wait_active()
        rgb, labels = scene(3, height=480, width=640)
        for sec in range(1, 4):  # frame 1 runs, frame 3 replaces 2 in the slot and runs next
            peer.publish(rgb, labels, (sec, 0))
        peer.spin_until(lambda: (1, 0) in peer.outputs["segments"], 60, "the first frame's outputs")
        os.killpg(node.proc.pid, signum)  # frame 3 is in flight now
        code = node.proc.wait(60)
        peer.close()
    finally:
        rclpy.try_shutdown()
    log = node.log()
    assert code == 0, log[-3000:]
    assert "context is invalid" not in log and "failed:" not in log and "Traceback" not in log, log[-3000:]


def test_sigint_stops_the_node_even_when_its_parent_ignored_it(tmp_path, ros_isolation):
    """A node started from a background shell job inherits SIGINT ignored; it sets its own handler, so the
    SIGINT of ros2 launch or of a test harness still stops it cleanly."""
    log_path = tmp_path / "ignored.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "maskclip_ros.cli", "node", "--params-file",
                                 str(write_params(tmp_path / "p.yaml"))], stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    rclpy.init()
    try:
        peer = Peer("ignored_peer")
        peer.wait_active()
        code = rosproc.stop(proc, 30)  # SIGINT; SIGKILL (code -9) if the node ignored it
        peer.close()
    finally:
        rclpy.try_shutdown()
    assert code == 0, log_path.read_text()[-3000:]


def test_lifecycle_shutdown_ends_the_process(tmp_path, ros_isolation):
    rclpy.init()
    try:
        node = NodeProcess(tmp_path, write_params(tmp_path / "p.yaml"), name="shutdown")
        peer = Peer("shutdown_peer")
        peer.wait_active()
        assert peer.transition(Transition.TRANSITION_ACTIVE_SHUTDOWN)
        code = node.proc.wait(30)
        peer.close()
    finally:
        rclpy.try_shutdown()
    assert code == 0, node.log()[-3000:]


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="onnxruntime is not installed")
def test_node_runs_an_exported_encoder_chosen_by_its_parameters(tmp_path, ros_isolation):
    """maskclip.backend onnxruntime (exported at configure for the frame size): the same outputs contract."""
    from helpers.node_harness import check_segmentation

    params = write_params(tmp_path / "p.yaml", {"maskclip": {"backend": "onnxruntime", "export_frame_size": [64, 96],
                                                             "export_cache_dir": str(tmp_path / "export")}})
    with node_session(tmp_path, params) as (node, peer):
        peer.wait_active(timeout=180)
        rgb, labels = scene(5)
        peer.publish(rgb, labels, (1, 0))
        check_segmentation(*peer.wait_outputs((1, 0)), labels, list(peer.vocabularies[-1].class_names))
        assert peer.latest_diagnostics()["model"].endswith("/ tokens / onnxruntime")
        log = node.log()
    assert "tokens on onnxruntime" in log and any((tmp_path / "export").iterdir()), "exported into the cache dir"
