"""Per-segment 3D geometry (maskclip_ros.tracking.geometry) against analytic cases."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from maskclip_ros.tracking.geometry import (CameraIntrinsics, DepthError, GeometryConfig, depth_to_metres,
                                            resize_nearest, segment_geometry)

H, W = 240, 320
F = 250.0  # focal length in pixels
CAMERA = CameraIntrinsics(fx=F, fy=F, cx=(W - 1) / 2, cy=(H - 1) / 2, width=W, height=H)
MIN_BOX = 0.01


def make_config(**changes) -> GeometryConfig:
    values = dict(enabled=True, stamp_tolerance_s=0.02, wait_s=0.1, queue=10, publish_cloud=False, cloud_stride=2,
                  min_valid_pixels=20, min_depth_m=0.1, max_depth_m=20.0, outlier_mads=3.0, min_spread_rel=0.01,
                  histogram_resolution=0.002, min_box_size_m=MIN_BOX, oriented_boxes=True)
    return GeometryConfig(**{**values, **changes})


def rays(camera: CameraIntrinsics = CAMERA) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) normalised image coordinates x/z and y/z of every pixel centre."""
    v, u = np.mgrid[0:camera.height, 0:camera.width].astype(np.float64)
    return (u - camera.cx) / camera.fx, (v - camera.cy) / camera.fy


def rectangle_scene(rows: tuple[int, int], cols: tuple[int, int], depth: float):
    panoptic = np.zeros((H, W), np.int32)
    panoptic[rows[0]:rows[1], cols[0]:cols[1]] = 1
    return panoptic, np.full((H, W), depth, np.float32)


# --- depth conversion -------------------------------------------------------------------------------------

def test_16uc1_is_millimetres_and_zero_is_invalid():
    raw = np.array([[0, 1000], [1500, 65535]], np.uint16)
    metres = depth_to_metres(raw, "16UC1")
    assert metres.dtype == np.float32 and np.isnan(metres[0, 0])
    np.testing.assert_allclose(metres[[0, 1, 1], [1, 0, 1]], [1.0, 1.5, 65.535], rtol=1e-6)
    assert raw[0, 0] == 0 and raw[1, 0] == 1500  # input untouched


def test_16uc1_big_endian_and_single_channel_accepted():
    raw = np.array([[1000, 2000]], dtype=">u2")[..., None]  # (1, 2, 1)
    np.testing.assert_allclose(depth_to_metres(raw, "16UC1"), [[1.0, 2.0]])


def test_32fc1_nan_inf_and_non_positive_are_invalid():
    raw = np.array([[1.25, np.nan, np.inf], [-np.inf, 0.0, -2.0]], np.float32)
    metres = depth_to_metres(raw, "32FC1")
    assert metres[0, 0] == pytest.approx(1.25)
    assert np.isnan(metres.ravel()[1:]).all()
    assert np.isnan(raw[0, 1]) and raw[1, 2] == -2.0  # input untouched
    assert metres is not raw


@pytest.mark.parametrize("array, encoding, reason", [
    (np.zeros((2, 2), np.uint16), "rgb8", "not supported"),
    (np.zeros((2, 2), np.float32), "16UC1", "u16"),
    (np.zeros((2, 2), np.uint16), "32FC1", "f32"),
    (np.zeros((2, 2, 3), np.uint16), "16UC1", "shape"),
    (np.zeros((0, 4), np.float32), "32FC1", "shape"),
])
def test_bad_depth_input_raises_depth_error(array, encoding, reason):
    with pytest.raises(DepthError, match=reason):
        depth_to_metres(array, encoding)


# --- intrinsics ---------------------------------------------------------------------------------------------

def test_intrinsics_from_k():
    cam = CameraIntrinsics.from_k([500.0, 0, 320.5, 0, 510.0, 240.5, 0, 0, 1], 640, 480)
    assert (cam.fx, cam.fy, cam.cx, cam.cy, cam.width, cam.height) == (500.0, 510.0, 320.5, 240.5, 640, 480)


@pytest.mark.parametrize("k, size, reason", [
    ([0.0] * 9, (640, 480), "all zero"),
    (None, (640, 480), "9 entries"),
    ([500.0, 0, 320], (640, 480), "9 entries"),
    ([0.0, 0, 320, 0, 500, 240, 0, 0, 1], (640, 480), "focal"),
    ([500.0, 0, 320, 0, 500, 240, 0, 0, 1], (0, 480), "width"),
    ([500.0, 0, math.nan, 0, 500, 240, 0, 0, 1], (640, 480), "finite"),
])
def test_bad_intrinsics_raise_depth_error(k, size, reason):
    with pytest.raises(DepthError, match=reason):
        CameraIntrinsics.from_k(k, *size)


def test_scaled_intrinsics_project_points_to_the_resized_pixel():
    small = CameraIntrinsics(fx=200.0, fy=210.0, cx=79.5, cy=59.5, width=160, height=120)
    big = small.scaled_to(640, 480)
    assert (big.fx, big.fy, big.width, big.height) == (800.0, 840.0, 640, 480)
    point = np.array([0.3, -0.2, 1.7])
    u_small = small.fx * point[0] / point[2] + small.cx
    u_big = big.fx * point[0] / point[2] + big.cx
    assert u_big == pytest.approx((u_small + 0.5) * 4 - 0.5)  # pixel-centre alignment
    back = big.scaled_to(160, 120)
    assert (back.fx, back.cx, back.cy) == pytest.approx((small.fx, small.cx, small.cy))


def test_low_resolution_depth_resized_gives_the_same_geometry():
    panoptic, depth = rectangle_scene((60, 180), (80, 240), 2.0)
    low = depth[::2, ::2]  # (120, 160) depth camera
    upscaled = resize_nearest(low, H, W)
    assert upscaled.shape == (H, W) and low.shape == (120, 160)
    full, = segment_geometry(panoptic, [1], depth, CAMERA, make_config())
    again, = segment_geometry(panoptic, [1], upscaled, CAMERA, make_config())
    np.testing.assert_allclose(again.centroid, full.centroid, atol=1e-9)


# --- analytic geometry -----------------------------------------------------------------------------------------

def test_fronto_parallel_plane_centroid_and_box_are_analytic():
    (v0, v1), (u0, u1), z = (50, 150), (100, 260), 2.5
    panoptic, depth = rectangle_scene((v0, v1), (u0, u1), z)
    seg, = segment_geometry(panoptic, [1], depth, CAMERA, make_config())
    assert seg.valid and seg.valid_pixels == seg.inlier_pixels == (v1 - v0) * (u1 - u0)
    assert seg.depth_m == pytest.approx(z, rel=1e-6)
    expected = (((u0 + u1 - 1) / 2 - CAMERA.cx) * z / F, ((v0 + v1 - 1) / 2 - CAMERA.cy) * z / F, z)
    np.testing.assert_allclose(seg.centroid, expected, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(seg.box.center, expected, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(seg.box.size, ((u1 - u0) * z / F, (v1 - v0) * z / F, MIN_BOX), rtol=1e-6)
    assert seg.box.orientation == (0.0, 0.0, 0.0, 1.0)


def test_rectangle_of_known_metric_size():
    width_m, height_m, z, centre = 0.40, 0.30, 2.0, (0.1, -0.05)
    x, y = rays()
    inside = (np.abs(x * z - centre[0]) <= width_m / 2) & (np.abs(y * z - centre[1]) <= height_m / 2)
    panoptic = np.where(inside, 7, 0).astype(np.int32)
    seg, = segment_geometry(panoptic, [7], np.full((H, W), z, np.float32), CAMERA, make_config())
    pixel_m = z / F
    np.testing.assert_allclose(seg.box.size[:2], (width_m, height_m), atol=pixel_m)
    np.testing.assert_allclose(seg.centroid, (*centre, z), atol=pixel_m / 2)


def test_tilted_plane_has_the_analytic_depth_extent():
    """A plane z = z0 + t * X (turned about the y axis), seen over a pixel rectangle."""
    z0, t = 2.0, 0.5
    x, _ = rays()
    depth = (z0 / (1 - t * x)).astype(np.float32)  # ray (x, y, 1) * z meets the plane
    panoptic, _ = rectangle_scene((40, 200), (60, 260), 1.0)
    seg, = segment_geometry(panoptic, [1], depth, CAMERA, make_config(min_spread_rel=0.2))
    inside = depth[panoptic == 1].astype(np.float64)
    assert seg.inlier_pixels == seg.valid_pixels  # a slanted surface is not trimmed
    assert seg.box.size[2] == pytest.approx(inside.max() - inside.min(), rel=1e-5)
    assert seg.centroid[2] == pytest.approx(inside.mean(), rel=1e-5)
    normal = np.array([-t, 0.0, 1.0]) / math.hypot(t, 1.0)
    axes = Rotation.from_quat(seg.oriented_box.orientation).as_matrix()
    assert abs(axes[:, 2] @ normal) > 0.999  # the thinnest principal axis is the plane normal


def test_background_bleeding_and_flying_pixels_are_trimmed():
    panoptic, depth = rectangle_scene((50, 150), (100, 200), 1.0)
    depth[50:70, 100:200] = 3.0  # 20 % of the mask sees the wall behind
    depth[100, 100:110] = 0.4  # flying pixels in front
    seg, = segment_geometry(panoptic, [1], depth, CAMERA, make_config())
    assert seg.valid_pixels == 100 * 100
    assert seg.inlier_pixels == 100 * 100 - 20 * 100 - 10
    assert seg.depth_m == pytest.approx(1.0, rel=1e-6)
    assert seg.box.size[2] == pytest.approx(MIN_BOX)
    assert seg.centroid[2] == pytest.approx(1.0, rel=1e-6)


@pytest.mark.parametrize("encoding, raw, z", [("16UC1", np.uint16(1500), 1.5), ("32FC1", np.float32(1.5), 1.5)])
def test_both_encodings_end_to_end(encoding, raw, z):
    panoptic, _ = rectangle_scene((100, 140), (150, 200), 1.0)
    depth = depth_to_metres(np.full((H, W), raw), encoding)
    seg, = segment_geometry(panoptic, [1], depth, CAMERA, make_config())
    assert seg.depth_m == pytest.approx(z, rel=1e-6)
    assert seg.box.size[0] == pytest.approx(50 * z / F, rel=1e-6)


def test_invalid_pixels_are_not_counted():
    panoptic, depth = rectangle_scene((100, 140), (150, 200), 1.5)
    depth[100:110, 150:200] = np.nan
    depth[110:112, 150:200] = np.inf
    depth[112, 150:200] = 25.0  # beyond max_depth_m
    depth[113, 150:200] = 0.05  # nearer than min_depth_m
    seg, = segment_geometry(panoptic, [1], depth, CAMERA, make_config())
    assert seg.valid_pixels == (140 - 114) * 50
    assert seg.valid and seg.depth_m == pytest.approx(1.5, rel=1e-6)
    assert seg.centroid[1] == pytest.approx(((114 + 139) / 2 - CAMERA.cy) * 1.5 / F, rel=1e-6)


def test_all_invalid_and_too_few_pixels_give_no_geometry():
    panoptic, depth = rectangle_scene((100, 140), (150, 200), 1.5)
    panoptic[10:13, 10:15] = 2  # 15 pixels < min_valid_pixels
    depth[100:140, 150:200] = np.nan
    panoptic_before, depth_before = panoptic.copy(), depth.copy()
    segs = segment_geometry(panoptic, [1, 2, 3], depth, CAMERA, make_config())
    assert [s.segment_id for s in segs] == [1, 2, 3]
    assert [s.valid_pixels for s in segs] == [0, 15, 0]  # id 3 is not in the image
    for seg in segs:
        assert not seg.valid and math.isnan(seg.depth_m) and seg.inlier_pixels == 0
        assert seg.centroid is None and seg.box is None and seg.oriented_box is None
    np.testing.assert_array_equal(panoptic, panoptic_before)
    np.testing.assert_array_equal(depth, depth_before)


def test_several_segments_and_stuff_without_oriented_box():
    panoptic = np.zeros((H, W), np.int32)
    panoptic[120:, :] = 5  # floor (stuff)
    panoptic[40:80, 40:100] = 9  # a thing
    depth = np.full((H, W), 3.0, np.float32)
    depth[40:80, 40:100] = 1.2
    floor, thing = segment_geometry(panoptic, [5, 9], depth, CAMERA, make_config(), oriented=[False, True])
    assert floor.valid and floor.oriented_box is None
    assert thing.oriented_box is not None and thing.depth_m == pytest.approx(1.2, rel=1e-6)
    assert floor.depth_m == pytest.approx(3.0, rel=1e-6)
    none, = segment_geometry(panoptic, [9], depth, CAMERA, make_config(oriented_boxes=False))
    assert none.oriented_box is None and none.box is not None


def test_oriented_box_of_a_rotated_rectangle():
    length, width, z, angle = 0.6, 0.2, 2.0, math.radians(30)
    x, y = rays()
    along = x * z * math.cos(angle) + y * z * math.sin(angle)
    across = -x * z * math.sin(angle) + y * z * math.cos(angle)
    panoptic = np.where((np.abs(along) <= length / 2) & (np.abs(across) <= width / 2), 3, 0).astype(np.int32)
    seg, = segment_geometry(panoptic, [3], np.full((H, W), z, np.float32), CAMERA, make_config())
    box = seg.oriented_box
    pixel_m = z / F
    np.testing.assert_allclose(box.size[:2], (length, width), atol=2 * pixel_m)
    assert box.size[2] == pytest.approx(MIN_BOX)
    np.testing.assert_allclose(box.center, (0.0, 0.0, z), atol=pixel_m)
    axes = Rotation.from_quat(box.orientation).as_matrix()  # columns = box axes in the camera frame
    assert abs(axes[:, 0] @ [math.cos(angle), math.sin(angle), 0.0]) > 0.9995
    assert np.linalg.det(axes) == pytest.approx(1.0)
    expected_aabb = length * math.cos(angle) + width * math.sin(angle)
    assert seg.box.size[0] == pytest.approx(expected_aabb, abs=2 * pixel_m)
    again, = segment_geometry(panoptic, [3], np.full((H, W), z, np.float32), CAMERA, make_config())
    assert again.oriented_box.orientation == box.orientation  # deterministic signs


def test_mismatched_inputs_raise_depth_error():
    panoptic, depth = rectangle_scene((10, 20), (10, 20), 1.0)
    with pytest.raises(DepthError, match="resize the depth"):
        segment_geometry(panoptic, [1], depth[::2, ::2], CAMERA, make_config())
    with pytest.raises(DepthError, match="scaled_to"):
        segment_geometry(panoptic, [1], depth, CAMERA.scaled_to(640, 480), make_config())
    with pytest.raises(ValueError, match="distinct positive"):
        segment_geometry(panoptic, [1, 1], depth, CAMERA, make_config())
    assert segment_geometry(panoptic, [], depth, CAMERA, make_config()) == []


@pytest.mark.parametrize("change", [dict(min_valid_pixels=0), dict(min_depth_m=0.0), dict(max_depth_m=0.05),
                                    dict(outlier_mads=0.0), dict(histogram_resolution=0.5),
                                    dict(min_box_size_m=0.0), dict(oriented_boxes=1), dict(enabled=1),
                                    dict(stamp_tolerance_s=2.0), dict(wait_s=-0.1), dict(wait_s=2.0), dict(queue=0),
                                    dict(cloud_stride=65), dict(cloud_stride=2.0), dict(publish_cloud="yes")])
def test_config_validation(change):
    with pytest.raises(ValueError, match="depth."):
        make_config(**change)


def test_config_has_no_defaults():
    assert all(f.default is dataclasses.MISSING for f in dataclasses.fields(GeometryConfig))
