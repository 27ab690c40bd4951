"""Training samples for RMA: an image, its proposals and the ground truth they are matched to.

Ground truth and proposals live at ``1 / mask_stride`` of the image size (the masks RMA refines and the
loss compares). Only segments of the training vocabulary (base classes) carry a class; segments of other
classes get IGNORED_CLASS (ignored by the loss), crowd segments are dropped.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import cv2
import numpy as np
import torch

from maskclip_ros.data.coco_panoptic import PanopticDataset, PanopticSample
from maskclip_ros.training.coarse import CoarseConfig, coarse_proposals

IGNORED_CLASS = -1  # training class of a ground-truth segment outside the training vocabulary (no loss)


@dataclass(frozen=True)
class TrainSample:
    """image: (H, W, 3) uint8; proposals: (M, h, w) float32 in [0, 1]; groups: (M,) int64 proposal set of
    each proposal (sets are matched to the ground truth independently); targets: (G, h, w) bool;
    classes: (G,) int64 index into the training vocabulary, IGNORED_CLASS = ignored."""
    image: np.ndarray
    proposals: np.ndarray
    groups: np.ndarray
    targets: np.ndarray
    classes: np.ndarray


def target_masks(sample: PanopticSample, stride: int, class_index: Mapping[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Ground-truth masks at 1/stride resolution and their training classes.

    Returns (G, h, w) bool masks (non-empty after downsampling) and (G,) int64 classes (IGNORED_CLASS = not in
    the training vocabulary)."""
    h, w = sample.panoptic.shape
    small = cv2.resize(sample.panoptic, (max(1, w // stride), max(1, h // stride)), interpolation=cv2.INTER_NEAREST)
    masks, classes = [], []
    for seg in sample.segments:
        if seg.get("iscrowd", 0):
            continue
        mask = small == seg["id"]
        if mask.any():
            masks.append(mask)
            classes.append(class_index.get(int(seg["category_id"]), IGNORED_CLASS))
    if not masks:
        return np.zeros((0, *small.shape), bool), np.zeros(0, np.int64)
    return np.stack(masks), np.asarray(classes, np.int64)


def resize_proposals(masks: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(M, h', w') float masks -> (M, h, w) float32 (area interpolation when shrinking)."""
    if masks.shape[1:] == tuple(size):
        return masks.astype(np.float32)
    out = [cv2.resize(m.astype(np.float32), (size[1], size[0]), interpolation=cv2.INTER_AREA) for m in masks]
    return np.stack(out) if out else np.zeros((0, *size), np.float32)


class TrainDataset(torch.utils.data.Dataset):
    """Wraps a PanopticDataset: each item is a TrainSample with proposals from ``coarse`` ground truth or a
    proposer. Randomness is seeded by (seed, epoch, index), so a resumed run sees the same samples.

    With coarse proposals, ``proposal_sets`` independent sets are drawn per image: mask tokens never see
    each other, so one forward pass trains on all of them while the frozen image path runs once."""

    def __init__(self, dataset: PanopticDataset, *, class_index: Mapping[int, int], stride: int,
                 max_proposals: int, seed: int, coarse: CoarseConfig | None,
                 proposer: Callable[[np.ndarray], object] | None = None, proposal_sets: int = 1):
        if (coarse is None) == (proposer is None):
            raise ValueError("give exactly one proposal source: coarse config or a proposer")
        self.dataset = dataset
        self.class_index = dict(class_index)
        self.stride = stride
        self.max_proposals = max_proposals
        self.seed = seed
        self.coarse = coarse
        self.proposer = proposer
        self.proposal_sets = proposal_sets if coarse is not None else 1
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> TrainSample:
        sample = self.dataset[index]
        targets, classes = target_masks(sample, self.stride, self.class_index)
        rng = np.random.default_rng([self.seed, self.epoch, index])
        sets = []
        for _ in range(self.proposal_sets):
            if self.coarse is not None:
                proposals = coarse_proposals(targets, rng, self.coarse)
            else:
                proposals = resize_proposals(self.proposer(sample.image).masks, targets.shape[1:])
            if len(proposals) > self.max_proposals:
                proposals = proposals[np.sort(rng.choice(len(proposals), self.max_proposals, replace=False))]
            sets.append(proposals)
        groups = np.concatenate([np.full(len(p), g, np.int64) for g, p in enumerate(sets)])
        return TrainSample(sample.image, np.concatenate(sets), groups, targets, classes)


def collate(batch: Sequence[TrainSample]) -> list[TrainSample]:
    """Keep samples as a list (images and proposal counts differ)."""
    return list(batch)
