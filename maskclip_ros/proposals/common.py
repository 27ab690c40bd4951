"""Helpers shared by the proposal backends: input checks, ranking/limits, areas, boxes, sizes."""
from __future__ import annotations

import numpy as np


def check_image(image: np.ndarray) -> tuple[int, int]:
    """Validate an (H, W, 3) uint8 RGB image; returns (H, W)."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got {getattr(image, 'shape', type(image))}")
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {image.dtype}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"empty image {image.shape}")
    return int(image.shape[0]), int(image.shape[1])


def scaled_size(height: int, width: int, long_side: int) -> tuple[int, int]:
    """(h, w) with the aspect ratio kept and max(h, w) <= long_side (never upscaled; 0 = unchanged)."""
    factor = 1.0 if long_side <= 0 else min(1.0, long_side / max(height, width))
    return max(1, round(height * factor)), max(1, round(width * factor))


def boxes_from_masks(masks: np.ndarray, image_size: tuple[int, int], threshold: float = 0.5) -> np.ndarray:
    """xyxy boxes in image pixels (exclusive max) of masks (M, h, w) thresholded at ``threshold``;
    masks at a lower resolution are scaled to ``image_size``; an empty mask gets a zero box. (M, 4) float32."""
    m, h, w = masks.shape
    on = masks > threshold
    rows, cols = on.any(2), on.any(1)  # (M, h), (M, w)
    boxes = np.zeros((m, 4), np.float32)
    has = rows.any(1)
    if has.any():
        y0 = rows[has].argmax(1); y1 = h - rows[has][:, ::-1].argmax(1)
        x0 = cols[has].argmax(1); x1 = w - cols[has][:, ::-1].argmax(1)
        sy, sx = image_size[0] / h, image_size[1] / w
        boxes[has] = np.stack([x0 * sx, y0 * sy, x1 * sx, y1 * sy], 1)
    return boxes


def select(scores: np.ndarray, areas: np.ndarray, max_proposals: int, min_area: float) -> np.ndarray:
    """Indices of the proposals to keep: area (image pixels) >= ``min_area`` and never empty, sorted by
    descending score (stable: ties keep their input order), at most ``max_proposals``.
    scores, areas: (M,) -> (K,) int64."""
    areas = np.asarray(areas)
    keep = np.flatnonzero((areas >= min_area) & (areas > 0))
    return keep[np.argsort(-np.asarray(scores)[keep], kind="stable")][:max(0, int(max_proposals))]


def mask_areas(masks: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """Areas in image pixels of (M, h, w) masks (pixels > 0.5, scaled when h, w is a lower resolution)."""
    m, h, w = masks.shape
    return (masks > 0.5).reshape(m, h * w).sum(1) * (image_size[0] * image_size[1] / float(h * w))
