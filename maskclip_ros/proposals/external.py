"""``external`` backend: masks supplied by the caller (ground truth for the paper's "GT masks" ablation,
or masks published by another ROS node such as a SAM node)."""
from __future__ import annotations

import numpy as np

from maskclip_ros.proposals.base import Proposals
from maskclip_ros.proposals.common import boxes_from_masks, check_image, mask_areas, select


class ExternalProposer:
    """Wraps caller-supplied masks as Proposals, applying the configured maximum count and minimum area.

    ``proposer(image, masks=..., scores=None)``: masks (M, h, w) bool or float in [0, 1] at the image's
    resolution or a lower one; scores (M,) in [0, 1] or None (then every mask scores 1 and the caller's
    order is kept). The caller's arrays are never modified."""

    def __init__(self, *, max_proposals: int, min_area: float):
        self.max_proposals = int(max_proposals)
        self.min_area = float(min_area)

    def __call__(self, image: np.ndarray, masks: np.ndarray | None = None,
                 scores: np.ndarray | None = None) -> Proposals:
        image_size = check_image(image)
        if masks is None:
            raise ValueError("the external proposal backend needs masks from the caller: pass masks= (M, H, W) "
                             "(Segmenter.segment(external_masks=...)), or choose another proposals.backend")
        masks = _as_probabilities(masks, image_size)
        scores = _as_scores(scores, len(masks))
        keep = select(scores, mask_areas(masks, image_size), self.max_proposals, self.min_area)
        kept = masks[keep]
        return Proposals(masks=kept, scores=scores[keep], boxes=boxes_from_masks(kept, image_size),
                         image_size=image_size)


def _as_probabilities(masks, image_size: tuple[int, int]) -> np.ndarray:
    """(M, h, w) bool/float -> a new float32 array in [0, 1]; rejects other shapes, NaN and values outside."""
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f"external masks must be (M, H, W), got shape {masks.shape}")
    h, w = masks.shape[1:]
    if h > image_size[0] or w > image_size[1] or h < 1 or w < 1:
        raise ValueError(f"external masks of size {(h, w)} do not fit the image {image_size} "
                         "(they may have the image's resolution or a lower one)")
    if masks.dtype == bool:
        return masks.astype(np.float32)
    if not np.issubdtype(masks.dtype, np.number):
        raise ValueError(f"external masks must be bool or numeric, got {masks.dtype}")
    out = masks.astype(np.float32)  # always a copy
    if out.size and (not np.isfinite(out).all() or out.min() < 0.0 or out.max() > 1.0):
        raise ValueError("external float masks must be probabilities in [0, 1] (no NaN/inf)")
    return out


def _as_scores(scores, m: int) -> np.ndarray:
    if scores is None:
        return np.ones(m, np.float32)
    scores = np.asarray(scores, np.float32).reshape(-1).copy()
    if scores.shape != (m,):
        raise ValueError(f"external scores must be ({m},), got {scores.shape}")
    if m and (not np.isfinite(scores).all() or scores.min() < 0.0 or scores.max() > 1.0):
        raise ValueError("external scores must lie in [0, 1]")
    return scores
