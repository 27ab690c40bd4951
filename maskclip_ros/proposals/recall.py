"""Proposal recall against panoptic ground truth: the fraction of ground-truth segments (things and stuff
separately) that some proposal overlaps with IoU >= a threshold."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from maskclip_ros.proposals.base import Proposals


def best_iou(proposals: Proposals, panoptic: np.ndarray, segment_ids: np.ndarray) -> np.ndarray:
    """Best IoU of each ground-truth segment with any proposal.

    proposals: masks at any resolution (resized bilinearly to the panoptic map, thresholded at 0.5);
    panoptic: (H, W) int segment ids; segment_ids: (S,) ids to score. Returns (S,) float64 in [0, 1].
    """
    ids = np.asarray(segment_ids)
    if len(proposals) == 0 or len(ids) == 0:
        return np.zeros(len(ids))
    h, w = panoptic.shape
    masks = torch.from_numpy(proposals.masks)[:, None]                            # (M, 1, h', w')
    masks = F.interpolate(masks, size=(h, w), mode="bilinear", align_corners=False)[:, 0] > 0.5
    pred = masks.reshape(len(masks), -1).float()                                  # (M, H*W)
    gt = torch.from_numpy(panoptic.reshape(1, -1) == ids.reshape(-1, 1)).float()  # (S, H*W)
    inter = pred @ gt.T                                                           # (M, S)
    union = pred.sum(1, keepdim=True) + gt.sum(1)[None] - inter
    return (inter / union.clamp_min(1.0)).max(0).values.double().numpy()


@dataclass
class RecallMeter:
    """Accumulates best IoUs over frames; ``summary()`` gives recall of things and stuff at ``iou``."""
    iou: float = 0.5
    things: list = field(default_factory=list)
    stuff: list = field(default_factory=list)

    def add(self, proposals: Proposals, panoptic: np.ndarray, segments: list[dict]) -> None:
        """segments: COCO panoptic segments_info dicts with ``id`` and ``isthing``."""
        ious = best_iou(proposals, panoptic, np.array([s["id"] for s in segments], np.int64))
        for seg, value in zip(segments, ious):
            (self.things if seg["isthing"] else self.stuff).append(float(value))

    def summary(self) -> dict:
        def rate(values):
            return float(np.mean(np.asarray(values) >= self.iou)) if values else float("nan")
        return {"iou": self.iou, "things": rate(self.things), "stuff": rate(self.stuff),
                "num_things": len(self.things), "num_stuff": len(self.stuff)}
