"""The node's parts in one process: parameters declared from config/default.yaml (names, types, defaults,
descriptions, ranges, kinds), the one-slot frame buffer, stamp pairing, rolling statistics, message
building, the overlay, the client's class syntax and the bag helpers."""
import threading

import numpy as np
import pytest
import rclpy
import torch
from rcl_interfaces.msg import ParameterType

from maskclip_ros.config import flatten, nest, read_yaml, shipped_config
from maskclip_ros.model.panoptic import SegmentInfo
from maskclip_ros.model.vocabulary import Vocabulary
from maskclip_ros.pipeline import PanopticResult
from maskclip_ros.ros import frames, messages
from maskclip_ros.ros.bags import parse_topic_map, typestore
from maskclip_ros.ros.interface import parameter_kind, parse_diagnostics, status_name
from maskclip_ros.ros.node import SegmentationNode
from maskclip_ros.ros.overlay import class_colours, draw_overlay
from maskclip_ros.ros.params import descriptor, load_specs, markdown_reference
from maskclip_ros.ros.stats import RollingStats, diagnostic_array


def _write(tmp_path, text: str):
    path = tmp_path / "params.yaml"
    path.write_text("/**:\n  ros__parameters:\n" + text)
    return path


def test_specs_take_type_default_comment_and_range_from_the_yaml(tmp_path):
    path = _write(tmp_path, """\
    gain: 0.5            # [0.0, 2.0] how much
    count: 3             # [1, 10] how many
    name: abc            # a name [not, a range]
    flags: []            # empty list: no type yet
    group:               # a section
      inner: true        # nested flag
""")
    specs = {s.name: s for s in load_specs(lambda n: "runtime" if n == "gain" else "configure", path)}
    assert list(specs) == ["gain", "count", "name", "flags", "group.inner"]
    gain, count, name, flags = (descriptor(specs[k]) for k in ("gain", "count", "name", "flags"))
    assert gain.type == ParameterType.PARAMETER_DOUBLE and gain.description == "[0.0, 2.0] how much"
    assert (gain.floating_point_range[0].from_value, gain.floating_point_range[0].to_value) == (0.0, 2.0)
    assert not gain.read_only and not gain.additional_constraints
    assert count.type == ParameterType.PARAMETER_INTEGER and count.integer_range[0].to_value == 10
    assert "unconfigured" in count.additional_constraints
    assert not name.floating_point_range and not name.integer_range
    assert flags.dynamic_typing and specs["flags"].default is None
    assert specs["group.inner"].default is True and specs["group.inner"].description == "nested flag"
    startup = descriptor(load_specs(lambda n: "startup", path)[0])
    assert startup.read_only


def test_a_key_without_comment_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="'count' has no comment"):
        load_specs(parameter_kind, _write(tmp_path, "    gain: 0.5  # fine\n    count: 3\n"))


def defaults() -> dict:
    return read_yaml(shipped_config("default.yaml"))


def test_flatten_and_nest_are_inverse():
    params = defaults()
    assert nest(flatten(params)) == params


def test_markdown_reference_lists_every_parameter():
    specs = load_specs(parameter_kind)
    table = markdown_reference(specs)
    assert all(f"| `{s.name}` |" in table for s in specs)
    assert table.count("\n") == len(specs) + 2


@pytest.fixture
def ros_context(ros_isolation):
    rclpy.init()
    yield
    rclpy.try_shutdown()


def test_node_declares_every_default_with_its_descriptor(ros_context):
    node = SegmentationNode(parameter_overrides=[rclpy.parameter.Parameter("autostart", value=False)])
    try:
        expected = {**flatten(defaults()), "autostart": False}  # the override given above
        for name, default in expected.items():
            value = node.get_parameter(name).value
            assert value == (None if default == [] else default), name
            desc = node.describe_parameter(name)
            assert desc.description and desc.read_only == (parameter_kind(name) == "startup")
        assert node.describe_parameter("merge.overlap_threshold").floating_point_range[0].to_value == 1.0
        assert parameter_kind("merge.min_area") == "runtime" and parameter_kind("device") == "configure"
        assert parameter_kind("vocabulary.class_names") == "runtime"
        assert parameter_kind("vocabulary.max_classes") == "configure"
    finally:
        node.destroy_node()


def test_a_params_file_value_of_the_wrong_type_is_named(ros_context):
    with pytest.raises(ValueError, match="parameter 'merge.min_area' must be a int"):
        SegmentationNode(parameter_overrides=[rclpy.parameter.Parameter("merge.min_area", value="many")])


def test_a_params_file_value_out_of_range_is_named(ros_context):
    with pytest.raises(ValueError, match="parameter 'overlay.alpha'.*out of range"):
        SegmentationNode(parameter_overrides=[rclpy.parameter.Parameter("overlay.alpha", value=1.5)])


def _frame(tag: int) -> frames.Frame:
    return frames.Frame(header=messages.Header(frame_id=str(tag)), rgb=np.zeros((2, 2, 3), np.uint8),
                        received=float(tag))


def test_slot_keeps_only_the_newest_frame():
    slot = frames.LatestFrameSlot()
    assert slot.put(_frame(1)) is False
    assert slot.put(_frame(2)) is True, "frame 1 was replaced (dropped)"
    assert slot.take(0).header.frame_id == "2"
    assert slot.take(0.01) is None, "empty after a take"
    taken = []
    worker = threading.Thread(target=lambda: taken.append(slot.take()))
    worker.start()
    slot.put(_frame(3))
    worker.join(5)
    assert taken[0].header.frame_id == "3"
    slot.close()
    assert slot.take() is None and slot.take(0) is None


def test_pairer_matches_by_stamp_in_either_order_and_evicts_the_oldest():
    evicted = []
    pairer = frames.StampPairer(2, on_evict=evicted.append)
    assert pairer.add("frame", (1, 0), "f1") is None
    assert pairer.add("proposals", (1, 0), "p1") == ("f1", "p1")
    assert pairer.add("proposals", (2, 0), "p2") is None
    assert pairer.add("frame", (2, 0), "f2") == ("f2", "p2")
    for sec in (3, 4, 5):
        pairer.add("frame", (sec, 0), f"f{sec}")
    assert evicted == ["frame"]
    assert pairer.add("proposals", (3, 0), "p3") is None, "frame 3 was evicted"
    assert pairer.add("proposals", (5, 0), "p5") == ("f5", "p5")


def test_stamped_buffer_finds_the_nearest_and_waits_for_a_late_item():
    buffer = frames.StampedBuffer(2)
    assert buffer.nearest(1.0, 0.1) is None
    buffer.put(1.0, "d1")
    buffer.put(2.0, "d2")
    assert buffer.nearest(1.04, 0.05) == "d1" and buffer.nearest(1.96, 0.05) == "d2"
    assert buffer.nearest(1.5, 0.05, wait_s=0.01) is None, "nothing within the tolerance came"
    late = threading.Timer(0.05, buffer.put, args=(3.0, "d3"))  # the depth of frame 3 arrives after it
    late.start()
    assert buffer.nearest(3.0, 0.01, wait_s=10.0) == "d3", "the wait ends when the item arrives"
    late.join()
    assert len(buffer) == 2 and buffer.nearest(1.0, 0.05) is None, "the oldest was evicted"
    assert buffer.outran(1.0, 0.05), "full, and everything kept is newer than stamp 1: evicted"
    assert not buffer.outran(2.5, 0.05), "stamp 2.5 lies inside what is kept: a stamp mismatch, not a lag"


def test_a_stamped_buffer_that_is_not_full_has_not_evicted_anything():
    buffer = frames.StampedBuffer(3)
    buffer.put(100.0, "a depth clock far ahead")
    assert not buffer.outran(1.0, 0.05)


def test_labels_to_masks():
    labels = np.array([[0, 3, 3], [7, 7, 0]], dtype=np.uint8)
    masks = frames.labels_to_masks(labels)
    assert masks.shape == (2, 2, 3) and masks.dtype == bool
    assert masks[0].tolist() == [[False, True, True], [False, False, False]]
    assert masks[1].tolist() == [[False, False, False], [True, True, False]]


def test_rolling_stats_rates_totals_and_window():
    stats = RollingStats(window=2.0)
    for t in (0.0, 0.5, 1.0, 1.5):
        stats.count("received", now=t)
        stats.latency("clip", 10.0 * (t + 1), now=t)
    assert stats.rate("received", now=1.5) == 2.0
    assert stats.latencies(now=1.5)["clip"] == (17.5, 25.0)
    assert stats.rate("received", now=3.2) == 0.5, "only t=1.5 is within 2 s of 3.2"
    assert stats.total("received") == 4


def test_diagnostics_keys_round_trip_through_the_one_parser():
    stats = RollingStats(window=60.0)  # diagnostic_array reads the real clock: a window that holds "now"
    for ms in (10.0, 30.0):
        stats.count("received")
        stats.latency("clip", ms)
    stats.count("dropped")
    array = diagnostic_array(stats, name=status_name("/ns/maskclip"), hardware_id="cpu",
                             stamp=messages.Header().stamp, info={"device": "cpu"}, problem="slow")
    assert parse_diagnostics(array, "/maskclip") is None, "another node's status"
    values = parse_diagnostics(array, "/ns/maskclip")
    assert values["frames_received"] == 2 and values["dropped_frames"] == 1 and values["device"] == "cpu"
    assert values["latency_ms"]["clip"] == 20.0 and values["latency_max_ms"]["clip"] == 30.0
    assert values["input_rate_hz"] == pytest.approx(2 / 60.0, abs=0.01)
    assert values["level"] == 1 and values["message"] == "slow"  # 1 = DiagnosticStatus.WARN


def _result(with_embeddings: bool) -> PanopticResult:
    vocabulary = Vocabulary(class_names=("cup", "floor"), is_thing=(True, False), templates=("a {}.",),
                            version=4, text_embeddings=torch.zeros(2, 8))
    panoptic = np.array([[1, 1, 2], [0, 2, 2]], dtype=np.int32)
    semantic = np.array([[0, 0, 1], [-1, 1, 1]], dtype=np.int32)
    segments = [SegmentInfo(1, 0, 0.75, True, 2, (0, 0, 2, 1)), SegmentInfo(2, 1, 0.5, False, 3, (1, 0, 2, 2))]
    embeddings = np.eye(2, 8, dtype=np.float32) if with_embeddings else None
    return PanopticResult(panoptic=panoptic, semantic=semantic, segments=segments, embeddings=embeddings,
                          vocabulary=vocabulary, timings_ms={"proposals": 1.0, "clip": 2.0, "merge": 3.0})


def test_segmentation_message_copies_the_result():
    header = messages.Header(frame_id="cam")
    header.stamp.sec = 5
    msg = messages.segmentation_msg(_result(True), header, with_embeddings=True)
    assert msg.header == header and (msg.height, msg.width, msg.vocabulary_version) == (2, 3, 4)
    cup, floor = msg.instances
    assert (cup.id, cup.class_name, cup.is_thing, cup.area, cup.score) == (1, "cup", True, 2, 0.75)
    assert (floor.bbox.x_offset, floor.bbox.y_offset, floor.bbox.width, floor.bbox.height) == (1, 0, 2, 2)
    assert list(cup.embedding) == [1.0] + [0.0] * 7
    assert not messages.segmentation_msg(_result(True), header, with_embeddings=False).instances[0].embedding
    assert messages.semantic_labels(_result(False).semantic).tolist() == [[1, 1, 2], [0, 2, 2]]
    vocabulary = messages.vocabulary_msg(_result(False).vocabulary, header)
    assert (vocabulary.version, list(vocabulary.is_thing), list(vocabulary.prompt_templates)) == \
           (4, [True, False], ["a {}."])


def test_overlay_blends_class_colours_without_touching_the_input():
    panoptic = np.repeat(np.array([[0, 0, 1, 1, 2, 2]], np.int32), 4, axis=0)  # (4, 6): void | cup | floor
    semantic = np.repeat(np.array([[-1, -1, 0, 0, 1, 1]], np.int32), 4, axis=0)
    segments = [SegmentInfo(1, 0, 0.9, True, 8, (2, 0, 2, 4)), SegmentInfo(2, 1, 0.8, False, 8, (4, 0, 2, 4))]
    rgb = np.full((4, 6, 3), 100, np.uint8)
    out = draw_overlay(rgb, panoptic, semantic, segments, ["cup", "floor"], alpha=1.0, labels=False)
    assert np.all(rgb == 100), "input untouched"
    colours = class_colours(2)
    assert not np.array_equal(colours[0], colours[1])
    assert out[2, 0].tolist() == [100, 100, 100], "unlabelled pixel keeps the camera colour"
    assert out[2, 2].tolist() == colours[0].tolist() and out[2, 5].tolist() == colours[1].tolist()
    assert (out[2, 3] < colours[0]).all() and (out[2, 1] < 100).all(), "segment borders are darkened"
    big = draw_overlay(np.zeros((60, 90, 3), np.uint8), np.ones((60, 90), np.int32), np.zeros((60, 90), np.int32),
                       [SegmentInfo(1, 0, 1.0, True, 5400, (0, 0, 90, 60))], ["cup"], alpha=0.0, labels=True)
    assert big.any(), "the class name is written"


def test_bag_helpers():
    assert parse_topic_map(["/a:=/b", "/c/d:=e"]) == {"/a": "/b", "/c/d": "e"}
    with pytest.raises(ValueError, match="FROM:=TO"):
        parse_topic_map(["/a=/b"])
    store = typestore()
    assert {"maskclip_ros/msg/Segmentation", "maskclip_ros/msg/SegmentInstance",
            "maskclip_ros/msg/Vocabulary"} <= set(store.types)


def test_every_runtime_parameter_rule_names_parameters_of_the_file():
    """interface.RUNTIME_PARAMETERS (names, or section prefixes ending in '.') match keys of default.yaml."""
    from maskclip_ros.ros.interface import RUNTIME_PARAMETERS, STARTUP_PARAMETERS

    names = set(flatten(defaults()))
    for rule in (*RUNTIME_PARAMETERS, *STARTUP_PARAMETERS):
        assert any(n == rule or (rule.endswith(".") and n.startswith(rule)) for n in names), rule
