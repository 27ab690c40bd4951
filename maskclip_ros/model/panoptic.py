"""Panoptic merge (Mask2Former-style inference) as a pure, vectorised function.

Masks whose best class score exceeds ``object_mask_threshold`` (and beats "no object", if present) are
painted by ``score * mask_prob`` argmax; a pixel belongs to its winner only where the winner's probability
is at least ``mask_threshold``. A segment survives when its visible area is at least ``overlap_threshold``
of its original area (probability >= ``mask_threshold``). All surviving segments of one *stuff* class merge
into one segment; *thing* segments stay separate instances. Final segments smaller than ``min_area`` pixels
are dropped (their pixels become unlabeled). Ids are 1..S in order of the first member mask.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage


@dataclass(frozen=True)
class MergeConfig:
    """The ``merge`` section of the params (config/default.yaml documents every field)."""

    object_mask_threshold: float
    overlap_threshold: float
    mask_threshold: float
    min_area: int

    def __post_init__(self) -> None:
        for name in ("object_mask_threshold", "overlap_threshold", "mask_threshold"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"merge.{name} must be in [0, 1], got {getattr(self, name)}")
        if self.min_area < 0:
            raise ValueError(f"merge.min_area must be >= 0, got {self.min_area}")


@dataclass(frozen=True)
class SegmentInfo:
    """One panoptic segment: id in the label image, vocabulary class index, score, thing flag, area in
    pixels and box (x, y, w, h) in pixels."""

    id: int
    class_index: int
    score: float
    is_thing: bool
    area: int
    bbox: tuple[int, int, int, int]


@dataclass(frozen=True)
class PanopticMerge:
    """Result of ``panoptic_merge``.

    panoptic: (H, W) int32 segment ids, 0 = unlabeled. semantic: (H, W) int32 class index, -1 = unlabeled.
    segments: S segments (ids 1..S). members: for each segment, the indices of the input masks merged into it.
    """

    panoptic: np.ndarray
    semantic: np.ndarray
    segments: list[SegmentInfo]
    members: list[tuple[int, ...]]


def panoptic_merge(masks: torch.Tensor, class_probs: torch.Tensor, is_thing: torch.Tensor, config: MergeConfig,
                   no_object: torch.Tensor | None = None,
                   output_size: tuple[int, int] | None = None) -> PanopticMerge:
    """Merge M scored masks into a panoptic segmentation.

    The painting runs at the masks' own resolution; with ``output_size`` the resulting id image is scaled to
    it (nearest neighbour) before areas and boxes are measured, so they describe the output pixels. This
    costs (H*W)/(h*w) times less than upsampling every mask first (4x for half-resolution proposals).

    Args:
        masks: (M, h, w) mask probabilities.
        class_probs: (M, C) class probabilities.
        is_thing: (C,) bool thing flags.
        no_object: (M,) "no object" probability or None; a mask whose no-object probability is at least its
            best class probability is dropped.
        output_size: (H, W) of the returned images (default: the masks' size).
    Returns:
        PanopticMerge (int32 id image, int32 class image, segment infos, member masks).
    """
    out_h, out_w = output_size or tuple(masks.shape[-2:])
    if masks.shape[0] == 0:
        return _empty(out_h, out_w)
    scores, labels = class_probs.max(1)  # (M,), (M,)
    keep = scores > config.object_mask_threshold
    if no_object is not None:
        keep &= scores > no_object
    kept = keep.nonzero()[:, 0]  # (K,) indices into the input masks
    if kept.numel() == 0:
        return _empty(out_h, out_w)
    probs = masks[kept].float()  # (K, H, W)
    winner = (scores[kept, None, None] * probs).argmax(0)  # (H, W) index into kept
    covered = probs.gather(0, winner[None])[0] >= config.mask_threshold  # the winner really covers the pixel
    visible = torch.bincount(winner[covered], minlength=len(kept))  # (K,)
    original = (probs >= config.mask_threshold).flatten(1).sum(1)  # (K,)
    survives = (visible > 0) & (visible >= config.overlap_threshold * original)
    seg_of_mask, seg_class, members = _assign_ids(kept.tolist(), labels[kept].tolist(), survives.tolist(),
                                                  is_thing.tolist())
    table = torch.tensor([0] + seg_of_mask, dtype=torch.int64, device=masks.device)  # (K + 1,)
    panoptic = torch.where(covered, table[winner + 1], 0)  # (h, w)
    if tuple(panoptic.shape) != (out_h, out_w):  # ids < 2^24 are exact in float32
        panoptic = F.interpolate(panoptic[None, None].float(), size=(out_h, out_w), mode="nearest")[0, 0].long()
    seg_score = _segment_scores(scores, members, len(seg_class))
    return _finish(panoptic, seg_class, seg_score, members, is_thing.tolist(), config.min_area)


def _assign_ids(kept: list[int], labels: list[int], survives: list[bool], is_thing: list[bool]):
    """Segment id per kept mask (0 = dropped), class per segment, member masks per segment; one stuff
    segment per class."""
    seg_of_mask, seg_class, members = [], [], []
    stuff_seg: dict[int, int] = {}
    for index, label, ok in zip(kept, labels, survives):
        if not ok:
            seg_of_mask.append(0)
            continue
        if not is_thing[label] and label in stuff_seg:
            seg = stuff_seg[label]
            members[seg - 1].append(index)
        else:
            seg_class.append(label)
            members.append([index])
            seg = len(seg_class)
            if not is_thing[label]:
                stuff_seg[label] = seg
        seg_of_mask.append(seg)
    return seg_of_mask, seg_class, [tuple(m) for m in members]


def _segment_scores(scores: torch.Tensor, members: list[tuple[int, ...]], count: int) -> list[float]:
    """Score per segment: its mask's class score; the best member's for a merged stuff segment."""
    if count == 0:
        return []
    index = torch.tensor([i for m in members for i in m], device=scores.device)
    seg = torch.tensor([s for s, m in enumerate(members) for _ in m], device=scores.device)
    best = torch.zeros(count, device=scores.device).scatter_reduce(0, seg, scores[index].float(), "amax")
    return best.tolist()


def _finish(panoptic: torch.Tensor, seg_class: list[int], seg_score: list[float], members: list[tuple[int, ...]],
            is_thing: list[bool], min_area: int) -> PanopticMerge:
    """Drop segments under ``min_area``, renumber 1..S, compute areas, boxes and the class image."""
    count = len(seg_class)
    areas = torch.bincount(panoptic.flatten(), minlength=count + 1)[1:]  # (S,)
    keep = (areas >= max(min_area, 1)).tolist()
    new_id = torch.tensor([0] + list(np.cumsum(keep) * np.array(keep, dtype=np.int64)), dtype=torch.int64,
                          device=panoptic.device)  # old id -> new id (0 = dropped)
    ids = new_id[panoptic].cpu().numpy().astype(np.int32)
    survivors = [s for s in range(count) if keep[s]]
    classes = np.array([-1] + [seg_class[s] for s in survivors], dtype=np.int32)
    semantic = classes[ids]
    slices = ndimage.find_objects(ids, max_label=len(survivors))
    areas = areas.tolist()
    segments = [SegmentInfo(id=k + 1, class_index=seg_class[s], score=seg_score[s], is_thing=is_thing[seg_class[s]],
                            area=int(areas[s]), bbox=_xywh(slices[k]))
                for k, s in enumerate(survivors)]
    return PanopticMerge(panoptic=ids, semantic=semantic, segments=segments, members=[members[s] for s in survivors])


def _xywh(slc: tuple[slice, slice]) -> tuple[int, int, int, int]:
    rows, cols = slc
    return (int(cols.start), int(rows.start), int(cols.stop - cols.start), int(rows.stop - rows.start))


def _empty(h: int, w: int) -> PanopticMerge:
    return PanopticMerge(panoptic=np.zeros((h, w), np.int32), semantic=np.full((h, w), -1, np.int32),
                         segments=[], members=[])
