"""The per-frame perception stage (maskclip_ros.tracking.stage): ids and 3D per segment, bad depth never raises."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from maskclip_ros import config
from maskclip_ros.model.panoptic import SegmentInfo
from maskclip_ros.model.vocabulary import Vocabulary
from maskclip_ros.pipeline import PanopticResult
from maskclip_ros.tracking import (CameraIntrinsics, DepthError, DepthProblem, PerceptionConfig, SegmentTracker,
                                   camera_intrinsics, decode_depth, labelled_cloud, load_perception_config)

H, W = 120, 160
F = 150.0
CAMERA = CameraIntrinsics(fx=F, fy=F, cx=(W - 1) / 2, cy=(H - 1) / 2, width=W, height=H)
WALL, THING_Z = 5.0, 2.0
EMBED = np.eye(4, dtype=np.float32)  # one distinct unit embedding per object


def perception(**tracking) -> PerceptionConfig:
    """The shipped settings with the tracking thresholds these tests are written for (and ``tracking``)."""
    cfg = load_perception_config()
    pinned = dict(high_score=0.5, low_score=0.1, confirm_hits=2, min_iou=0.2, reid_similarity=0.85)
    return dataclasses.replace(cfg, tracking=dataclasses.replace(cfg.tracking, **{**pinned, **tracking}))


def vocabulary(names=("wall", "mug", "dog"), things=(False, True, True)) -> Vocabulary:
    return Vocabulary(class_names=tuple(names), is_thing=tuple(things), templates=("{}",), version=1,
                      text_embeddings=torch.zeros(len(names), 4))


def frame(t: int, vocab: Vocabulary | None = None, *, order=(0, 1, 2)) -> PanopticResult:
    """A wall (class 0), a mug (1) moving right and a dog (2) moving left; segments listed in ``order``;
    thing flags from the vocabulary (as the Segmenter's)."""
    vocab = vocab or vocabulary()
    panoptic = np.zeros((H, W), np.int32)
    parts = [(slice(0, 30), slice(0, W)), (slice(40, 70), slice(10 + 3 * t, 40 + 3 * t)),
             (slice(80, 110), slice(120 - 3 * t, 150 - 3 * t))]
    segments, embeddings = [], []
    for seg_id, cls in enumerate(order, start=1):
        (rows, cols), thing = parts[cls], vocab.is_thing[cls]
        panoptic[rows, cols] = seg_id
        area = (rows.stop - rows.start) * (cols.stop - cols.start)
        segments.append(SegmentInfo(id=seg_id, class_index=cls, score=0.9, is_thing=thing, area=area,
                                    bbox=(cols.start, rows.start, cols.stop - cols.start, rows.stop - rows.start)))
        embeddings.append(EMBED[cls])
    return PanopticResult(panoptic=panoptic, semantic=np.zeros((H, W), np.int32), segments=segments,
                          embeddings=np.stack(embeddings), vocabulary=vocab, timings_ms={})


def depth_for(result: PanopticResult) -> np.ndarray:
    """(H, W) float32: the wall at WALL metres, things at THING_Z."""
    depth = np.full((H, W), WALL, np.float32)
    for seg in result.segments:
        if seg.is_thing:
            depth[result.panoptic == seg.id] = THING_Z
    return depth


def run(stage: SegmentTracker, count: int, **kwargs):
    out = []
    for t in range(count):
        result = frame(t, **kwargs)
        out.append(stage.step(result, t * 0.1, depth_for(result), CAMERA))
    return out


def test_ids_per_segment_in_result_order_and_stuff_gets_zero():
    stage = SegmentTracker(config=perception())
    frames = [stage.step(frame(t, order=(0, 1, 2) if t % 2 else (2, 0, 1)), t * 0.1) for t in range(4)]
    assert frames[0].track_ids == (0, 0, 0)  # tentative (dog seen first: it is confirmed first)
    assert frames[1].track_ids == (0, 2, 1)  # wall, mug, dog
    assert frames[2].track_ids == (1, 0, 2)  # dog, wall, mug: same objects, other list order
    assert frames[3].track_ids == (0, 2, 1)
    assert all(f.depth_problem is DepthProblem.NO_DEPTH and f.geometry == (None,) * 3 for f in frames)
    assert set(frames[0].timings_ms) == {"tracking", "geometry"}


def test_geometry_per_segment():
    stage = SegmentTracker(config=perception())
    result = frame(0)
    out = stage.step(result, 0.0, depth_for(result), CAMERA)
    assert out.depth_problem is None and out.intrinsics == CAMERA
    wall, mug, dog = out.geometry
    assert wall.depth_m == pytest.approx(WALL) and mug.depth_m == pytest.approx(THING_Z)
    assert wall.oriented_box is None and mug.oriented_box is not None  # oriented boxes for things only
    u, v = (10 + 40 - 1) / 2, (40 + 70 - 1) / 2  # the mug's pixel centre
    np.testing.assert_allclose(mug.centroid, ((u - CAMERA.cx) * THING_Z / F, (v - CAMERA.cy) * THING_Z / F, THING_Z),
                               atol=1e-6)
    assert mug.box.size[0] == pytest.approx(30 * THING_Z / F)
    assert dog.segment_id == 3 and dog.valid


def test_vocabulary_change_keeps_ids():
    stage = SegmentTracker(config=perception())
    before = [stage.step(frame(t), t * 0.1).track_ids for t in range(4)]
    renamed = vocabulary(("background", "cup", "animal"), (False, True, True))
    after = [stage.step(frame(t, renamed), t * 0.1).track_ids for t in range(4, 8)]
    assert before[-1] == (0, 1, 2) and all(ids == (0, 1, 2) for ids in after)
    assert {t.class_name for t in stage.tracks()} == {"cup", "animal"}


def test_a_thing_that_becomes_stuff_loses_its_id_and_nothing_else_changes():
    stage = SegmentTracker(config=perception())
    [stage.step(frame(t), t * 0.1) for t in range(3)]
    as_stuff = vocabulary(things=(False, False, True))
    assert stage.step(frame(3, as_stuff), 0.3).track_ids == (0, 0, 2)


def test_disabled_tracking_and_depth():
    off = perception(enabled=False)
    off = dataclasses.replace(off, depth=dataclasses.replace(off.depth, enabled=False))
    stage = SegmentTracker(config=off)
    result = frame(0)
    out = [stage.step(result, t * 0.1, depth_for(result), CAMERA) for t in range(3)][-1]
    assert out.track_ids == (0, 0, 0) and out.depth_problem is DepthProblem.DISABLED and out.depth_m is None
    stage.set_config(perception())  # runtime switch back on
    ids = [stage.step(frame(t), t * 0.1 + 1.0, depth_for(frame(t)), CAMERA) for t in range(2)]
    assert ids[-1].track_ids == (0, 1, 2) and ids[-1].depth_problem is None


def test_set_config_applies_from_the_next_frame():
    stage = SegmentTracker(config=perception(confirm_hits=5))
    stage.step(frame(0), 0.0)
    stage.set_config(perception(confirm_hits=2))
    assert stage.step(frame(1), 0.1).track_ids == (0, 1, 2)
    assert stage.config.tracking.confirm_hits == 2


def test_stamp_back_in_time_resets_and_ids_are_not_reused():
    stage = SegmentTracker(config=perception())
    run(stage, 3)
    out = stage.step(frame(0), 0.0)  # the bag starts again
    assert out.reset and out.track_ids == (0, 0, 0)
    again = stage.step(frame(1), 0.1)
    assert not again.reset and again.track_ids == (0, 3, 4)
    stage.reset()
    assert [stage.step(frame(t), t * 0.1).track_ids for t in range(2)][-1] == (0, 5, 6)


def test_low_resolution_depth_and_intrinsics_are_rescaled():
    stage = SegmentTracker(config=perception())
    result = frame(0)
    full = stage.step(result, 0.0, depth_for(result), CAMERA)
    half = stage.step(result, 0.1, depth_for(result)[::2, ::2], CAMERA)
    assert half.depth_problem is None and half.depth_m.shape == (H, W)
    np.testing.assert_allclose(half.geometry[1].centroid, full.geometry[1].centroid, atol=1e-6)
    big_camera = CAMERA.scaled_to(2 * W, 2 * H)  # a camera_info for a 2x image of the same camera
    scaled = stage.step(result, 0.2, depth_for(result), big_camera)
    assert scaled.intrinsics.fx == pytest.approx(F) and scaled.intrinsics.width == W
    np.testing.assert_allclose(scaled.geometry[1].centroid, full.geometry[1].centroid, atol=1e-6)


@pytest.mark.parametrize("depth, camera, problem", [
    (None, CAMERA, DepthProblem.NO_DEPTH),
    (np.full((H, W), 2.0, np.float32), None, DepthProblem.NO_CAMERA_INFO),
    (np.full((H, W), np.nan, np.float32), CAMERA, DepthProblem.ALL_INVALID),
    (np.full((H, W), np.inf, np.float32), CAMERA, DepthProblem.ALL_INVALID),
    (np.full((H, W), 50.0, np.float32), CAMERA, DepthProblem.ALL_INVALID),  # beyond max_depth_m
    (np.full((H, 2 * W), 2.0, np.float32), CAMERA, DepthProblem.SIZE_MISMATCH),
    (np.full((H, W), 2.0, np.float32), CAMERA.scaled_to(W, 2 * H), DepthProblem.SIZE_MISMATCH),
    (np.zeros((0, 0), np.float32), CAMERA, DepthProblem.BAD_SHAPE),
])
def test_bad_depth_gives_a_reason_not_an_exception(depth, camera, problem):
    stage = SegmentTracker(config=perception(confirm_hits=1))
    out = stage.step(frame(0), 0.0, depth, camera)
    assert out.depth_problem is problem and out.geometry == (None,) * 3 and out.depth_m is None
    assert out.track_ids == (0, 1, 2)  # the 2D side is unaffected


def test_partly_invalid_depth_still_gives_geometry():
    stage = SegmentTracker(config=perception())
    result = frame(0)
    depth = depth_for(result)
    depth[result.panoptic == 3] = np.nan  # the dog has no depth
    out = stage.step(result, 0.0, depth, CAMERA)
    assert out.depth_problem is None and out.geometry[1].valid
    assert not out.geometry[2].valid and out.geometry[2].valid_pixels == 0 and math.isnan(out.geometry[2].depth_m)


def test_programming_errors_raise():
    stage = SegmentTracker(config=perception())
    result = frame(0)
    with pytest.raises(DepthError, match="decode_depth"):
        stage.step(result, 0.0, np.full((H, W), 2000, np.uint16), CAMERA)  # not converted to metres
    with pytest.raises(DepthError, match="decode_depth"):
        stage.step(result, 0.0, [[2.0]], CAMERA)
    with pytest.raises(ValueError, match="embeddings"):
        stage.step(dataclasses.replace(result, embeddings=result.embeddings[:2]), 0.0)


def test_decode_depth_never_raises():
    mm = np.full((4, 6), 1500, np.uint16)
    metres, problem = decode_depth(mm, "16UC1")
    assert problem is None and metres.dtype == np.float32 and np.allclose(metres, 1.5)
    metres, problem = decode_depth(np.array([[0.0, np.nan, 2.0]], np.float32), "32FC1")
    assert problem is None and np.isnan(metres[0, :2]).all() and metres[0, 2] == 2.0
    assert decode_depth(mm, "rgb8") == (None, DepthProblem.BAD_ENCODING)
    assert decode_depth(mm, "32FC1") == (None, DepthProblem.BAD_ENCODING)
    assert decode_depth(mm.astype(np.float64), "32FC1") == (None, DepthProblem.BAD_ENCODING)
    assert decode_depth(np.zeros((4, 6, 3), np.uint16), "16UC1") == (None, DepthProblem.BAD_SHAPE)
    assert decode_depth(np.zeros((0, 6), np.uint16), "16UC1") == (None, DepthProblem.BAD_SHAPE)


def test_camera_intrinsics_never_raises():
    camera, problem = camera_intrinsics([F, 0, CAMERA.cx, 0, F, CAMERA.cy, 0, 0, 1], W, H)
    assert problem is None and camera == CAMERA
    for k, size in [([0.0] * 9, (W, H)), (None, (W, H)), ([1.0] * 4, (W, H)), ([F, 0, 1, 0, F, 1, 0, 0, 1], (0, 0)),
                    ([math.nan] * 9, (W, H)), (["a"] * 9, (W, H))]:
        assert camera_intrinsics(k, *size) == (None, DepthProblem.BAD_CAMERA_INFO)


def test_config_from_yaml_overrides_and_parameters():
    cfg = load_perception_config(overrides=["tracking.high_score=0.7", "depth.cloud_stride=4"])
    assert cfg.tracking.high_score == 0.7 and cfg.depth.cloud_stride == 4
    params = config.flatten(config.read_yaml(config.shipped_config("default.yaml")))
    assert PerceptionConfig.from_parameters(params) == load_perception_config()  # other sections ignored
    with pytest.raises(config.ConfigError, match="unknown"):
        PerceptionConfig.from_parameters({**params, "depth.typo": 1})
    with pytest.raises(config.ConfigError):
        load_perception_config(overrides=["tracking.low_score=0.9"])  # above high_score


def test_labelled_cloud():
    cfg = load_perception_config()
    stage = SegmentTracker(config=perception(confirm_hits=1))
    result = frame(0)
    depth = depth_for(result)
    depth[:, :5] = np.nan
    out = stage.step(result, 0.0, depth, CAMERA)
    cloud = labelled_cloud(result.panoptic, result.segments, out.track_ids, out.depth_m, out.intrinsics,
                           dataclasses.replace(cfg.depth, cloud_stride=2))
    expected = np.zeros((H, W), bool)
    expected[::2, ::2] = True
    expected[:, :5] = False
    assert len(cloud.points) == expected.sum() and cloud.points.dtype == np.float32
    assert (cloud.cols >= 5).all() and (cloud.rows % 2 == 0).all()
    mug = cloud.segment == 1
    assert mug.any() and (cloud.track_id[mug] == 1).all() and (cloud.class_index[mug] == 1).all()
    assert np.allclose(cloud.points[mug, 2], THING_Z)
    unlabelled = result.panoptic[cloud.rows, cloud.cols] == 0
    assert (cloud.segment[unlabelled] == -1).all() and (cloud.track_id[unlabelled] == 0).all()
    assert (cloud.class_index[unlabelled] == -1).all() and unlabelled.any()
    u, v, z = cloud.cols[0], cloud.rows[0], cloud.points[0, 2]
    assert cloud.points[0, 0] == pytest.approx((u - CAMERA.cx) * z / F)
    assert cloud.points[0, 1] == pytest.approx((v - CAMERA.cy) * z / F)
