"""Coarse training proposals made from ground-truth masks, so mask refinement has something to learn.

Each ground-truth segment yields one proposal that is randomly dilated or eroded, shifted, sometimes merged
with a touching segment, and blurred into soft probabilities; some segments get no proposal, and a few
random blobs act as proposals that match nothing (they teach "no object"). All randomness comes from the
``numpy.random.Generator`` passed in, so a seed reproduces the proposals exactly.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class CoarseConfig:
    """Degradation of ground-truth masks (``coarse`` section of config/train.yaml). Changes are relative to
    each segment's size (the square root of its area), so small things stay recognisable and nothing
    depends on the mask resolution."""
    morph_max: float    # largest dilation/erosion radius (fraction of the segment's size)
    shift_max: float    # largest shift in x and y (fraction of the segment's size)
    blur_max: float     # largest Gaussian blur sigma (fraction of the segment's size)
    merge_prob: float   # probability that a proposal is merged with a touching segment
    drop_prob: float    # probability that a segment gets no proposal
    blobs_max: int      # most random "no object" blobs per image
    blob_size: float    # largest blob radius (fraction of the short side)


def coarse_proposals(gt_masks: np.ndarray, rng: np.random.Generator, cfg: CoarseConfig) -> np.ndarray:
    """Degrade ground-truth masks into coarse proposals.

    Args:
        gt_masks: (G, h, w) bool ground-truth segment masks (not modified).
        rng: the random source (seeded by the caller).
    Returns:
        (M, h, w) float32 proposal probabilities in [0, 1], in random order (M = kept segments + blobs).
    """
    g, h, w = gt_masks.shape
    short = min(h, w)
    out = []
    for i in range(g):
        if rng.random() < cfg.drop_prob:
            continue
        mask = gt_masks[i].astype(np.uint8)
        if rng.random() < cfg.merge_prob:
            mask = _merge_with_neighbour(gt_masks, i, rng)
        size = float(np.sqrt(gt_masks[i].sum()))
        mask = _morph(mask, int(round(rng.uniform(-1, 1) * cfg.morph_max * size)))
        mask = _shift(mask, *(np.round(rng.uniform(-1, 1, 2) * cfg.shift_max * size).astype(int)))
        out.append(_blur(mask.astype(np.float32), rng.uniform(0, cfg.blur_max) * size))
    for _ in range(int(rng.integers(0, cfg.blobs_max + 1))):
        blob = _blob(h, w, rng, cfg.blob_size * short)
        out.append(_blur(blob, rng.uniform(0, cfg.blur_max) * float(np.sqrt(blob.sum()))))
    if not out:
        return np.zeros((0, h, w), np.float32)
    stack = np.stack(out)
    return stack[rng.permutation(len(stack))]


def _merge_with_neighbour(gt_masks: np.ndarray, i: int, rng: np.random.Generator) -> np.ndarray:
    """Union of segment i with a random segment touching it (i alone if none touches), uint8 (h, w)."""
    ring = cv2.dilate(gt_masks[i].astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool) & ~gt_masks[i]
    touching = [j for j in range(gt_masks.shape[0]) if j != i and (gt_masks[j] & ring).any()]
    if not touching:
        return gt_masks[i].astype(np.uint8)
    j = touching[int(rng.integers(len(touching)))]
    return (gt_masks[i] | gt_masks[j]).astype(np.uint8)


def _morph(mask: np.ndarray, radius: int) -> np.ndarray:
    """Dilate (radius > 0) or erode (radius < 0) a uint8 mask with an elliptic kernel; never empties it."""
    if radius == 0:
        return mask
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * abs(radius) + 1,) * 2)
    out = cv2.dilate(mask, kernel) if radius > 0 else cv2.erode(mask, kernel)
    return out if out.any() else mask


def _shift(mask: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """Translate a mask by (dx, dy) pixels, filling with 0."""
    h, w = mask.shape
    matrix = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(mask, matrix, (w, h), flags=cv2.INTER_NEAREST, borderValue=0)


def _blur(mask: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of a float mask (sigma in pixels; < 0.3 leaves it as is) -> float32 in [0, 1]."""
    if sigma < 0.3:
        return mask.astype(np.float32)
    return np.clip(cv2.GaussianBlur(mask.astype(np.float32), (0, 0), sigma), 0.0, 1.0)


def _blob(h: int, w: int, rng: np.random.Generator, max_radius: float) -> np.ndarray:
    """A random filled ellipse, (h, w) float32 in {0, 1}."""
    canvas = np.zeros((h, w), np.uint8)
    axes = tuple(int(max(2, a)) for a in rng.uniform(0.2, 1.0, 2) * max_radius)
    centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
    cv2.ellipse(canvas, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    return canvas.astype(np.float32)
