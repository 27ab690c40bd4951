"""Issue 7, cross-process: the node runs in its own process (`maskclip-ros node`, remapped the way
launch/segment.launch.py remaps it) with a tiny random-init CLIP and external proposals; this process
publishes frames and checks the outputs, the vocabulary service, the vocabulary parameters and bad frames."""
import itertools
import os
import subprocess
import sys

import numpy as np
import pytest
import rclpy
from rcl_interfaces.srv import GetParameters
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

import rosproc
from helpers.node_harness import check_segmentation, node_session, scene, write_params
from maskclip_ros.msg import Vocabulary as VocabularyMsg

pytestmark = pytest.mark.ros

CAMERA = "/cam/image_raw"
# The remappings of launch/segment.launch.py (test_launch checks that file against the node's names).
LAUNCH_REMAPS = ("-r", f"image:={CAMERA}", "-r", f"image/compressed:={CAMERA}/compressed",
                 "-r", "~/set_vocabulary:=/set_vocabulary")
START = ["alpha", "beta", "gamma", "delta"]
LIMITS = {"vocabulary": {"class_names": START, "is_thing": [True, True, False, False], "max_classes": 6,
                         "max_name_length": 12}}


@pytest.fixture(scope="module")
def session(tmp_path_factory, ros_isolation):
    tmp = tmp_path_factory.mktemp("node")
    with node_session(tmp, write_params(tmp / "params.yaml", LIMITS), LAUNCH_REMAPS, image_topic=CAMERA) as (
            node, peer):
        peer.wait_active()
        yield node, peer


def test_frames_in_panoptic_semantic_segments_out(session):
    node, peer = session
    vocabulary = peer.vocabularies[-1]
    assert list(vocabulary.class_names) == START and list(vocabulary.is_thing) == [True, True, False, False]
    for index in range(3):
        rgb, labels = scene(index)
        stamp = (100 + index, 250_000_000)
        peer.publish(rgb, labels, stamp, frame_id="cam_optical")
        panoptic, semantic, msg = peer.wait_outputs(stamp)
        assert msg.header.frame_id == "cam_optical" and msg.vocabulary_version == vocabulary.version
        assert peer.outputs["panoptic"][stamp][0].encoding == "32SC1"
        assert peer.outputs["semantic"][stamp][0].encoding == "mono16"
        check_segmentation(panoptic, semantic, msg, labels, START)
        assert panoptic.min() > 0, "with every proposal kept, every pixel is labelled"


def test_set_vocabulary_changes_later_frames_and_the_latched_topic(session):
    node, peer = session
    before = peer.vocabularies[-1]
    reply = peer.set_vocabulary(["red thing", "floor"], [True, False], service="/set_vocabulary")
    assert reply.success, reply.message
    assert reply.version == before.version + 1 and list(reply.class_names) == ["red thing", "floor"]
    peer.spin_until(lambda: peer.vocabularies[-1].version == reply.version, 10, "the vocabulary update")
    assert list(peer.vocabularies[-1].prompt_templates) == list(before.prompt_templates), "templates kept"
    # A late subscriber gets the active vocabulary (transient local).
    late = []
    sub = peer.node.create_subscription(VocabularyMsg, "/maskclip/vocabulary", late.append,
                                        QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                                                   durability=rclpy.qos.DurabilityPolicy.TRANSIENT_LOCAL))
    peer.spin_until(lambda: late, 10, "the latched vocabulary")
    assert late[-1].version == reply.version and list(late[-1].is_thing) == [True, False]
    peer.node.destroy_subscription(sub)
    rgb, labels = scene(7)
    peer.publish(rgb, labels, (200, 0))
    panoptic, semantic, msg = peer.wait_outputs((200, 0))
    assert msg.vocabulary_version == reply.version
    check_segmentation(panoptic, semantic, msg, labels, ["red thing", "floor"])
    assert {inst.class_name for inst in msg.instances} <= {"red thing", "floor"}
    # The parameters follow the service (one vocabulary, two ways to set it).
    reply = peer.set_vocabulary(START, [True, True, False, False], service="/set_vocabulary")
    assert reply.success


_REFUSALS = itertools.count()


@pytest.mark.parametrize("names, flags, templates, reason", [
    ([], [], [], "the vocabulary is empty"),
    (["cup", ""], [], [], "empty class name"),
    (["cup", "  "], [], [], "empty class name"),
    (["cup", "Cup"], [], [], "duplicate class name 'Cup'"),
    ([f"c{i}" for i in range(7)], [], [], "7 classes exceed the maximum of 6"),
    (["cup", "a" * 13], [], [], "longer than 12 characters"),
    (["cup", "floor"], [True], [], "1 thing/stuff flags for 2 class names"),
    (["cup"], [], ["no slot here"], "exactly one '{}' slot"),
], ids=["empty", "empty-name", "blank-name", "duplicate", "too-many", "too-long", "flags", "template"])
def test_refused_vocabulary_keeps_the_old_one_and_says_why(session, names, flags, templates, reason):
    node, peer = session
    active = peer.vocabularies[-1]
    reply = peer.set_vocabulary(names, flags, templates, service="/set_vocabulary")
    assert not reply.success and reason in reply.message
    assert reply.version == active.version and list(reply.class_names) == list(active.class_names)
    rgb, labels = scene(3)
    stamp = (300 + next(_REFUSALS), 0)
    peer.publish(rgb, labels, stamp)
    assert peer.wait_outputs(stamp)[2].vocabulary_version == active.version


def test_vocabulary_parameter_shares_the_validation(session):
    node, peer = session
    active = peer.vocabularies[-1]
    (result,) = peer.set_parameters(vocabulary__class_names=["alpha", "ALPHA", "gamma", "delta"])
    assert not result.successful and "duplicate class name 'ALPHA'" in result.reason
    (result,) = peer.set_parameters(vocabulary__is_thing=[True, False, True])
    assert not result.successful and "3 thing/stuff flags for 4 class names" in result.reason
    (result,) = peer.set_parameters(vocabulary__class_names=["wall:things"])
    assert not result.successful and "suffix must be :thing or :stuff" in result.reason
    assert peer.vocabularies[-1].version == active.version
    # class_names alone, with the client's suffixes (ros2 param set ... "[boat, tent, water:stuff, ...]").
    (result,) = peer.set_parameters(vocabulary__class_names=["boat", "tent", "water:stuff", "grass:stuff"])
    assert result.successful, result.reason
    peer.spin_until(lambda: peer.vocabularies[-1].version == active.version + 1, 10, "the parameter's vocabulary")
    assert list(peer.vocabularies[-1].class_names) == ["boat", "tent", "water", "grass"]
    assert list(peer.vocabularies[-1].is_thing) == [True, True, False, False]
    # The parameters then show the active vocabulary: plain names and their flags.
    request = GetParameters.Request(names=["vocabulary.class_names", "vocabulary.is_thing"])
    peer.spin_until(lambda: list(peer.call(GetParameters, "/maskclip/get_parameters", request).values[0]
                                 .string_array_value) == ["boat", "tent", "water", "grass"], 10, "the synced names")
    values = peer.call(GetParameters, "/maskclip/get_parameters", request).values
    assert list(values[1].bool_array_value) == [True, True, False, False]
    (result,) = peer.set_parameters(vocabulary__class_names=["boat", "tent"])  # no suffix: things
    assert result.successful and peer.set_vocabulary(["boat", "tent", "water", "grass"], [True, True, False, False],
                                                     service="/set_vocabulary").success


def test_runtime_thresholds_apply_and_configure_parameters_are_refused(session):
    node, peer = session
    rgb, labels = scene(11)
    (result,) = peer.set_parameters(merge__object_mask_threshold=1.0)  # no class probability exceeds 1
    assert result.successful, result.reason
    peer.publish(rgb, labels, (400, 0))
    panoptic, semantic, msg = peer.wait_outputs((400, 0))
    assert not msg.instances and not panoptic.any() and not semantic.any()
    (result,) = peer.set_parameters(merge__object_mask_threshold=0.0)
    assert result.successful
    peer.publish(rgb, labels, (401, 0))
    assert peer.wait_outputs((401, 0))[2].instances
    (result,) = peer.set_parameters(merge__object_mask_threshold=1.5)
    assert not result.successful, "outside the [0, 1] range of its descriptor"
    (result,) = peer.set_parameters(device="cuda")
    assert not result.successful and "apply at configure" in result.reason


def test_embeddings_only_when_asked(session):
    node, peer = session
    rgb, labels = scene(12)
    (result,) = peer.set_parameters(publish_embeddings=True)
    assert result.successful
    peer.publish(rgb, labels, (450, 0))
    msg = peer.wait_outputs((450, 0))[2]
    embeddings = np.array([inst.embedding for inst in msg.instances])
    assert embeddings.shape[0] == len(msg.instances) and embeddings.shape[1] > 0
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-3)
    peer.set_parameters(publish_embeddings=False)


def test_overlay_only_while_someone_listens(session):
    node, peer = session
    rgb, labels = scene(13)
    peer.publish(rgb, labels, (499, 0))
    peer.wait_outputs((499, 0))
    assert peer.latest_diagnostics()["overlays_published"] == 0, "nobody listens: no overlay is drawn"
    overlays = []
    sub = peer.node.create_subscription(Image, "/maskclip/overlay", overlays.append,
                                        QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE))
    for sec in range(500, 520):  # until the node has discovered the subscription
        peer.publish(rgb, labels, (sec, 0))
        peer.wait_outputs((sec, 0))
        peer.spin_until(lambda: overlays or peer.latest_diagnostics()["overlays_published"] == 0, 10,
                        "an overlay or a frame without one")
        if overlays:
            break
    peer.spin_until(lambda: overlays, 10, "an overlay")
    overlay = peer.conv.image_to_rgb(overlays[-1])
    assert overlays[-1].encoding == "rgb8" and overlay.shape == rgb.shape
    assert (overlays[-1].header.stamp.sec, overlays[-1].header.frame_id) == (sec, "camera")
    assert not np.array_equal(overlay, rgb), "class colours are blended in"
    assert peer.latest_diagnostics()["overlays_published"] == 1
    peer.node.destroy_subscription(sub)


def test_set_vocabulary_command_exit_codes(session, ros_isolation):
    node, peer = session
    command = [sys.executable, "-m", "maskclip_ros.cli", "set-vocabulary"]
    run = dict(capture_output=True, text=True, timeout=60, env=dict(os.environ), cwd=rosproc.REPO)
    ok = subprocess.run(command + ["person", "chair", "floor:stuff", "wall:stuff"], **run)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "accepted" in ok.stdout and "person, chair, floor, wall" in ok.stdout
    peer.spin_until(lambda: list(peer.vocabularies[-1].class_names) == ["person", "chair", "floor", "wall"],
                    10, "the command's vocabulary")
    assert list(peer.vocabularies[-1].is_thing) == [True, True, False, False]
    refused = subprocess.run(command + ["person", "Person"], **run)
    assert refused.returncode == 1 and "REFUSED" in refused.stdout and "duplicate" in refused.stdout
    missing = subprocess.run(command + ["cup", "--service", "/nobody/set_vocabulary", "--timeout", "2"], **run)
    assert missing.returncode == 2 and "did not answer" in missing.stdout


BAD_FRAMES = {
    "yuv422": dict(encoding="yuv422", height=4, width=4, step=8, data=bytes(32)),
    "32FC1": dict(encoding="32FC1", height=4, width=4, step=16, data=bytes(64)),
    "no-encoding": dict(encoding="", height=4, width=4, step=12, data=bytes(48)),
    "step-mismatch": dict(encoding="rgb8", height=4, width=4, step=10, data=bytes(40)),
    "size-mismatch": dict(encoding="bgr8", height=4, width=4, step=12, data=bytes(60)),
    "zero-size": dict(encoding="rgb8", height=0, width=0, step=0, data=b""),
    "truncated": dict(encoding="rgba8", height=4, width=4, step=16, data=bytes(50)),
}


def _bad_count(peer) -> int:
    return int(peer.latest_diagnostics()["dropped_bad_frames"])


def test_bad_frames_are_dropped_counted_and_the_node_goes_on(session):
    node, peer = session
    before = _bad_count(peer)
    for count, (name, fields) in enumerate(BAD_FRAMES.items(), start=1):  # one at a time: sensor QoS may
        msg = Image(**{k: v for k, v in fields.items() if k != "data"})  # drop a burst, we count each
        msg.data = fields["data"]
        msg.header.stamp.sec = 600 + count
        peer.image_pub.publish(msg)
        peer.spin_until(lambda: int(peer.diagnostics[-1]["dropped_bad_frames"]) >= before + count, 20,
                        f"the {name} frame in diagnostics")
    assert _bad_count(peer) == before + len(BAD_FRAMES)
    rgb, labels = scene(21)
    peer.publish(rgb, labels, (700, 0))
    check_segmentation(*peer.wait_outputs((700, 0)), labels, list(peer.vocabularies[-1].class_names))
    assert node.alive()
    assert not any((600 + i, 0) in peer.outputs["segments"] for i in range(len(BAD_FRAMES)))
    log = node.log()
    assert "dropped a bad frame" in log and "unsupported encoding 'yuv422'" in log


def test_diagnostics_report_rates_latencies_and_model(session):
    node, peer = session
    stamp = (990, 0)
    rgb, labels = scene(7)
    peer.publish(rgb, labels, stamp)
    peer.wait_outputs(stamp)
    values = peer.latest_diagnostics()
    stages, worst = values["latency_ms"], values["latency_max_ms"]
    assert set(stages) == set(worst) == {"proposals", "clip", "merge", "tracking", "geometry", "publish", "total"}
    assert all(worst[k] >= stages[k] for k in stages), "a maximum is never below its mean"
    # end to end includes inference and publishing (same frames, means over the window)
    assert stages["total"] >= stages["clip"] + stages["publish"]
    assert values["output_rate_hz"] > 0 and values["input_rate_hz"] >= values["output_rate_hz"]
    assert values["frames_received"] >= values["frames_published"] >= 1
    assert values["device"] == "cpu" and values["model"].startswith("maskclip-ros-test-tiny")
    assert int(values["vocabulary_version"]) == peer.vocabularies[-1].version
