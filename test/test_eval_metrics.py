"""Evaluation metrics against textbook values worked by hand, and PQ against torchmetrics."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from maskclip_ros.evaluation.metrics import (Category, InstanceEvaluator, PanopticEvaluator, SemanticEvaluator,
                                             panoptic_pairs)

CATS = [Category(1, "ring", True, "base"), Category(2, "square", True, "novel"),
        Category(3, "sky", False, "base"), Category(4, "grass", False, "novel"),
        Category(5, "water", False, "base")]


def _gt():
    """4 x 10 ground truth: sky cols 0-4, ring A cols 5-6, grass col 7, ring B cols 8-9."""
    gt = np.zeros((4, 10), np.int32)
    gt[:, 0:5], gt[:, 5:7], gt[:, 7], gt[:, 8:10] = 1, 2, 3, 4
    return gt, {1: 3, 2: 1, 3: 4, 4: 1}


def _partial():
    """The worked case: sky shrunk to cols 0-3 (IoU 16/20); grass spread over cols 4 and 7 (IoU 4/8 = 0.5,
    not a match); ring A covered in rows 0-2 only, row 3 left unlabeled (IoU 6/8); ring B called square."""
    pred = np.zeros((4, 10), np.int32)
    pred[:, 0:4], pred[:, 4], pred[:, 7], pred[0:3, 5:7], pred[:, 8:10] = 7, 8, 8, 9, 10
    return pred, {7: 3, 8: 4, 9: 1, 10: 2}


def _evaluate(pred, pred_segs, gt, gt_segs):
    pan, sem = PanopticEvaluator(CATS), SemanticEvaluator(CATS)
    pan.update(pred, pred_segs, gt, gt_segs)
    sem.update(pred, pred_segs, gt, gt_segs)
    return pan.compute(), sem.compute()


def test_perfect_prediction_scores_100():
    gt, segs = _gt()
    pred = gt * 3 + 5  # other segment ids, same segments
    pan, sem = _evaluate(pred, {k * 3 + 5: v for k, v in segs.items()}, gt, segs)
    for group in ("all", "things", "stuff", "base", "novel"):
        if group == "novel":
            continue  # no novel class in this ground truth
        assert pan[group]["pq"] == pytest.approx(100) and pan[group]["sq"] == pytest.approx(100)
        assert pan[group]["rq"] == pytest.approx(100)
    assert pan["novel"]["pq"] == pytest.approx(100)  # grass is novel and present
    assert pan["all"]["n"] == 3  # ring, sky, grass; square and water absent -> not averaged
    assert sem["miou"] == pytest.approx(100)


def test_disjoint_prediction_scores_0():
    gt, segs = _gt()
    pred = np.roll(gt, 5, axis=1)  # same shapes, wrong places
    pan, sem = _evaluate(pred, segs, gt, segs)
    assert pan["all"]["pq"] == 0 and pan["all"]["rq"] == 0
    wrong_class = {k: {1: 2, 3: 5, 4: 2}[v] for k, v in segs.items()}  # right places, wrong classes
    pan, sem = _evaluate(gt, wrong_class, gt, segs)
    assert pan["all"]["pq"] == 0 and sem["miou"] == 0


def test_worked_partial_case_with_things_and_stuff():
    gt, gt_segs = _gt()
    pred, pred_segs = _partial()
    pan, sem = _evaluate(pred, pred_segs, gt, gt_segs)
    per = pan["per_class"]
    # ring: TP (IoU 0.75) + FN (ring B): SQ 75, RQ 1 / (1 + 0.5 * 1), PQ 50
    assert (per["ring"]["tp"], per["ring"]["fp"], per["ring"]["fn"]) == (1, 0, 1)
    assert per["ring"]["sq"] == pytest.approx(75) and per["ring"]["rq"] == pytest.approx(200 / 3)
    assert per["ring"]["pq"] == pytest.approx(50)
    assert (per["square"]["tp"], per["square"]["fp"], per["square"]["fn"]) == (0, 1, 0)
    assert per["sky"]["pq"] == pytest.approx(80) and per["sky"]["rq"] == pytest.approx(100)
    # IoU exactly 0.5 is no match (strictly greater is required): one FP and one FN
    assert (per["grass"]["tp"], per["grass"]["fp"], per["grass"]["fn"]) == (0, 1, 1)
    assert per["water"]["pq"] is None  # absent everywhere: left out of the averages
    assert pan["all"]["pq"] == pytest.approx((50 + 0 + 80 + 0) / 4)
    assert pan["all"]["sq"] == pytest.approx((75 + 0 + 80 + 0) / 4)
    assert pan["all"]["rq"] == pytest.approx((200 / 3 + 0 + 100 + 0) / 4)
    assert pan["things"]["pq"] == pytest.approx(25) and pan["stuff"]["pq"] == pytest.approx(40)
    assert pan["base"]["pq"] == pytest.approx(65) and pan["novel"]["pq"] == pytest.approx(0)
    # mIoU: ring 6/16, square 0/8, sky 16/20, grass 4/8; water absent
    assert sem["per_class"]["ring"] == pytest.approx(37.5)
    assert sem["per_class"]["sky"] == pytest.approx(80)
    assert sem["per_class"]["grass"] == pytest.approx(50)
    assert sem["per_class"]["square"] == 0 and sem["per_class"]["water"] is None
    assert sem["miou"] == pytest.approx((37.5 + 0 + 80 + 50) / 4)


def test_void_ground_truth_is_ignored():
    gt, segs = _gt()
    gt_void = gt.copy()
    gt_void[:, 7] = 0  # grass becomes void
    pred = gt.copy()
    pred[:, 7] = 1  # the prediction paints sky over the void column
    pan, _ = _evaluate(pred, {1: 3, 2: 1, 4: 1}, gt_void, {1: 3, 2: 1, 4: 1})
    # sky's IoU leaves out the predicted pixels on void: 20 / 20, so everything is perfect
    assert pan["all"]["pq"] == pytest.approx(100)


def _one_segment_per_stuff_class(ids: np.ndarray, cats: dict) -> tuple[np.ndarray, dict]:
    """Panoptic format: all regions of one stuff class form one segment (a new array)."""
    ids, out = ids.copy(), {}
    for sid in sorted(set(np.unique(ids).tolist())):
        first = next((s for s, c in out.items() if c == cats[sid]), None) if cats[sid] >= 3 else None
        if first is not None:
            ids[ids == sid] = first
        else:
            out[sid] = cats[sid]
    return ids, out


def _random_case(rng, h=24, w=32):
    """Ground truth of stuff columns and thing boxes, and a prediction made from it by a small shift,
    some relabelled segments and an extra thing: a mix of TP, FP and FN, without void."""
    ids, cats = np.ones((h, w), np.int32), {}
    cuts = sorted(rng.choice(np.arange(4, w - 4), 2, replace=False))
    for k, (a, b) in enumerate(zip([0, *cuts], [*cuts, w])):
        ids[:, a:b], cats[k + 1] = k + 1, int(rng.choice([3, 4, 5]))
    for k in range(int(rng.integers(1, 5))):
        y, x = rng.integers(0, h - 6), rng.integers(0, w - 6)
        ids[y:y + int(rng.integers(3, 7)), x:x + int(rng.integers(3, 7))] = 10 + k
        cats[10 + k] = int(rng.choice([1, 2]))
    pred = np.roll(ids, int(rng.integers(0, 3)), axis=int(rng.integers(0, 2)))
    pred_cats = {k: (int(rng.choice([1, 2])) if v < 3 else int(rng.choice([3, 4, 5])))
                 if rng.random() < 0.3 else v for k, v in cats.items()}
    y, x = rng.integers(0, h - 5), rng.integers(0, w - 5)
    pred[y:y + 4, x:x + 4], pred_cats[20] = 20, int(rng.choice([1, 2]))
    return _one_segment_per_stuff_class(pred, pred_cats), _one_segment_per_stuff_class(ids, cats)


def test_agrees_with_torchmetrics_without_void():
    from torchmetrics.detection import PanopticQuality
    rng = np.random.default_rng(0)
    ours = PanopticEvaluator(CATS)
    reference = PanopticQuality(things={1, 2}, stuffs={3, 4, 5}, return_sq_and_rq=True, return_per_class=True)
    for _ in range(12):
        (pred, pred_segs), (gt, gt_segs) = _random_case(rng)
        ours.update(pred, pred_segs, gt, gt_segs)
        reference.update(torch.from_numpy(panoptic_pairs(pred, pred_segs))[None],
                         torch.from_numpy(panoptic_pairs(gt, gt_segs))[None])
    expected = reference.compute().double().numpy() * 100  # (classes, 3): things by id, then stuff by id
    result = ours.compute()["per_class"]
    assert sum(v["tp"] for v in result.values()) > 5 and sum(v["fp"] + v["fn"] for v in result.values()) > 5
    for row, name in zip(expected, ["ring", "square", "sky", "grass", "water"]):
        if result[name]["pq"] is None:
            assert row[0] == 0
            continue
        assert [result[name][k] for k in ("pq", "sq", "rq")] == pytest.approx(row.tolist(), abs=1e-4)


def test_unlabeled_prediction_still_counts_as_false_negative():
    """panopticapi counts a ground-truth segment the prediction leaves unlabeled as FN (torchmetrics 1.9
    drops it: then predicting nothing would never cost recognition quality)."""
    gt, segs = _gt()
    pred = gt.copy()
    pred[:, 8:10] = 0  # ring B left unlabeled
    pan, _ = _evaluate(pred, {1: 3, 2: 1, 3: 4}, gt, segs)
    assert pan["per_class"]["ring"]["fn"] == 1 and pan["per_class"]["ring"]["rq"] == pytest.approx(200 / 3)


def test_mask_ap_perfect_and_half_recall():
    gt, segs = _gt()
    segments = [{"id": k, "category_id": v} for k, v in segs.items()]
    ring_a, ring_b = gt == 2, gt == 4
    perfect = InstanceEvaluator(CATS)
    perfect.update(np.stack([ring_a, ring_b]), [1, 1], [0.9, 0.8], gt, segments)
    result = perfect.compute()
    assert result["ap"] == pytest.approx(100) and result["ap50"] == pytest.approx(100)
    half = InstanceEvaluator(CATS)
    half.update(ring_a[None], [1], [0.9], gt, segments)  # one of two rings found: recall 0.5
    # COCO AP: precision 1 on the 51 of 101 recall points up to 0.5, 0 above
    assert half.compute()["ap"] == pytest.approx(100 * 51 / 101)
    assert half.compute()["per_class"]["ring"] == pytest.approx(100 * 51 / 101)
