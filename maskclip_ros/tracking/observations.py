"""What the tracker sees of a frame: thing segments as observations, and the mask helpers it matches with.

``thing_observations`` turns a panoptic frame into one ``Observation`` per thing segment; ``ObservationFrame``
holds one update's observations on the comparison grid (masks, flattened masks, centroids, unit embeddings,
class names), so the tracker computes every pair's mask IoU as one matrix product.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from maskclip_ros.tracking.geometry import resize_nearest

__all__ = ["Observation", "ObservationFrame", "centroids", "grid_shape", "mask_iou", "mask_overlaps",
           "shift_mask", "thing_observations", "unit"]


@dataclass(frozen=True, kw_only=True)
class Observation:
    """One thing segment of a frame, as the tracker sees it."""

    mask: np.ndarray  # (h, w) bool, any resolution (the same for every observation of a frame)
    class_name: str  # vocabulary class name (compared by name, so vocabularies may change)
    score: float  # [0, 1] segment score
    embedding: np.ndarray | None  # (E,) float CLIP embedding (normalised here) or None
    bbox: tuple[int, int, int, int]  # (x, y, w, h) in frame pixels; carried into TrackInfo, not matched on

    def __post_init__(self) -> None:
        if not (isinstance(self.mask, np.ndarray) and self.mask.ndim == 2 and self.mask.dtype == np.bool_
                and self.mask.size > 0):
            raise ValueError(f"Observation.mask must be a non-empty (h, w) bool array, got "
                             f"{getattr(self.mask, 'shape', None)} {getattr(self.mask, 'dtype', type(self.mask))}")
        if not (isinstance(self.score, (int, float, np.floating)) and 0.0 <= self.score <= 1.0):
            raise ValueError(f"Observation.score must be in [0, 1], got {self.score!r}")
        if self.embedding is not None:
            e = self.embedding
            if not (isinstance(e, np.ndarray) and e.ndim == 1 and e.size > 0 and np.isfinite(e).all()):
                raise ValueError("Observation.embedding must be None or a finite non-empty (E,) array")


@dataclass(frozen=True)
class ObservationFrame:
    """One update's observations on the comparison grid (K observations)."""

    masks: np.ndarray  # (K, gh, gw) bool
    flat: np.ndarray  # (K, gh * gw) float32
    centroids: np.ndarray  # (K, 2) float64 (row, col) grid fractions, NaN for an empty mask
    embeddings: np.ndarray  # (K, E) float32 unit rows (zeros where missing)
    has_embedding: np.ndarray  # (K,) bool
    class_names: np.ndarray  # (K,) str

    @classmethod
    def build(cls, observations: Sequence[Observation], long_side: int) -> "ObservationFrame":
        shapes = {o.mask.shape for o in observations}
        if len(shapes) != 1:
            raise ValueError(f"all observation masks of one frame must have one shape, got {sorted(shapes)}")
        gh, gw = grid_shape(*shapes.pop(), long_side)
        masks = np.stack([resize_nearest(o.mask, gh, gw) for o in observations])  # (K, gh, gw)
        dims = {o.embedding.shape[0] for o in observations if o.embedding is not None}
        if len(dims) > 1:
            raise ValueError(f"all observation embeddings of one frame must have one size, got {sorted(dims)}")
        embeddings = np.zeros((len(observations), dims.pop() if dims else 0), np.float32)
        has = np.array([o.embedding is not None for o in observations])
        for k in np.flatnonzero(has):
            embeddings[k] = unit(observations[k].embedding)
        return cls(masks=masks, flat=masks.reshape(len(masks), -1).astype(np.float32),
                   centroids=centroids(masks), embeddings=embeddings, has_embedding=has,
                   class_names=np.array([o.class_name for o in observations], dtype=object))


def grid_shape(height: int, width: int, long_side: int) -> tuple[int, int]:
    """The comparison grid for (height, width) masks: long side ``long_side``, aspect kept."""
    scale = long_side / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def mask_overlaps(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """IoU and containment (intersection over the smaller area) of every pair of flattened binary masks:
    a (N, G), b (K, G) float32 0/1 -> two (N, K) float64 (0 where a mask is empty)."""
    intersection = (a @ b.T).astype(np.float64)  # (N, K)
    area_a, area_b = a.sum(1, dtype=np.float64)[:, None], b.sum(1, dtype=np.float64)[None, :]
    union = area_a + area_b - intersection
    smaller = np.minimum(area_a, area_b)
    iou = np.divide(intersection, union, out=np.zeros_like(intersection), where=union > 0)
    return iou, np.divide(intersection, smaller, out=np.zeros_like(intersection), where=smaller > 0)


def mask_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every pair of flattened binary masks: a (N, G), b (K, G) float32 0/1 -> (N, K) float64."""
    return mask_overlaps(a, b)[0]


def thing_observations(panoptic: np.ndarray, segments: Sequence[Any], class_names: Sequence[str],
                       embeddings: np.ndarray | None, *, long_side: int) -> tuple[list[int], list[Observation]]:
    """The thing segments of one panoptic frame as observations, masks already on the comparison grid.

    Args:
        panoptic: (H, W) int segment ids.
        segments: per segment an object with ``id``, ``class_index``, ``score``, ``is_thing``, ``bbox``
            (``SegmentInfo``).
        class_names: the frame's vocabulary names by class index.
        embeddings: (S, E) rows per segment, or None.
        long_side: the tracker's ``mask_long_side``.
    Returns:
        (indices into ``segments`` of the things, their observations in the same order).
    """
    things = [i for i, s in enumerate(segments) if s.is_thing]
    if not things:
        return [], []
    small = resize_nearest(panoptic, *grid_shape(*panoptic.shape, long_side))  # (gh, gw)
    ids = np.array([segments[i].id for i in things])
    masks = small[None] == ids[:, None, None]  # (T, gh, gw)
    return things, [Observation(mask=masks[n], class_name=class_names[segments[i].class_index],
                                score=float(segments[i].score),
                                embedding=None if embeddings is None else embeddings[i],
                                bbox=tuple(segments[i].bbox))
                    for n, i in enumerate(things)]


def centroids(masks: np.ndarray) -> np.ndarray:
    """(K, gh, gw) bool -> (K, 2) mean (row, col) as grid fractions (NaN for empty masks)."""
    k, gh, gw = masks.shape
    rows = masks.sum(2, dtype=np.float64) @ ((np.arange(gh) + 0.5) / gh)  # (K,)
    cols = masks.sum(1, dtype=np.float64) @ ((np.arange(gw) + 0.5) / gw)  # (K,)
    area = masks.reshape(k, -1).sum(1, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.stack([rows, cols], 1) / area[:, None]


def unit(vector: np.ndarray) -> np.ndarray:
    """(E,) float32 unit vector (zero stays zero)."""
    v = np.asarray(vector, dtype=np.float32)
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 0 else v.copy()


def shift_mask(mask: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """(h, w) mask translated by (dy, dx) cells, zero-filled."""
    h, w = mask.shape
    out = np.zeros_like(mask)
    if abs(dy) >= h or abs(dx) >= w:
        return out
    out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = mask[max(-dy, 0):h + min(-dy, 0),
                                                                      max(-dx, 0):w + min(-dx, 0)]
    return out
