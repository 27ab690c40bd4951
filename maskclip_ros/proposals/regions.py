"""``regions`` backend: training-free proposals from hierarchical grouping of graph-segmentation leaves.

Per frame: downscale the image (``work_long_side``), over-segment it with Felzenszwalb's graph segmentation
at one or more scales, group each over-segmentation hierarchically (grouping.py), and keep the regions of
every level. Regions are scored by how distinct they were when the grouping merged them into a larger
region (``distinctness``), near-duplicates across levels and scales are removed, and the best ``max_proposals`` are returned as masks
at ``mask_long_side``.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from maskclip_ros.proposals.base import Proposals
from maskclip_ros.proposals.common import check_image, scaled_size
from maskclip_ros.proposals.grouping import Hierarchy, Weights, consecutive, group, leaf_statistics, oversegment

COLOUR_SPACES = {"rgb": None, "hsv": cv2.COLOR_RGB2HSV_FULL, "lab": cv2.COLOR_RGB2LAB}


@dataclass(frozen=True)
class RegionsConfig:
    """Parameters of the regions backend (``proposals.regions`` in config/default.yaml)."""
    work_long_side: int      # long side (px) of the downscaled image the grouping runs on
    scales: tuple[float, ...]  # Felzenszwalb scale values, one over-segmentation + hierarchy each
    sigma: float             # Gaussian smoothing (px at work size) before the graph segmentation
    min_segment: int         # smallest graph-segmentation leaf (px at work size)
    colour_space: str        # rgb | hsv | lab: space of the colour histograms and edge strengths
    colour_bins: int         # histogram bins per colour channel
    texture_bins: int        # gradient-orientation bins of the texture histogram
    candidate_factor: float  # best-scored regions entering duplicate removal = factor x max_proposals
    duplicate_iou: float     # a region overlapping a better one by more than this IoU is dropped
    similarity: Weights      # weights of the grouping's similarity terms


class RegionProposer:
    """Training-free proposer: (H, W, 3) uint8 RGB -> Proposals (masks at ``mask_long_side``).

    Deterministic (no randomness; ties broken by region order)."""

    def __init__(self, *, config: RegionsConfig, max_proposals: int, min_area: float, mask_long_side: int):
        if config.colour_space not in COLOUR_SPACES:
            raise ValueError(f"proposals.regions.colour_space must be one of {sorted(COLOUR_SPACES)}, "
                             f"got {config.colour_space!r}")
        if not config.scales:
            raise ValueError("proposals.regions.scales must list at least one scale")
        self.config = config
        self.weights = config.similarity
        self.max_proposals = int(max_proposals)
        self.min_area = float(min_area)
        self.mask_long_side = int(mask_long_side)

    def __call__(self, image: np.ndarray) -> Proposals:
        height, width = check_image(image)
        work = self._downscale(image)
        feature_image = self._colour_space(work)
        labelings, hierarchies = [], []
        for scale in self.config.scales:
            labels = oversegment(work, float(scale), self.config.sigma, self.config.min_segment)
            leaves = leaf_statistics(feature_image, labels, self.config.colour_bins, self.config.texture_bins)
            labelings.append(labels)
            hierarchies.append(group(leaves, self.weights))
        cells, members, scores, boxes = self._candidates(labelings, hierarchies, (height, width))
        keep = _remove_duplicates(members, cells.sizes, scores, self.config.duplicate_iou,
                                  self.max_proposals)                # best first, min area already met
        mask_h, mask_w = scaled_size(height, width, self.mask_long_side)
        cell_labels = cv2.resize(cells.labels, (mask_w, mask_h), interpolation=cv2.INTER_NEAREST)
        # Areas at the returned resolution (exact): the cells' pixel counts there, summed per region.
        cell_pixels = np.bincount(cell_labels.ravel(), minlength=len(cells.sizes)).astype(np.float64)
        areas = members[keep] @ cell_pixels * (height * width / float(mask_h * mask_w))
        keep = keep[(areas >= self.min_area) & (areas > 0)]
        return Proposals(masks=_paint(members[keep], cell_labels), scores=scores[keep].astype(np.float32),
                         boxes=boxes[keep], image_size=(height, width))

    def _downscale(self, image: np.ndarray) -> np.ndarray:
        h, w = scaled_size(image.shape[0], image.shape[1], self.config.work_long_side)
        if (h, w) == image.shape[:2]:
            return image
        return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)

    def _colour_space(self, work: np.ndarray) -> np.ndarray:
        code = COLOUR_SPACES[self.config.colour_space]
        return work if code is None else cv2.cvtColor(work, code)

    def _candidates(self, labelings: list[np.ndarray], hierarchies: list[Hierarchy],
                    image_size: tuple[int, int]):
        """Regions of all hierarchies large enough, as memberships over the common refinement of the
        labelings, with scores and image-pixel boxes; only the best ``candidate_factor x max_proposals``."""
        cells = _common_refinement(labelings)
        work_h, work_w = labelings[0].shape
        to_image = image_size[0] * image_size[1] / float(work_h * work_w)
        members, scores, boxes = [], [], []
        for labels_of_cell, hierarchy in zip(cells.leaf_of_cell, hierarchies):
            big = np.flatnonzero(hierarchy.size * to_image >= self.min_area)
            leaf_members = _leaf_membership(hierarchy)[big]           # (R, n) bool
            members.append(leaf_members[:, labels_of_cell])           # (R, J) bool over cells
            scores.append(distinctness(hierarchy)[big])
            boxes.append(hierarchy.box[big] * np.array([image_size[1] / work_w, image_size[0] / work_h] * 2))
        members, scores, boxes = np.concatenate(members), np.concatenate(scores), np.concatenate(boxes)
        limit = max(1, int(np.ceil(self.config.candidate_factor * self.max_proposals)))
        best = np.argsort(-scores, kind="stable")[:limit]
        return cells, members[best], scores[best], boxes[best].astype(np.float32)


def distinctness(hierarchy: Hierarchy) -> np.ndarray:
    """Objectness of every region, (R,) in [0, 1]: 1 - its similarity to the sibling it was merged with.
    A region that stays unlike its surroundings until it is merged (a whole object, a stuff region) scores
    high; a piece of a uniform area is merged early at high similarity and scores low. Roots (the whole
    image) score 0, so they come last but are kept for images with nothing else (a uniform frame)."""
    return np.nan_to_num(1.0 - hierarchy.absorbed_similarity, nan=0.0).clip(0.0, 1.0)


@dataclass(frozen=True)
class _Cells:
    """The common refinement of several labelings: (h, w) int32 cell labels, (J,) cell sizes, and per
    labeling the (J,) leaf that contains each cell."""
    labels: np.ndarray
    sizes: np.ndarray
    leaf_of_cell: list


def _common_refinement(labelings: list[np.ndarray]) -> _Cells:
    code = np.zeros(labelings[0].size, np.int64)
    for labels in labelings:
        code = code * (int(labels.max()) + 1) + labels.ravel()
    cells = consecutive(code)                                  # (h * w,) cell index
    pixel = np.empty(int(cells.max()) + 1, np.int64)
    pixel[cells] = np.arange(cells.size)                       # one pixel of each cell
    leaf_of_cell = [labels.ravel()[pixel] for labels in labelings]
    sizes = np.bincount(cells).astype(np.float64)
    return _Cells(cells.reshape(labelings[0].shape).astype(np.int32), sizes, leaf_of_cell)


def _leaf_membership(hierarchy: Hierarchy) -> np.ndarray:
    """(R, n) bool: which leaves each region of the hierarchy contains (children precede parents)."""
    n, total = hierarchy.num_leaves, len(hierarchy.size)
    member = np.zeros((total, n), bool)
    member[np.arange(n), np.arange(n)] = True
    for r in range(n, total):
        a, b = hierarchy.children[r]
        np.logical_or(member[a], member[b], out=member[r])
    return member


def _paint(members: np.ndarray, cell_labels: np.ndarray) -> np.ndarray:
    """Masks (K, h, w) float32 in {0, 1} from memberships (K, J) over cells and the (h, w) cell map."""
    table = torch.from_numpy(members.astype(np.float32))                        # (K, J)
    index = torch.from_numpy(cell_labels.ravel().astype(np.int64))             # (h * w,)
    return table.index_select(1, index).reshape(len(members), *cell_labels.shape).numpy()


def _remove_duplicates(members: np.ndarray, cell_sizes: np.ndarray, scores: np.ndarray, max_iou: float,
                       limit: int) -> np.ndarray:
    """Greedy non-maximum suppression on mask IoU. members: (R, J) bool over cells of sizes (J,);
    returns indices (K,) into the R regions, best score first, K <= limit."""
    a = torch.from_numpy(members.astype(np.float32))                       # (R, J)
    inter = (a * torch.from_numpy(cell_sizes.astype(np.float32))) @ a.T     # (R, R) shared pixels
    area = torch.diagonal(inter).clone()
    iou = (inter / (area[:, None] + area[None, :] - inter).clamp_min(1.0)).numpy()
    order = np.argsort(-scores, kind="stable")
    suppressed = np.zeros(len(scores), bool)
    keep = []
    for i in order:
        if suppressed[i]:
            continue
        keep.append(i)
        if len(keep) >= limit:
            break
        suppressed |= iou[i] > max_iou
    return np.asarray(keep, np.int64)
