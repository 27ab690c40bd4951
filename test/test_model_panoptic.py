"""Panoptic merge on hand-built cases: overlaps, stuff merging, thresholds, no-object, empty input."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from maskclip_ros.model.panoptic import MergeConfig, panoptic_merge

CFG = MergeConfig(object_mask_threshold=0.3, overlap_threshold=0.5, mask_threshold=0.5, min_area=0)
H, W = 10, 12


def box(y0, y1, x0, x1, value=1.0):
    m = torch.zeros(H, W)
    m[y0:y1, x0:x1] = value
    return m


def onehot(labels, scores, classes=3):
    """(M, C) class scores: ``scores`` on ``labels``, the rest (of probability 1) spread over the other classes
    as far below the score as possible."""
    probs = torch.zeros(len(labels), classes)
    for i, (label, score) in enumerate(zip(labels, scores)):
        probs[i] = min(1 - score, score) / (classes - 1) * 0.5
        probs[i, label] = score
    return probs


THINGS = torch.tensor([True, True, False])  # classes 0, 1 things; 2 stuff


def test_overlapping_things_higher_score_wins_the_overlap():
    masks = torch.stack([box(0, 6, 0, 6), box(3, 9, 3, 9)])
    out = panoptic_merge(masks, onehot([0, 1], [0.9, 0.6]), THINGS, CFG)
    assert [(s.id, s.class_index, s.is_thing) for s in out.segments] == [(1, 0, True), (2, 1, True)]
    assert (out.panoptic[3:6, 3:6] == 1).all()  # overlap painted by the more confident mask
    assert out.segments[0].area == 36 and out.segments[1].area == 36 - 9
    assert out.segments[0].bbox == (0, 0, 6, 6) and out.segments[1].bbox == (3, 3, 6, 6)
    assert out.segments[0].score == pytest.approx(0.9)
    assert out.panoptic.dtype == np.int32 and out.semantic.dtype == np.int32
    assert (out.semantic[out.panoptic == 2] == 1).all() and (out.semantic[out.panoptic == 0] == -1).all()
    assert out.members == [(0,), (1,)]


def test_mostly_hidden_segment_is_dropped_by_overlap_threshold():
    masks = torch.stack([box(0, 8, 0, 8), box(0, 4, 0, 5)])  # second mask: 20 px, all under the first
    masks[1, 8:9, 0:2] = 1.0  # 2 of its 22 pixels stay visible: 9% < 50%
    out = panoptic_merge(masks, onehot([0, 1], [0.9, 0.8]), THINGS, CFG)
    assert [s.class_index for s in out.segments] == [0]
    assert (out.panoptic[8, 0:2] == 0).all()  # its leftover pixels stay unlabeled
    keep_all = panoptic_merge(masks, onehot([0, 1], [0.9, 0.8]), THINGS,
                              MergeConfig(0.3, overlap_threshold=0.05, mask_threshold=0.5, min_area=0))
    assert len(keep_all.segments) == 2 and keep_all.segments[1].area == 2


def test_stuff_of_one_class_merges_things_stay_instances():
    masks = torch.stack([box(0, 3, 0, 12), box(7, 10, 0, 12), box(4, 6, 0, 3), box(4, 6, 6, 9)])
    out = panoptic_merge(masks, onehot([2, 2, 0, 0], [0.7, 0.9, 0.8, 0.8]), THINGS, CFG)
    assert [(s.class_index, s.is_thing) for s in out.segments] == [(2, False), (0, True), (0, True)]
    stuff = out.segments[0]
    assert stuff.area == 72 and stuff.bbox == (0, 0, 12, 10) and stuff.score == pytest.approx(0.9)
    assert out.members[0] == (0, 1)
    assert np.array_equal(np.unique(out.panoptic), [0, 1, 2, 3])


def test_object_mask_threshold_and_no_object():
    masks = torch.stack([box(0, 5, 0, 5), box(5, 10, 5, 10), box(0, 5, 6, 12)])
    probs = onehot([0, 1, 0], [0.9, 0.25, 0.6])
    out = panoptic_merge(masks, probs, THINGS, CFG)
    assert [s.score for s in out.segments] == pytest.approx([0.9, 0.6])  # 0.25 < 0.3 dropped
    no_object = torch.tensor([0.05, 0.0, 0.7])  # mask 2: "no object" beats its best class
    out = panoptic_merge(masks, probs, THINGS, CFG, no_object=no_object)
    assert [s.score for s in out.segments] == pytest.approx([0.9])


def test_mask_threshold_leaves_weak_pixels_unlabeled():
    masks = torch.stack([box(0, 10, 0, 12, 0.4) + box(2, 6, 2, 6, 0.5)])  # 0.9 inside, 0.4 outside
    out = panoptic_merge(masks, onehot([0], [0.9]), THINGS, CFG)
    assert out.segments[0].area == 16 and (out.panoptic == 1).sum() == 16


def test_min_area_drops_and_renumbers():
    masks = torch.stack([box(0, 1, 0, 2), box(3, 9, 3, 9)])  # 2 px and 36 px
    out = panoptic_merge(masks, onehot([0, 1], [0.9, 0.8]), THINGS,
                         MergeConfig(0.3, 0.5, 0.5, min_area=3))
    assert [(s.id, s.class_index, s.area) for s in out.segments] == [(1, 1, 36)]
    assert (out.panoptic[0, 0:2] == 0).all() and (out.semantic[0, 0:2] == -1).all()
    assert out.members == [(1,)]


def test_empty_input_and_everything_dropped():
    out = panoptic_merge(torch.zeros(0, H, W), torch.zeros(0, 3), THINGS, CFG)
    assert out.segments == [] and out.panoptic.shape == (H, W) and (out.panoptic == 0).all()
    assert (out.semantic == -1).all() and out.members == []
    low = panoptic_merge(box(0, 5, 0, 5)[None], onehot([0], [0.1]), THINGS, CFG)
    assert low.segments == [] and (low.panoptic == 0).all()


def test_merge_config_validates():
    with pytest.raises(ValueError):
        MergeConfig(object_mask_threshold=1.2, overlap_threshold=0.5, mask_threshold=0.5, min_area=0)
    with pytest.raises(ValueError):
        MergeConfig(0.3, 0.5, 0.5, min_area=-1)


def test_output_size_paints_at_mask_resolution_and_measures_output_pixels():
    """Half-resolution masks merged into a full-size image equal merging the nearest-upsampled masks, and
    areas/boxes count output pixels."""
    torch.manual_seed(0)
    low = (torch.rand(5, 12, 16) > 0.5).float() * torch.rand(5, 1, 1)  # (M, h, w)
    probs = torch.softmax(torch.randn(5, 3) * 4, 1)
    is_thing = torch.tensor([True, False, True])
    config = MergeConfig(object_mask_threshold=0.0, overlap_threshold=0.0, mask_threshold=0.1, min_area=0)
    fast = panoptic_merge(low, probs, is_thing, config, output_size=(24, 32))
    full = panoptic_merge(low.repeat_interleave(2, 1).repeat_interleave(2, 2), probs, is_thing, config)
    assert fast.panoptic.shape == (24, 32)
    np.testing.assert_array_equal(fast.panoptic, full.panoptic)
    np.testing.assert_array_equal(fast.semantic, full.semantic)
    assert fast.segments == full.segments and fast.segments
    assert sum(s.area for s in fast.segments) == int((fast.panoptic > 0).sum())
    empty = panoptic_merge(low[:0], probs[:0], is_thing, config, output_size=(24, 32))
    assert empty.panoptic.shape == (24, 32) and not empty.segments
