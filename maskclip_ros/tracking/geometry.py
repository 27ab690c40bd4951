"""Per-segment 3D geometry from a registered depth image: robust depth, centroid, axis-aligned and oriented boxes.

Everything is in the colour camera's optical frame (x right, y down, z forward, metres). The caller brings the
depth to the panoptic image's resolution first (``resize_nearest``; ``CameraIntrinsics.scaled_to`` for the
matching intrinsics) so one pixel grid holds ids, depth and the pinhole model.

Per segment (one pass over the pixels, grouped with ``bincount`` / ``ufunc.at``, no loop over pixels):
- valid pixels: finite depth within [min_depth_m, max_depth_m];
- robust depth: the median and MAD of log-depth from a histogram with relative bins (``histogram_resolution``);
  inliers lie within ``outlier_mads`` robust sigmas (at least ``min_spread_rel`` of the depth) of the median,
  so background bleeding through a mask edge or flying pixels do not move the result; the reported depth is
  the mean inlier depth in the inliers' median bin (exact for a flat segment, else within one bin);
- centroid: the mean of the inlier points;
- axis-aligned box: the inliers' extent plus one pixel footprint (a w-pixel wide patch at depth z is
  w * z / fx wide), each side at least ``min_box_size_m``;
- oriented box (things, when ``oriented_boxes``): the same on the principal axes of the inlier points
  (largest spread first, right-handed, signs made deterministic), rotation as a quaternion (x, y, z, w).
A segment with fewer than ``min_valid_pixels`` valid pixels gets its counts, NaN depth and no geometry.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy.spatial.transform import Rotation

__all__ = ["Box3D", "CameraIntrinsics", "DepthError", "GeometryConfig", "Segment3D", "depth_to_metres",
           "resize_nearest", "segment_geometry"]

MM_PER_M = 1000.0
MAD_TO_SIGMA = 1.4826  # MAD of a normal distribution times this = its standard deviation
IDENTITY_QUATERNION = (0.0, 0.0, 0.0, 1.0)  # x, y, z, w
DEPTH_DTYPES = {"16UC1": ("u", 2), "32FC1": ("f", 4)}  # encoding -> numpy dtype kind and item size
MAX_QUEUE = 1000  # most depth images a node may keep for pairing
MAX_CLOUD_STRIDE = 64  # coarsest sampling of the labelled cloud


class DepthError(ValueError):
    """Depth input that cannot be used: wrong encoding, dtype or shape, or unusable camera intrinsics."""


def depth_to_metres(array: np.ndarray, encoding: str) -> np.ndarray:
    """A depth image as float32 metres, NaN where invalid (a new array; the input is not modified).

    Args:
        array: (H, W) or (H, W, 1) depth: uint16 millimetres for "16UC1" (0 = invalid), float32 metres for
            "32FC1" (NaN, inf and values <= 0 are invalid). Either byte order.
        encoding: the sensor_msgs/Image encoding.
    Returns:
        (H, W) float32 metres.
    """
    if encoding not in DEPTH_DTYPES:
        raise DepthError(f"depth encoding {encoding!r} is not supported; expected one of {sorted(DEPTH_DTYPES)}")
    depth = np.asarray(array)
    if depth.ndim == 3 and depth.shape[2] == 1:
        depth = depth[..., 0]
    if depth.ndim != 2 or depth.size == 0:
        raise DepthError(f"depth must be a non-empty (H, W) image, got shape {depth.shape}")
    kind, itemsize = DEPTH_DTYPES[encoding]
    if (depth.dtype.kind, depth.dtype.itemsize) != (kind, itemsize):
        raise DepthError(f"depth encoding {encoding} needs a {kind}{itemsize * 8} array, got dtype {depth.dtype}")
    if encoding == "16UC1":
        metres = depth.astype(np.float32) / np.float32(MM_PER_M)
        metres[depth == 0] = np.nan
        return metres
    metres = depth.astype(np.float32)  # always a copy
    with np.errstate(invalid="ignore"):
        metres[~(np.isfinite(metres) & (metres > 0))] = np.nan
    return metres


def resize_nearest(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """(..., h, w) -> (..., height, width), nearest neighbour with pixel-centre alignment (output pixel i samples
    input pixel floor((i + 0.5) * h / height)); the convention ``CameraIntrinsics.scaled_to`` assumes."""
    h, w = image.shape[-2:]
    if (h, w) == (height, width):
        return image.copy()
    rows = ((np.arange(height) + 0.5) * (h / height)).astype(np.int64)  # (height,)
    cols = ((np.arange(width) + 0.5) * (w / width)).astype(np.int64)  # (width,)
    return image[..., rows[:, None], cols[None, :]]


@dataclass(frozen=True, kw_only=True)
class CameraIntrinsics:
    """Pinhole intrinsics of the image the depth is registered to (pixel centres at integer coordinates)."""

    fx: float  # focal length along x in pixels (> 0)
    fy: float  # focal length along y in pixels (> 0)
    cx: float  # principal point x (column) in pixels
    cy: float  # principal point y (row) in pixels
    width: int  # image width in pixels the intrinsics describe (> 0)
    height: int  # image height in pixels (> 0)

    def __post_init__(self) -> None:
        values = (self.fx, self.fy, self.cx, self.cy)
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
            raise DepthError(f"camera intrinsics must be finite numbers, got fx, fy, cx, cy = {values}")
        if self.fx <= 0 or self.fy <= 0:
            raise DepthError(f"camera focal lengths must be > 0, got fx={self.fx}, fy={self.fy} "
                             "(an uncalibrated camera_info?)")
        for name in ("width", "height"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
                raise DepthError(f"camera {name} must be a positive integer, got {value!r}")

    @classmethod
    def from_k(cls, k: Sequence[float] | None, width: int, height: int) -> "CameraIntrinsics":
        """From a row-major 3x3 camera matrix (``sensor_msgs/CameraInfo.k``) and the image size it is for."""
        if k is None or len(k) != 9:
            raise DepthError(f"camera matrix K must have 9 entries, got {None if k is None else len(k)}")
        k = [float(v) for v in k]
        if not any(k):
            raise DepthError("camera matrix K is all zero (an uncalibrated or missing camera_info)")
        return cls(fx=k[0], fy=k[4], cx=k[2], cy=k[5], width=int(width), height=int(height))

    def scaled_to(self, width: int, height: int) -> "CameraIntrinsics":
        """The same camera at another resolution (pixel-centre aligned, as ``resize_nearest``)."""
        sx, sy = width / self.width, height / self.height
        return CameraIntrinsics(fx=self.fx * sx, fy=self.fy * sy, cx=(self.cx + 0.5) * sx - 0.5,
                                cy=(self.cy + 0.5) * sy - 0.5, width=int(width), height=int(height))


@dataclass(frozen=True, kw_only=True)
class GeometryConfig:
    """The ``depth`` section of the params (config/default.yaml documents every field): the geometry keys and
    the node's depth-input keys (``enabled`` is honoured by ``stage.SegmentTracker``; ``stamp_tolerance_s``,
    ``wait_s``, ``queue``, ``publish_cloud`` and ``cloud_stride`` are read by the node)."""

    enabled: bool  # use depth when depth images and camera_info arrive (false: no 3D at all)
    stamp_tolerance_s: float  # [0, 1] a depth image pairs with the colour frame whose stamp is this close
    wait_s: float  # [0, 1] how long a segmented frame waits for its depth image to arrive (0 = no wait)
    queue: int  # [1, 1000] depth images kept to pair with frames by stamp
    publish_cloud: bool  # publish a labelled point cloud
    cloud_stride: int  # [1, 64] every n-th pixel (along rows and columns) in the labelled cloud
    min_valid_pixels: int  # a segment needs at least this many valid depth pixels for any 3D geometry
    min_depth_m: float  # nearer readings are invalid (the sensor's minimum range); > 0
    max_depth_m: float  # farther readings are invalid; > min_depth_m
    outlier_mads: float  # inliers lie within this many robust sigmas (1.4826 * MAD of log-depth) of the median
    min_spread_rel: float  # floor on that sigma as a fraction of the depth, so a flat segment keeps its pixels
    histogram_resolution: float  # relative bin width of the log-depth histogram for median and MAD (0.002 = 0.2 %)
    min_box_size_m: float  # every box side is at least this many metres (a flat surface has no thickness)
    oriented_boxes: bool  # also fit an oriented (PCA) box to thing segments

    def __post_init__(self) -> None:
        for name in ("enabled", "publish_cloud", "oriented_boxes"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"depth.{name} must be true or false, got {getattr(self, name)!r}")
        _check_range("stamp_tolerance_s", self.stamp_tolerance_s, 0.0, 1.0)
        _check_range("wait_s", self.wait_s, 0.0, 1.0)
        _check_int("queue", self.queue, 1, MAX_QUEUE)
        _check_int("cloud_stride", self.cloud_stride, 1, MAX_CLOUD_STRIDE)
        if isinstance(self.min_valid_pixels, bool) or not 1 <= self.min_valid_pixels <= 10**8:
            raise ValueError(f"depth.min_valid_pixels must be an integer in [1, 100000000], got "
                             f"{self.min_valid_pixels!r}")
        if not 0.0 < self.min_depth_m < self.max_depth_m <= 1000.0:
            raise ValueError(f"depth needs 0 < min_depth_m < max_depth_m <= 1000, got min_depth_m="
                             f"{self.min_depth_m}, max_depth_m={self.max_depth_m}")
        _check_range("outlier_mads", self.outlier_mads, 0.1, 100.0)
        _check_range("min_spread_rel", self.min_spread_rel, 0.0, 1.0)
        _check_range("histogram_resolution", self.histogram_resolution, 0.0005, 0.1)
        _check_range("min_box_size_m", self.min_box_size_m, 1e-6, 10.0)


def _check_range(name: str, value: float, lo: float, hi: float) -> None:
    if isinstance(value, bool) or not (isinstance(value, (int, float)) and lo <= value <= hi):
        raise ValueError(f"depth.{name} must be in [{lo}, {hi}], got {value!r}")


def _check_int(name: str, value: int, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not (isinstance(value, (int, np.integer)) and lo <= value <= hi):
        raise ValueError(f"depth.{name} must be an integer in [{lo}, {hi}], got {value!r}")


@dataclass(frozen=True, kw_only=True)
class Box3D:
    """A box in the camera optical frame."""

    center: tuple[float, float, float]  # metres
    size: tuple[float, float, float]  # metres along the box's own x, y, z axes; each >= min_box_size_m
    orientation: tuple[float, float, float, float]  # quaternion (x, y, z, w): box axes -> camera frame


@dataclass(frozen=True, kw_only=True)
class Segment3D:
    """One segment's 3D geometry; ``centroid``/``box`` are None and ``depth_m`` NaN without enough depth."""

    segment_id: int  # the id in the panoptic image
    valid_pixels: int  # pixels of the segment with valid depth
    inlier_pixels: int  # of those, kept by the outlier rule (0 when the segment has no geometry)
    depth_m: float  # robust depth (metres) or NaN
    centroid: tuple[float, float, float] | None  # mean inlier point (metres)
    box: Box3D | None  # axis-aligned box of the inliers (orientation = identity)
    oriented_box: Box3D | None  # PCA box (things with config.oriented_boxes only)

    @property
    def valid(self) -> bool:
        return self.centroid is not None


@dataclass(frozen=True)
class _Pixels:
    """Valid depth pixels of the requested segments (P pixels, S segments)."""

    seg: np.ndarray  # (P,) int32 index into the requested segment ids
    z: np.ndarray  # (P,) float32 depth in metres
    flat: np.ndarray  # (P,) int64 pixel index row * W + column
    counts: np.ndarray  # (S,) int64 valid pixels per segment

    def subset(self, keep: np.ndarray) -> "_Pixels":
        seg = self.seg[keep]
        return _Pixels(seg, self.z[keep], self.flat[keep], np.bincount(seg, minlength=len(self.counts)))


def segment_geometry(panoptic: np.ndarray, segment_ids: Sequence[int], depth_m: np.ndarray,
                     intrinsics: CameraIntrinsics, config: GeometryConfig, *,
                     oriented: Sequence[bool] | None = None) -> list[Segment3D]:
    """3D geometry of each listed segment.

    Args:
        panoptic: (H, W) integer segment ids (0 = unlabeled).
        segment_ids: the positive, distinct ids to measure (order kept in the result).
        depth_m: (H, W) float depth in metres, NaN where invalid (``depth_to_metres``, ``resize_nearest``).
        intrinsics: the camera at (W, H).
        config: validity, outlier and box settings.
        oriented: per segment id, whether it may get an oriented box (things); None = all.
    Returns:
        One Segment3D per id.
    """
    ids = _check_inputs(panoptic, segment_ids, depth_m, intrinsics, oriented)
    if len(ids) == 0:
        return []
    pixels = _gather(panoptic, ids, depth_m, config)
    inliers, depth = _robust_depth(pixels, config)
    n_seg = len(ids)
    good = (pixels.counts >= config.min_valid_pixels) & (inliers.counts > 0)  # (S,)
    points = _points(inliers, intrinsics, panoptic.shape[1])  # 3 x (P',) x, y, z
    n = np.maximum(inliers.counts, 1)
    centroid = np.stack([np.bincount(inliers.seg, c, n_seg) / n for c in points], 1)  # (S, 3)
    offsets = [c - centroid[:, a][inliers.seg] for a, c in enumerate(points)]  # 3 x (P',) from the centroid
    footprint = np.stack([depth / intrinsics.fx, depth / intrinsics.fy, np.zeros_like(depth)], 1)  # (S, 3)
    aabb = _box(inliers.seg, offsets, None, centroid, footprint, config)
    want = np.ones(n_seg, bool) if oriented is None else np.asarray(oriented, bool)
    want &= good & config.oriented_boxes
    obb = _oriented_boxes(inliers.seg, offsets, centroid, footprint, want, config) if want.any() else None
    valid, inlier_count, depths, centroids = (good.tolist(), inliers.counts.tolist(), depth.tolist(),
                                              centroid.tolist())
    return [Segment3D(segment_id=i, valid_pixels=count, inlier_pixels=inlier_count[s] if valid[s] else 0,
                      depth_m=depths[s] if valid[s] else math.nan,
                      centroid=tuple(centroids[s]) if valid[s] else None, box=aabb[s] if valid[s] else None,
                      oriented_box=obb[s] if obb is not None and want[s] else None)
            for s, (i, count) in enumerate(zip(ids.tolist(), pixels.counts.tolist()))]


def _check_inputs(panoptic, segment_ids, depth_m, intrinsics, oriented) -> np.ndarray:
    """Validated (S,) int64 segment ids; DepthError for images that do not fit together."""
    if panoptic.ndim != 2 or panoptic.dtype.kind not in "iu":
        raise ValueError(f"panoptic must be an (H, W) integer id image, got {panoptic.shape} {panoptic.dtype}")
    if depth_m.ndim != 2 or depth_m.dtype.kind != "f":
        raise DepthError(f"depth_m must be an (H, W) float image in metres, got {depth_m.shape} {depth_m.dtype}")
    if depth_m.shape != panoptic.shape:
        raise DepthError(f"depth is {depth_m.shape[1]}x{depth_m.shape[0]} but the panoptic image is "
                         f"{panoptic.shape[1]}x{panoptic.shape[0]}; resize the depth first (resize_nearest)")
    if (intrinsics.height, intrinsics.width) != panoptic.shape:
        raise DepthError(f"camera intrinsics are for {intrinsics.width}x{intrinsics.height} but the image is "
                         f"{panoptic.shape[1]}x{panoptic.shape[0]}; use CameraIntrinsics.scaled_to")
    ids = np.asarray(segment_ids, dtype=np.int64).reshape(-1)
    if (ids <= 0).any() or len(np.unique(ids)) != len(ids):
        raise ValueError(f"segment_ids must be distinct positive ids, got {ids.tolist()}")
    if oriented is not None and len(oriented) != len(ids):
        raise ValueError(f"oriented must have one flag per segment id ({len(ids)}), got {len(oriented)}")
    return ids


def _gather(panoptic: np.ndarray, ids: np.ndarray, depth_m: np.ndarray, config: GeometryConfig) -> _Pixels:
    """The requested segments' pixels with valid depth."""
    lookup = np.full(int(ids.max()) + 2, -1, dtype=np.int32)  # segment id -> index (-1: not requested)
    lookup[ids] = np.arange(len(ids), dtype=np.int32)
    seg = np.take(lookup, panoptic.ravel(), mode="clip")  # (H*W,); larger ids hit the last entry, 0 the first
    z = depth_m.ravel()
    ok = seg >= 0
    with np.errstate(invalid="ignore"):  # NaN compares False
        ok &= z >= config.min_depth_m
        ok &= z <= config.max_depth_m
    flat = np.flatnonzero(ok)  # (P,)
    seg = seg[flat]
    return _Pixels(seg, z[flat].astype(np.float32), flat, np.bincount(seg, minlength=len(ids)))


def _robust_depth(pixels: _Pixels, config: GeometryConfig) -> tuple[_Pixels, np.ndarray]:
    """Inlier pixels and the robust depth per segment (S,) (NaN where a segment has no pixels)."""
    step = math.log1p(config.histogram_resolution)  # log-depth bin width
    n_bins = int(math.ceil(math.log(config.max_depth_m / config.min_depth_m) / step)) + 1
    scale = np.float32(1.0 / step)
    bins = np.minimum((np.log(pixels.z / np.float32(config.min_depth_m)) * scale).astype(np.int32),
                      n_bins - 1)  # (P,)
    n_seg = len(pixels.counts)
    median = _histogram_median(pixels.seg, bins, n_seg, n_bins)  # (S,) bin index
    dev = np.abs(bins - median[pixels.seg])  # (P,) in bins
    mad = _histogram_median(pixels.seg, dev, n_seg, n_bins)  # (S,) in bins
    sigma = np.maximum(MAD_TO_SIGMA * mad * step, math.log1p(config.min_spread_rel))  # (S,) log-depth
    keep = dev * step <= config.outlier_mads * sigma[pixels.seg] + step / 2  # half a bin of rounding slack
    inliers = pixels.subset(keep)
    inlier_bins = bins[keep]
    centre = _histogram_median(inliers.seg, inlier_bins, n_seg, n_bins)  # (S,)
    in_centre = inlier_bins == centre[inliers.seg]
    total = np.bincount(inliers.seg[in_centre], inliers.z[in_centre], n_seg)
    count = np.bincount(inliers.seg[in_centre], minlength=n_seg)
    with np.errstate(invalid="ignore", divide="ignore"):
        return inliers, total / count


def _histogram_median(seg: np.ndarray, values: np.ndarray, n_seg: int, n_bins: int) -> np.ndarray:
    """Lower median of non-negative integer ``values`` (< n_bins) per segment, (S,) int32 (0 when empty)."""
    key = seg.astype(np.int64) * n_bins + values  # (P,) S * B fits easily
    hist = np.bincount(key, minlength=n_seg * n_bins).reshape(n_seg, n_bins)
    cumulative = np.cumsum(hist, axis=1)  # (S, B)
    return np.argmax(2 * cumulative >= cumulative[:, -1:], axis=1).astype(np.int32)


def _points(pixels: _Pixels, intrinsics: CameraIntrinsics, width: int) -> list[np.ndarray]:
    """x, y, z (P,) float64 each: the pixels' points in the optical frame."""
    v, u = np.divmod(pixels.flat, width)
    z = pixels.z.astype(np.float64)
    return [(u - intrinsics.cx) * z / intrinsics.fx, (v - intrinsics.cy) * z / intrinsics.fy, z]


def _box(seg: np.ndarray, local: list[np.ndarray], axes: np.ndarray | None, centroid: np.ndarray,
         footprint: np.ndarray, config: GeometryConfig) -> list[Box3D]:
    """Boxes around each segment's points, given as offsets from its centroid along the box axes (3 x (P,));
    ``axes`` (S, 3, 3): columns = box axes in the camera frame (None = the camera axes). The pixel footprint
    (S, 3) is projected onto the box axes and added."""
    n_seg = len(centroid)
    lo = np.full((n_seg, 3), np.inf)
    hi = np.full((n_seg, 3), -np.inf)
    for a in range(3):  # 1-D ufunc.at is fast; on (P, 3) values it is not
        np.minimum.at(lo[:, a], seg, local[a])
        np.maximum.at(hi[:, a], seg, local[a])
    empty = ~np.isfinite(lo).all(1)
    lo[empty], hi[empty] = 0.0, 0.0
    middle = (lo + hi) / 2  # (S, 3) in box axes
    if axes is None:
        pad, center, quats = footprint, centroid + middle, np.tile(IDENTITY_QUATERNION, (n_seg, 1))
    else:
        pad = np.einsum("si,sij->sj", footprint, np.abs(axes))  # (S, 3)
        center = centroid + np.einsum("sij,sj->si", axes, middle)
        quats = Rotation.from_matrix(axes).as_quat()  # (S, 4) x, y, z, w
    size = np.maximum(hi - lo + pad, config.min_box_size_m)
    return [Box3D(center=tuple(c), size=tuple(z), orientation=tuple(q))
            for c, z, q in zip(center.tolist(), size.tolist(), quats.tolist())]


def _oriented_boxes(seg: np.ndarray, offsets: list[np.ndarray], centroid: np.ndarray, footprint: np.ndarray,
                    want: np.ndarray, config: GeometryConfig) -> list[Box3D]:
    """PCA boxes for the segments flagged in ``want`` (the others' entries are not meaningful)."""
    keep = want[seg]
    seg = seg[keep]
    d = [o[keep] for o in offsets]  # 3 x (P'',) offsets from the centroid, wanted segments only
    n_seg = len(want)
    n = np.maximum(np.bincount(seg, minlength=n_seg), 1).astype(np.float64)  # (S,)
    cov = np.empty((n_seg, 3, 3))
    for a in range(3):
        for b in range(a, 3):
            cov[:, a, b] = cov[:, b, a] = np.bincount(seg, d[a] * d[b], n_seg) / n
    _, vectors = np.linalg.eigh(cov)  # (S, 3, 3) columns by ascending eigenvalue
    axes = _canonical_axes(vectors[:, :, ::-1])
    local = [sum(d[a] * axes[:, a, j][seg] for a in range(3)) for j in range(3)]  # 3 x (P'',) along box axes
    return _box(seg, local, axes, centroid, footprint, config)


def _canonical_axes(axes: np.ndarray) -> np.ndarray:
    """(S, 3, 3) column axes made deterministic: the first two point where their largest component is positive;
    the third is their cross product (a proper rotation)."""
    first_two = axes[:, :, :2]  # (S, 3, 2)
    largest = np.take_along_axis(first_two, np.abs(first_two).argmax(1)[:, None, :], 1)  # (S, 1, 2)
    first_two = first_two * np.where(largest < 0, -1.0, 1.0)
    third = np.cross(first_two[:, :, 0], first_two[:, :, 1])  # (S, 3)
    return np.concatenate([first_two, third[:, :, None]], axis=2)
