"""Segmentation metrics, kept outside the model (detectron2's evaluator pattern: ``update`` per image, then
``compute``). Well-kept implementations do the counting where they match the benchmark's rules:

* panoptic quality (PQ = SQ x RQ; all / things / stuff / any class subset; per class) -- panopticapi's
  rules in a short numpy function, checked against torchmetrics' ``PanopticQuality`` in the tests (that one
  drops false negatives that the prediction leaves unlabeled, which panopticapi counts);
* semantic mIoU (per class) -- torchmetrics' ``MulticlassJaccardIndex`` on the semantic maps;
* instance mask AP / AP50 / AP75 on thing classes -- pycocotools' ``COCOeval(iouType="segm")``.

Images are given as COCO panoptic pairs: an (H, W) int id image plus ``{segment id: category id}``.
Category ids are the dataset's (not vocabulary indices). Crowd ground-truth segments count as void.
"""
from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch


@dataclass(frozen=True)
class Category:
    """One evaluated category: dataset id, name, thing/stuff, and split tag ("base" | "novel" | "")."""
    id: int
    name: str
    isthing: bool
    split: str = ""


def categories_from_coco(cats: Iterable[Mapping]) -> list[Category]:
    """``[{id, name, isthing, split?}, ...]`` (COCO panoptic categories) -> ``[Category]``."""
    return [Category(int(c["id"]), str(c["name"]), bool(c["isthing"]), str(c.get("split", ""))) for c in cats]


def panoptic_pairs(panoptic: np.ndarray, segment_categories: Mapping[int, int], void: int = 0) -> np.ndarray:
    """(H, W) segment ids + ``{segment id: category id}`` -> (H, W, 2) int64 ``[category id, segment id]``.

    Pixels whose segment id is not in the mapping (0, unlabeled, crowd) get category ``void`` (an id that
    is no evaluated category) and instance 0.
    """
    ids = np.asarray(panoptic, dtype=np.int64)
    keys = np.fromiter(segment_categories.keys(), dtype=np.int64, count=len(segment_categories))
    vals = np.fromiter(segment_categories.values(), dtype=np.int64, count=len(segment_categories))
    order = np.argsort(keys)
    keys, vals = keys[order], vals[order]
    pos = np.clip(np.searchsorted(keys, ids), 0, max(len(keys) - 1, 0))
    known = (keys[pos] == ids) if len(keys) else np.zeros(ids.shape, bool)
    category = np.where(known, vals[pos] if len(keys) else void, void)
    instance = np.where(known, ids, 0)
    return np.stack([category, instance], axis=-1)  # (H, W, 2)


def _quality(iou_sum: np.ndarray, tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> dict:
    """Per-class PQ/SQ/RQ (x100) from per-class counts (K,); classes without any segment get NaN."""
    denom = tp + 0.5 * fp + 0.5 * fn
    with np.errstate(divide="ignore", invalid="ignore"):
        sq = np.where(tp > 0, iou_sum / np.maximum(tp, 1), 0.0)
        rq = np.where(denom > 0, tp / np.where(denom > 0, denom, 1), 0.0)
    present = denom > 0
    return {"pq": np.where(present, 100 * sq * rq, np.nan), "sq": np.where(present, 100 * sq, np.nan),
            "rq": np.where(present, 100 * rq, np.nan), "present": present}


def _mean(values: np.ndarray, select: np.ndarray) -> float | None:
    """Mean of the non-NaN entries of ``values[select]``; None when there are none."""
    chosen = values[select]
    chosen = chosen[~np.isnan(chosen)]
    return float(chosen.mean()) if chosen.size else None


def panoptic_counts(pred_panoptic: np.ndarray, pred_segments: Mapping[int, int], gt_panoptic: np.ndarray,
                    gt_segments: Mapping[int, int]) -> dict[int, np.ndarray]:
    """panopticapi's per-image PQ statistics: ``{category id: [iou_sum, tp, fp, fn]}``.

    pred_panoptic, gt_panoptic: (H, W) int segment ids; ``*_segments``: ``{segment id: category id}``
    (ids missing from a mapping are void). A pair of the same category with IoU > 0.5 is a true positive
    (IoU leaves out predicted pixels on ground-truth void); an unmatched ground-truth segment is a false
    negative; an unmatched predicted segment is a false positive unless more than half of it lies on void.
    """
    if pred_panoptic.shape != gt_panoptic.shape:
        raise ValueError(f"prediction {pred_panoptic.shape} and ground truth {gt_panoptic.shape} differ")
    pred = panoptic_pairs(pred_panoptic, pred_segments, void=-1)[..., 1].ravel()  # (HW,) 0 = void
    gt = panoptic_pairs(gt_panoptic, gt_segments, void=-1)[..., 1].ravel()  # (HW,) 0 = void
    pred_ids, pred = np.unique(pred, return_inverse=True)  # compact ids; pred_ids[0] may be 0 (void)
    gt_ids, gt = np.unique(gt, return_inverse=True)
    inter = np.bincount(gt * len(pred_ids) + pred, minlength=len(gt_ids) * len(pred_ids))
    inter = inter.reshape(len(gt_ids), len(pred_ids))  # (G, P) pixel counts, void row/column included
    pred_area, gt_area = inter.sum(0), inter.sum(1)  # (P,), (G,)
    on_void = inter[gt_ids == 0].sum(0) if (gt_ids == 0).any() else np.zeros(len(pred_ids), np.int64)  # (P,)
    stats: dict[int, np.ndarray] = {}
    matched_gt, matched_pred = set(), set()
    for g, p in zip(*np.nonzero(inter)):
        gid, pid = int(gt_ids[g]), int(pred_ids[p])
        if gid == 0 or pid == 0 or gt_segments[gid] != pred_segments[pid]:
            continue
        iou = inter[g, p] / (pred_area[p] + gt_area[g] - inter[g, p] - on_void[p])
        if iou > 0.5:
            matched_gt.add(gid), matched_pred.add(pid)
            stats.setdefault(gt_segments[gid], np.zeros(4))[:2] += (iou, 1)
    for g, gid in enumerate(gt_ids):
        if gid != 0 and int(gid) not in matched_gt:
            stats.setdefault(gt_segments[int(gid)], np.zeros(4))[3] += 1
    for p, pid in enumerate(pred_ids):
        if pid != 0 and int(pid) not in matched_pred and on_void[p] / pred_area[p] <= 0.5:
            stats.setdefault(pred_segments[int(pid)], np.zeros(4))[2] += 1
    return stats


class PanopticEvaluator:
    """PQ / SQ / RQ (panopticapi's rules, see ``panoptic_counts``); averages over all classes, things,
    stuff and each split tag. Checked against torchmetrics' PanopticQuality in the tests; unlike it (1.9),
    a ground-truth segment left mostly unlabeled by the prediction still counts as a false negative, as in
    panopticapi, so a method cannot gain PQ by leaving hard regions unlabeled."""

    def __init__(self, categories: Sequence[Category]):
        self.categories = list(categories)
        self._known = {c.id for c in self.categories}
        self._stats = {c.id: np.zeros(4) for c in self.categories}  # [iou_sum, tp, fp, fn]

    def update(self, pred_panoptic: np.ndarray, pred_segments: Mapping[int, int],
               gt_panoptic: np.ndarray, gt_segments: Mapping[int, int]) -> None:
        """Add one image: predicted and ground-truth (H, W) id images with ``{segment id: category id}``."""
        unknown = (set(pred_segments.values()) | set(gt_segments.values())) - self._known
        if unknown:
            raise ValueError(f"category ids {sorted(unknown)} are not among the evaluated categories")
        for cat, s in panoptic_counts(pred_panoptic, pred_segments, gt_panoptic, gt_segments).items():
            self._stats[cat] = self._stats[cat] + s

    def counts(self) -> dict[int, dict]:
        """``{category id: {iou_sum, tp, fp, fn}}`` accumulated so far."""
        return {c: {"iou_sum": float(s[0]), "tp": int(s[1]), "fp": int(s[2]), "fn": int(s[3])}
                for c, s in self._stats.items()}

    def compute(self) -> dict:
        """Summary ``{"all"|"things"|"stuff"|<split>: {pq, sq, rq, n}, "per_class": {name: {...}}}`` (x100).

        Averages run over classes that have at least one segment (panopticapi's rule); a group with none
        reports None.
        """
        cats = self.categories
        s = np.stack([self._stats[c.id] for c in cats])  # (K, 4)
        q = _quality(s[:, 0], s[:, 1], s[:, 2], s[:, 3])
        groups = {"all": np.ones(len(cats), bool), "things": np.array([c.isthing for c in cats]),
                  "stuff": np.array([not c.isthing for c in cats])}
        for split in sorted({c.split for c in cats if c.split}):
            groups[split] = np.array([c.split == split for c in cats])
        out = {name: {"pq": _mean(q["pq"], sel), "sq": _mean(q["sq"], sel), "rq": _mean(q["rq"], sel),
                      "n": int((sel & q["present"]).sum())} for name, sel in groups.items()}
        counts = self.counts()
        out["per_class"] = {c.name: {"pq": _nan_none(q["pq"][k]), "sq": _nan_none(q["sq"][k]),
                                     "rq": _nan_none(q["rq"][k]), "isthing": c.isthing, "split": c.split,
                                     **counts[c.id]} for k, c in enumerate(cats)}
        return out


def _nan_none(x: float) -> float | None:
    return None if np.isnan(x) else float(x)


class SemanticEvaluator:
    """Semantic mIoU with torchmetrics' MulticlassJaccardIndex (per class, x100).

    Unlabeled predicted pixels count as wrong (an extra "unlabeled" prediction class); void ground-truth
    pixels are ignored. Classes absent from both prediction and ground truth are left out of the mean.
    """

    def __init__(self, categories: Sequence[Category]):
        from torchmetrics.classification import MulticlassJaccardIndex
        self.categories = list(categories)
        self._index = {c.id: k for k, c in enumerate(self.categories)}
        self._unlabeled = len(self.categories)  # prediction class for unlabeled pixels
        self._metric = MulticlassJaccardIndex(num_classes=len(self.categories) + 1, average="none",
                                              ignore_index=-1, zero_division=float("nan"))

    def _semantic(self, panoptic: np.ndarray, segments: Mapping[int, int], missing: int) -> torch.Tensor:
        """(H, W) ids -> (H, W) int64 category index, ``missing`` where unlabeled."""
        mapping = {sid: self._index[cid] for sid, cid in segments.items() if cid in self._index}
        pairs = panoptic_pairs(panoptic, mapping, void=missing)
        return torch.from_numpy(pairs[..., 0])

    def update(self, pred_panoptic: np.ndarray, pred_segments: Mapping[int, int],
               gt_panoptic: np.ndarray, gt_segments: Mapping[int, int]) -> None:
        """Add one image (same arguments as PanopticEvaluator.update)."""
        pred = self._semantic(pred_panoptic, pred_segments, self._unlabeled)
        gt = self._semantic(gt_panoptic, gt_segments, -1)
        self._metric.update(pred.flatten(), gt.flatten())

    def compute(self) -> dict:
        """``{"miou": float|None, <split>: float|None, "per_class": {name: iou|None}}`` (x100)."""
        iou = 100 * self._metric.compute().double().numpy()[: len(self.categories)]
        out = {"miou": _mean(iou, np.ones(len(iou), bool))}
        for split in sorted({c.split for c in self.categories if c.split}):
            out[split] = _mean(iou, np.array([c.split == split for c in self.categories]))
        out["per_class"] = {c.name: _nan_none(iou[k]) for k, c in enumerate(self.categories)}
        return out


@dataclass
class InstanceEvaluator:
    """Mask AP / AP50 / AP75 on thing classes with pycocotools (COCO's ``segm`` evaluation)."""
    categories: Sequence[Category]
    _images: list = field(default_factory=list)
    _gts: list = field(default_factory=list)
    _dets: list = field(default_factory=list)

    def update(self, pred_masks: np.ndarray, pred_categories: Sequence[int], pred_scores: Sequence[float],
               gt_panoptic: np.ndarray, gt_segments: Sequence[Mapping]) -> None:
        """Add one image.

        pred_masks: (K, H, W) bool instance masks; pred_categories (K,) dataset category ids; pred_scores (K,).
        gt_segments: COCO panoptic segments_info dicts ({id, category_id, iscrowd?}) of ``gt_panoptic``.
        """
        from pycocotools import mask as mask_utils
        things = {c.id for c in self.categories if c.isthing}
        image_id = len(self._images) + 1
        h, w = gt_panoptic.shape
        self._images.append({"id": image_id, "height": h, "width": w})
        for seg in gt_segments:
            if seg["category_id"] not in things:
                continue
            rle = _encode(gt_panoptic == seg["id"], mask_utils)
            self._gts.append({"id": len(self._gts) + 1, "image_id": image_id, "category_id": seg["category_id"],
                              "segmentation": rle, "area": float(mask_utils.area(rle)),
                              "bbox": mask_utils.toBbox(rle).tolist(), "iscrowd": int(seg.get("iscrowd", 0))})
        for mask, cat, score in zip(pred_masks, pred_categories, pred_scores):
            if int(cat) in things:
                self._dets.append({"image_id": image_id, "category_id": int(cat),
                                   "segmentation": _encode(mask, mask_utils), "score": float(score)})

    def compute(self) -> dict:
        """``{"ap", "ap50", "ap75", <split>: ap, "per_class": {name: ap}}`` (x100; None where undefined)."""
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
        things = [c for c in self.categories if c.isthing]
        empty = {"ap": None, "ap50": None, "ap75": None, "per_class": {c.name: None for c in things}}
        if not self._gts or not self._dets:
            return empty
        gt = COCO()
        gt.dataset = {"images": self._images, "annotations": self._gts,
                      "categories": [{"id": c.id, "name": c.name} for c in things]}
        with contextlib.redirect_stdout(io.StringIO()):
            gt.createIndex()
            dt = gt.loadRes([dict(d) for d in self._dets])  # loadRes adds fields to the dicts it gets
            ev = COCOeval(gt, dt, iouType="segm")
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        # precision: (T iou thresholds, R recall points, K categories, A area ranges, M max dets)
        precision = ev.eval["precision"][:, :, :, 0, -1]
        per_class = {}
        for k, cat_id in enumerate(ev.params.catIds):
            p = precision[:, :, k]
            per_class[cat_id] = float(100 * p[p > -1].mean()) if (p > -1).any() else None
        out = {"ap": _pos(ev.stats[0]), "ap50": _pos(ev.stats[1]), "ap75": _pos(ev.stats[2])}
        ap = np.array([np.nan if per_class.get(c.id) is None else per_class[c.id] for c in things])
        for split in sorted({c.split for c in things if c.split}):
            out[split] = _mean(ap, np.array([c.split == split for c in things]))
        out["per_class"] = {c.name: per_class.get(c.id) for c in things}
        return out


def _pos(x: float) -> float | None:
    """COCOeval's -1 (undefined) -> None, else x100."""
    return None if x < 0 else float(100 * x)


def _encode(mask: np.ndarray, mask_utils) -> dict:
    """(H, W) bool -> COCO RLE with a str ``counts`` (JSON-serialisable)."""
    rle = mask_utils.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle
