"""A labelled point cloud of one frame (for ``publish_cloud``): every ``stride``-th pixel with valid depth.

The node packs it into a ``sensor_msgs/PointCloud2`` (x, y, z, rgb, instance id, class index); this module only
selects the pixels and back-projects them, in the colour camera's optical frame (x right, y down, z forward).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from maskclip_ros.tracking.geometry import CameraIntrinsics, GeometryConfig

__all__ = ["LabelledCloud", "labelled_cloud"]


@dataclass(frozen=True)
class LabelledCloud:
    """N labelled points: ``points`` (N, 3) float32 metres; ``rows`` / ``cols`` (N,) int64 pixel of each point
    (index the colour image for rgb); ``segment`` (N,) int64 index into the frame's segments list (-1 =
    unlabelled pixel); ``track_id`` (N,) int64 (0 = stuff, untracked or unlabelled); ``class_index`` (N,)
    int64 (-1 = unlabelled)."""

    points: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    segment: np.ndarray
    track_id: np.ndarray
    class_index: np.ndarray


def labelled_cloud(panoptic: np.ndarray, segments: Sequence, track_ids: Sequence[int], depth_m: np.ndarray,
                   intrinsics: CameraIntrinsics, config: GeometryConfig) -> LabelledCloud:
    """The cloud of one frame.

    Args:
        panoptic: (H, W) int segment ids (0 = unlabelled).
        segments: the frame's segments (``SegmentInfo``: ``id``, ``class_index``).
        track_ids: one id per segment (``TrackedFrame.track_ids``).
        depth_m: (H, W) float metres at the panoptic image's size (``TrackedFrame.depth_m``).
        intrinsics: the camera at (W, H) (``TrackedFrame.intrinsics``).
        config: ``cloud_stride`` and the valid depth range.
    """
    stride = config.cloud_stride
    ids = panoptic[::stride, ::stride]  # (h', w')
    z = depth_m[::stride, ::stride]
    with np.errstate(invalid="ignore"):
        valid = (z >= config.min_depth_m) & (z <= config.max_depth_m)  # NaN compares False
    rows, cols = np.nonzero(valid)
    z = z[rows, cols].astype(np.float64)
    rows, cols = rows * stride, cols * stride  # full-resolution pixels
    points = np.stack([(cols - intrinsics.cx) * z / intrinsics.fx, (rows - intrinsics.cy) * z / intrinsics.fy, z],
                      axis=1).astype(np.float32)  # (N, 3)
    lookup = np.full(int(max([s.id for s in segments], default=0)) + 1, -1, np.int64)  # segment id -> index
    lookup[[s.id for s in segments]] = np.arange(len(segments))
    segment = np.take(lookup, ids[valid], mode="clip")
    segment = np.where(ids[valid] < len(lookup), segment, -1)
    tracks = np.append(np.asarray(track_ids, np.int64), 0)  # index -1 -> 0
    classes = np.append(np.asarray([s.class_index for s in segments], np.int64), -1)
    return LabelledCloud(points=points, rows=rows.astype(np.int64), cols=cols.astype(np.int64), segment=segment,
                         track_id=tracks[segment], class_index=classes[segment])
