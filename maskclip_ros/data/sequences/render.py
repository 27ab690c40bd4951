"""Drawing one frame of a planned sequence: image, panoptic ids, sensor depth and segments_info."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from maskclip_ros.data import world
from maskclip_ros.data.sequences.config import (FRAME_STREAM, IMAGE_NOISE_STD, THING_ID_OFFSET, Camera,
                                                SequenceConfig)
from maskclip_ros.data.sequences.plan import Sequence, Track, track_pose
from maskclip_ros.data.world import COLOURS, _paint, _shape_mask


@dataclass(frozen=True)
class Frame:
    """One frame of a sequence.

    image: (H, W, 3) uint8 RGB; panoptic: (H, W) int32 segment ids (every pixel is stuff or thing);
    depth: (H, W) float32 metres as a sensor publishes it (0 = invalid; noise and dropout per the config);
    segments: world.py's segments_info dicts {id, category_id, iscrowd, isthing, area, bbox, colour, stuff,
    description} plus ``track_id`` (things; None for stuff), ``depth_m`` (things: their plane; None for
    stuff), ``centroid_xyz`` (mean of the back-projected pixels with exact depth, metres) and
    ``visible_fraction`` (things: visible pixels / pixels of the whole shape).
    """
    index: int
    stamp_s: float
    image: np.ndarray
    panoptic: np.ndarray
    depth: np.ndarray
    segments: list
    description: str


def render_frame(seq: Sequence, t: int) -> Frame:
    """Draw frame ``t``: crop the canvas, paint things far to near, then assemble ids, depth and segments."""
    h, w = seq.camera.height, seq.camera.width
    t_s = t / seq.cfg.fps
    x0 = seq.window_offset(t_s)
    regions = seq.regions[:, x0:x0 + w]
    image = seq.canvas[:, x0:x0 + w].copy()
    depth = seq.stuff_depth[:, x0:x0 + w].copy()
    visible = np.full((h, w), -1, np.int32)  # index into seq.tracks of the front thing per pixel
    full_area = {}
    for k in sorted(range(len(seq.tracks)), key=lambda i: -seq.tracks[i].depth_m):
        full_area[k] = _draw_thing(seq, seq.tracks[k], t_s, image, depth, visible, k)
    rng = np.random.default_rng([seq.seed, seq.index, FRAME_STREAM, t])
    noise = rng.standard_normal(image.shape, dtype=np.float32) * np.float32(IMAGE_NOISE_STD)
    image = np.clip(image + noise, 0, 255).astype(np.uint8)
    panoptic = np.where(visible >= 0, THING_ID_OFFSET + _track_ids(seq)[np.maximum(visible, 0)], regions + 1)
    panoptic = panoptic.astype(np.int32)
    segments, things = _segments(seq, panoptic, depth, regions, full_area)
    present = [seq.stuff_names[s["id"] - 1] for s in segments if not s["isthing"]]
    return Frame(index=t, stamp_s=t_s, image=image, panoptic=panoptic, depth=_sensor_depth(seq.cfg, depth, rng),
                 segments=segments, description=world.describe_scene(present, things))


def _track_ids(seq: Sequence) -> np.ndarray:
    return np.asarray([tr.track_id for tr in seq.tracks], np.int32)


def _footprint(seq: Sequence, track: Track, t_s: float) -> tuple[np.ndarray, int, int]:
    """A thing's whole shape at ``t_s``: mask (S, S) bool and the frame row/column of its top-left corner."""
    cx, cy, angle = track_pose(seq, track, t_s)
    mask = _shape_mask(track.shape, track.size, angle)
    s = mask.shape[0]
    return mask, int(round(cy - (s - 1) / 2.0)), int(round(cx - (s - 1) / 2.0))


def _clip(top: int, left: int, s: int, h: int, w: int):
    """Frame slices and mask-local slices of an (s, s) patch at (top, left) inside an (h, w) frame."""
    ys, xs = slice(max(top, 0), min(top + s, h)), slice(max(left, 0), min(left + s, w))
    if ys.start >= ys.stop or xs.start >= xs.stop:
        return None
    return (ys, xs), (slice(ys.start - top, ys.stop - top), slice(xs.start - left, xs.stop - left))


def thing_mask(seq: Sequence, track: Track, t_s: float) -> np.ndarray:
    """Where a thing's whole shape lies in the frame at ``t_s`` (occluded parts included): (H, W) bool."""
    h, w = seq.camera.height, seq.camera.width
    mask, top, left = _footprint(seq, track, t_s)
    out = np.zeros((h, w), bool)
    clipped = _clip(top, left, mask.shape[0], h, w)
    if clipped is not None:
        out[clipped[0]] = mask[clipped[1]]
    return out


def _draw_thing(seq: Sequence, track: Track, t_s: float, image, depth, visible, k: int) -> int:
    """Paint one thing into the frame buffers (which this function owns); returns its full mask area."""
    mask, top, left = _footprint(seq, track, t_s)
    s = mask.shape[0]
    clipped = _clip(top, left, s, image.shape[0], image.shape[1])
    if clipped is None:
        return int(mask.sum())
    (ys, xs), local = clipped
    patch = np.zeros((s, s, 3), np.float32)
    patch[mask] = _paint(np.random.default_rng(track.paint_seed), mask, COLOURS[track.colour])
    m = mask[local]
    image[ys, xs][m] = patch[local][m]
    depth[ys, xs][m] = track.depth_m
    visible[ys, xs][m] = k
    return int(mask.sum())


def _sensor_depth(cfg: SequenceConfig, depth: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The published depth: exact depth with multiplicative noise and dropout (0 = invalid), (H, W) float32."""
    if cfg.depth_noise == 0 and cfg.depth_dropout == 0:
        return depth.copy()
    noisy = depth * (1 + cfg.depth_noise * rng.standard_normal(depth.shape, dtype=np.float32))
    dropped = rng.random(depth.shape, dtype=np.float32) < cfg.depth_dropout
    return np.where(dropped, np.float32(0), np.clip(noisy, 0, cfg.far_depth)).astype(np.float32)


def _segments(seq: Sequence, panoptic, depth, regions, full_area) -> tuple[list[dict], list[tuple]]:
    """COCO segments_info of the frame (stuff by id, then things by track id) and (class, colour, under)."""
    cat_id = {c["name"]: c["id"] for c in world.categories()}
    centroids, areas = _centroids(seq.camera, panoptic, depth)
    boxes = ndimage.find_objects(panoptic)
    by_id = {THING_ID_OFFSET + tr.track_id: (k, tr) for k, tr in enumerate(seq.tracks)}
    segments, things = [], []
    for seg_id in np.flatnonzero(areas):
        sl = boxes[seg_id - 1]
        seg = {"id": int(seg_id), "iscrowd": 0, "area": int(areas[seg_id]),
               "bbox": [sl[1].start, sl[0].start, sl[1].stop - sl[1].start, sl[0].stop - sl[0].start],
               "centroid_xyz": [float(c) for c in centroids[seg_id]]}
        if seg_id in by_id:
            k, tr = by_id[seg_id]
            under = seq.stuff_names[int(np.bincount(regions[sl][panoptic[sl] == seg_id]).argmax())]
            seg.update(category_id=cat_id[tr.category], isthing=1, colour=tr.colour, stuff=under,
                       description=world.describe_region(tr.category, tr.colour, under), track_id=tr.track_id,
                       depth_m=tr.depth_m, visible_fraction=seg["area"] / full_area[k])
            things.append((tr.category, tr.colour, under))
        else:
            name = seq.stuff_names[seg_id - 1]
            seg.update(category_id=cat_id[name], isthing=0, colour=None, stuff=None,
                       description=world.describe_region(name, None, None), track_id=None, depth_m=None,
                       visible_fraction=None)
        segments.append(seg)
    return segments, things


def _centroids(camera: Camera, panoptic: np.ndarray, depth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per segment id: mean back-projected point (N, 3) float64 and pixel count (N,) (N = max id + 1)."""
    ids = panoptic.ravel()
    z = depth.astype(np.float64)  # (H, W)
    u = np.arange(camera.width, dtype=np.float64)[None, :]
    v = np.arange(camera.height, dtype=np.float64)[:, None]
    areas = np.bincount(ids)
    n = len(areas)
    sum_z, sum_uz, sum_vz = (np.bincount(ids, weights=w.ravel(), minlength=n) for w in (z, u * z, v * z))
    # mean of (u - cx) z / fx = (sum u z - cx sum z) / (fx * area), likewise for y
    points = np.stack([(sum_uz - camera.cx * sum_z) / camera.fx, (sum_vz - camera.cy * sum_z) / camera.fy,
                       sum_z], -1)
    return points / np.maximum(areas, 1)[:, None], areas

