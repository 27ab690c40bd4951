"""The one proposer interface: RGB image -> class-agnostic mask proposals (stage one of MaskCLIP)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class Proposals:
    """M class-agnostic mask proposals for one image, sorted by descending objectness score.

    masks:  (M, h, w) float32 in [0, 1], mask probabilities; (h, w) is the image size or a stated lower
            resolution (``image_size`` says which image they belong to; consumers resize as needed).
    scores: (M,) float32 objectness in [0, 1], non-increasing.
    boxes:  (M, 4) float32 xyxy in image pixels, or None when the backend has none.
    image_size: (H, W) of the image the proposals were computed on.
    """

    masks: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray | None
    image_size: tuple[int, int]

    def __post_init__(self) -> None:
        m = self.masks.shape[0]
        if self.masks.ndim != 3 or self.scores.shape != (m,):
            raise ValueError(f"masks (M,h,w) and scores (M,) disagree: {self.masks.shape}, {self.scores.shape}")
        if self.boxes is not None and self.boxes.shape != (m, 4):
            raise ValueError(f"boxes must be (M, 4), got {self.boxes.shape}")

    def __len__(self) -> int:
        return int(self.masks.shape[0])


class Proposer(Protocol):
    """Anything that turns an (H, W, 3) uint8 RGB image into Proposals; deterministic for a given input.
    Implementations respect their configured maximum count and minimum area."""

    def __call__(self, image: np.ndarray) -> Proposals: ...
