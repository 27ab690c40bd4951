"""The per-frame perception stage after the panoptic merge: track ids and 3D geometry per segment (no ROS).

The node and `maskclip-ros eval-tracking` both run ``SegmentTracker.step`` once per processed frame:

    stage = SegmentTracker(config=load_perception_config(*params_files))
    result = segmenter.segment(image, vocabulary, with_embeddings=True)   # embeddings re-find objects
    frame = stage.step(result, stamp_s, depth_m, intrinsics)              # depth_m / intrinsics may be None
    frame.track_ids[i], frame.geometry[i]                                  # <-> result.segments[i]

* **Tracking** (``tracking`` section): the thing segments go through the ByteTrack-style ``Tracker`` (mask
  IoU, class-name agreement, embedding cosine); stuff gets id 0. Class names, not indices, are compared, so a
  vocabulary change keeps the ids. A stamp earlier than the previous one (a bag played again) resets the
  tracker (``TrackedFrame.reset``); ids are still never reused.
* **Depth** (``depth`` section): ``depth_m`` is (h, w) float metres, NaN/inf/<= 0 invalid (``decode_depth``
  makes it from a 16UC1 / 32FC1 image); ``intrinsics`` the colour camera's (``camera_intrinsics`` from a
  camera_info K). A depth image or intrinsics at another resolution with the same aspect ratio is rescaled to
  the panoptic image; one with another aspect ratio is refused. Bad input never raises: the frame gets no
  geometry and ``TrackedFrame.depth_problem`` says why (a ``DepthProblem`` the node counts); the 2D outputs
  are unaffected. ``DepthError`` is raised only for programming errors (depth not a 2-D float array).

Thread-safe: ``step``, ``set_config`` and ``reset`` may come from different threads (one lock).
"""
from __future__ import annotations

import enum
import threading
import time
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from maskclip_ros import config
from maskclip_ros.tracking.geometry import (DEPTH_DTYPES, CameraIntrinsics, DepthError, GeometryConfig, Segment3D,
                                            depth_to_metres, resize_nearest, segment_geometry)
from maskclip_ros.tracking.observations import thing_observations
from maskclip_ros.tracking.tracker import Tracker, TrackerConfig, TrackInfo

__all__ = ["DepthProblem", "PerceptionConfig", "SegmentTracker", "TrackedFrame", "camera_intrinsics",
           "decode_depth", "load_perception_config"]

PARAMS_FILE = "default.yaml"
ASPECT_TOLERANCE = 0.02  # depth / camera_info and colour image aspect ratios may differ by this fraction
MS_PER_S = 1000.0


class DepthProblem(enum.Enum):
    """Why a frame has no 3D geometry (its 2D outputs and track ids are unaffected)."""

    DISABLED = "disabled"                # depth.enabled is false (not a fault)
    NO_DEPTH = "no_depth"                # no depth image paired with the frame (none arrived, stamps never pair)
    NO_CAMERA_INFO = "no_camera_info"    # no camera_info yet
    BAD_CAMERA_INFO = "bad_camera_info"  # K all zero / non-finite / focal <= 0, or a zero image size
    BAD_ENCODING = "bad_encoding"        # not 16UC1 or 32FC1, or the data does not fit the encoding
    BAD_SHAPE = "bad_shape"              # not an (H, W) image, or empty
    SIZE_MISMATCH = "size_mismatch"      # depth or camera_info has another aspect ratio than the colour image
    ALL_INVALID = "all_invalid"          # no pixel holds a valid reading (0, NaN, inf, out of range)


@dataclass(frozen=True)
class PerceptionConfig:
    """The ``tracking`` and ``depth`` sections of config/default.yaml (documented there)."""

    tracking: TrackerConfig  # tracker thresholds (and tracking.enabled)
    depth: GeometryConfig    # 3D geometry settings (and the node's depth input keys)

    @classmethod
    def from_parameters(cls, values: Mapping[str, Any]) -> "PerceptionConfig":
        """From dotted parameter names -> values (the node's parameters; other sections are ignored)."""
        return config.from_dict(cls, config.nest(values), partial=True)


def load_perception_config(*params_files, overrides=()) -> PerceptionConfig:
    """The ``tracking`` and ``depth`` sections of config/default.yaml updated with node params files (later
    ones win) and dotted overrides (``tracking.high_score=0.6``)."""
    return config.load_one(PerceptionConfig, PARAMS_FILE, *params_files, overrides=overrides, partial=True)


@dataclass(frozen=True)
class TrackedFrame:
    """The stage's output for one frame; per-segment tuples follow ``PanopticResult.segments``.

    track_ids:     positive track id per segment; 0 = stuff, tentative, low score or tracking disabled.
    geometry:      Segment3D per segment when the frame had usable depth (``Segment3D.valid`` is False for a
                   segment with too few valid pixels), else None for every segment.
    depth_problem: why the frame has no geometry (None: geometry computed).
    depth_m:       (H, W) float32 depth at the panoptic image's resolution (what the geometry used), or None.
    intrinsics:    the camera at (W, H) (what the geometry used), or None.
    reset:         the tracker was reset before this frame because its stamp went back in time.
    timings_ms:    wall time of "tracking" and "geometry".
    """

    track_ids: tuple[int, ...]
    geometry: tuple[Segment3D | None, ...]
    depth_problem: DepthProblem | None
    depth_m: np.ndarray | None
    intrinsics: CameraIntrinsics | None
    reset: bool
    timings_ms: dict[str, float]


def decode_depth(array: np.ndarray, encoding: str) -> tuple[np.ndarray | None, DepthProblem | None]:
    """A depth image as (H, W) float32 metres (NaN = invalid), or None and the problem (never raises)."""
    if encoding not in DEPTH_DTYPES:
        return None, DepthProblem.BAD_ENCODING
    array = np.asarray(array)
    kind, itemsize = DEPTH_DTYPES[encoding]
    if (array.dtype.kind, array.dtype.itemsize) != (kind, itemsize):
        return None, DepthProblem.BAD_ENCODING
    try:
        return depth_to_metres(array, encoding), None
    except DepthError:  # encoding and dtype are right here, so it is the shape
        return None, DepthProblem.BAD_SHAPE


def camera_intrinsics(k: Sequence[float] | None, width: int, height: int
                      ) -> tuple[CameraIntrinsics | None, DepthProblem | None]:
    """Intrinsics from a camera_info K and size, or None and BAD_CAMERA_INFO (never raises)."""
    try:
        return CameraIntrinsics.from_k(k, width, height), None
    except (DepthError, TypeError, ValueError):
        return None, DepthProblem.BAD_CAMERA_INFO


class SegmentTracker:
    """Track ids and 3D geometry for the segments of consecutive frames (see the module docstring)."""

    def __init__(self, *, config: PerceptionConfig):
        self._config = config
        self._tracker = Tracker(config=config.tracking)
        self._last_stamp: float | None = None
        self._lock = threading.Lock()

    @property
    def config(self) -> PerceptionConfig:
        return self._config

    def set_config(self, config: PerceptionConfig) -> None:
        """Replace the settings (runtime parameter changes); applies from the next frame, tracks are kept."""
        with self._lock:
            self._config = config
            self._tracker.set_config(config.tracking)

    def reset(self) -> None:
        """Forget every track (ids still never repeat)."""
        with self._lock:
            self._tracker.reset()
            self._last_stamp = None

    def tracks(self) -> list[TrackInfo]:
        """Every live track (tentative, confirmed, lost), oldest first."""
        with self._lock:
            return self._tracker.tracks()

    def step(self, result, stamp_s: float, depth_m: np.ndarray | None = None,
             intrinsics: CameraIntrinsics | None = None) -> TrackedFrame:
        """Track ids and geometry for ``result`` (a ``PanopticResult``) stamped ``stamp_s`` seconds."""
        with self._lock:
            cfg = self._config
            started = time.perf_counter()
            ids, reset = self._track(result, float(stamp_s), cfg.tracking)
            tracked = time.perf_counter()
            geometry, problem, depth, camera = _geometry(result, depth_m, intrinsics, cfg.depth)
            done = time.perf_counter()
        return TrackedFrame(track_ids=ids, geometry=geometry, depth_problem=problem, depth_m=depth,
                            intrinsics=camera, reset=reset,
                            timings_ms={"tracking": (tracked - started) * MS_PER_S,
                                        "geometry": (done - tracked) * MS_PER_S})

    def _track(self, result, stamp: float, cfg: TrackerConfig) -> tuple[tuple[int, ...], bool]:
        """One id per segment (0 for stuff) and whether the tracker was reset first."""
        segments = result.segments
        ids = [0] * len(segments)
        if not cfg.enabled:
            return tuple(ids), False
        if result.embeddings is not None and len(result.embeddings) != len(segments):
            raise ValueError(f"result has {len(segments)} segments but {len(result.embeddings)} embeddings")
        reset = self._last_stamp is not None and stamp < self._last_stamp
        if reset:
            self._tracker.reset()
        self._last_stamp = stamp
        things, observations = thing_observations(result.panoptic, segments, result.vocabulary.class_names,
                                                  result.embeddings, long_side=cfg.mask_long_side)
        for index, track_id in zip(things, self._tracker.update(observations, stamp)):
            ids[index] = track_id
        return tuple(ids), reset


def _geometry(result, depth_m, intrinsics, cfg: GeometryConfig):
    """(geometry per segment, problem, depth at the frame's size, intrinsics at the frame's size)."""
    segments = result.segments
    none = (None,) * len(segments)
    depth, camera, problem = _fit_inputs(result.panoptic.shape, depth_m, intrinsics, cfg)
    if problem is not None:
        return none, problem, None, None
    geometry = segment_geometry(result.panoptic, [s.id for s in segments], depth, camera, cfg,
                                oriented=[bool(s.is_thing) for s in segments])
    return tuple(geometry), None, depth, camera


def _fit_inputs(shape: tuple[int, int], depth_m, intrinsics, cfg: GeometryConfig):
    """Depth and intrinsics at the panoptic image's (H, W), or the reason they cannot be used."""
    if not cfg.enabled:
        return None, None, DepthProblem.DISABLED
    if depth_m is None:
        return None, None, DepthProblem.NO_DEPTH
    if intrinsics is None:
        return None, None, DepthProblem.NO_CAMERA_INFO
    if not (isinstance(depth_m, np.ndarray) and depth_m.ndim == 2 and depth_m.dtype.kind == "f"):
        raise DepthError(f"depth_m must be an (H, W) float array in metres (decode_depth makes one), got "
                         f"{type(depth_m).__name__} {getattr(depth_m, 'shape', '')} {getattr(depth_m, 'dtype', '')}")
    if depth_m.size == 0:
        return None, None, DepthProblem.BAD_SHAPE
    height, width = shape
    if not (_same_aspect(depth_m.shape, shape) and _same_aspect((intrinsics.height, intrinsics.width), shape)):
        return None, None, DepthProblem.SIZE_MISMATCH
    depth = depth_m if depth_m.shape == shape else resize_nearest(depth_m, height, width)
    with np.errstate(invalid="ignore"):
        valid = (depth >= cfg.min_depth_m) & (depth <= cfg.max_depth_m)  # NaN compares False
    if not valid.any():
        return None, None, DepthProblem.ALL_INVALID
    camera = intrinsics if (intrinsics.height, intrinsics.width) == shape else intrinsics.scaled_to(width, height)
    return depth, camera, None


def _same_aspect(a: tuple[int, int], b: tuple[int, int]) -> bool:
    """Whether (h, w) sizes a and b have the same aspect ratio within ASPECT_TOLERANCE."""
    ratio_a, ratio_b = a[1] / a[0], b[1] / b[0]
    return abs(ratio_a - ratio_b) <= ASPECT_TOLERANCE * ratio_b
