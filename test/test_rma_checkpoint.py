"""The committed RMA checkpoint, trained on the world's base classes, beats training-free ``tokens`` mode on
held-out generated scenes with `regions` proposals (seed 12: neither the small CLIP, seeds 0 and 1, nor RMA
training, seed 11, saw them).

One checkpoint per committed CLIP asset. The margin asserted is a little below the one measured on these same
scenes with this test's settings (CASES); the README's tables give the full evaluation.
"""
from __future__ import annotations

import pytest
import torch

from maskclip_ros.config import asset
from maskclip_ros.data import world
from maskclip_ros.data.coco_panoptic import PanopticDataset
from maskclip_ros.evaluation.runner import evaluate
from maskclip_ros.pipeline import build_segmenter, load_segmenter_config

# (CLIP asset, RMA asset trained on it, PQ measured on these 6 scenes (2026-12-04)); paths relative to
# maskclip_ros/assets, as clip.checkpoint / maskclip.rma_checkpoint take them. With ground-truth masks this
# CLIP's mask tokens are already near their best and RMA does not beat them (README); with `regions`
# proposals it does, so the test uses those.
CASES = {
    "small CLIP": ("clip/maskclip-ros-tiny-vit16.pt", "rma/maskclip-ros-tiny-vit16-rma.pt",
                   {"pq_tokens": 43.90, "pq_rma": 52.51}),
}
SCENES = 6
MARGIN = 0.8  # asserted share of the measured PQ gain (a little below it)
# Every setting the measured figures depend on, pinned here (not read from config/default.yaml), so tuning
# a default does not silently move these golden numbers. The world is world.yaml's at the time of measuring.
PINNED = ["clip.model_name=maskclip-ros-tiny-vit16", "clip.pretrained=", "clip.random_init=false",
          "clip.short_side=480", "maskclip.mask_threshold=0.5", "maskclip.rma_layers=", "maskclip.rma_refine=true",
          "maskclip.rma_refine_hidden=32", "maskclip.rma_mask_resolution=4", "maskclip.rma_no_object=true",
          "merge.object_mask_threshold=0.3", "merge.overlap_threshold=0.5", "merge.mask_threshold=0.5",
          "merge.min_area=32", "vocabulary.prompt_templates=['a photo of a {}.', 'a {}.', 'a picture of a {}.']",
          "device=cpu", "precision=fp32",
          "proposals.backend=regions", "proposals.max_proposals=100", "proposals.min_area=200",
          "proposals.mask_long_side=320", "proposals.regions.work_long_side=160",
          "proposals.regions.scales=[100.0, 300.0]", "proposals.regions.min_segment=32",
          "proposals.regions.duplicate_iou=0.9"]


@pytest.fixture(scope="module")
def held_out(tmp_path_factory):
    root = tmp_path_factory.mktemp("held_out")
    world.write_world(root, SCENES, seed=12, split="val")
    return PanopticDataset.from_layout(root, "val", "world")


def _pq(dataset, clip: str, mode: str, rma: str) -> float:
    torch.set_num_threads(1)
    cfg = load_segmenter_config(overrides=[*PINNED, f"clip.checkpoint={clip}", f"maskclip.mode={mode}",
                                           f"maskclip.rma_checkpoint={rma if mode == 'rma' else ''}"])
    segmenter = build_segmenter(cfg)  # `regions` proposals (PINNED)
    result = evaluate(dataset, segmenter, proposals="backend", instance=False, progress=False)
    return result["panoptic"]["all"]["pq"]


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_committed_rma_checkpoint_beats_tokens(held_out, case):
    clip, rma, measured = CASES[case]
    assert asset(rma).is_file() and asset(clip).is_file()
    pq_tokens, pq_rma = _pq(held_out, clip, "tokens", rma), _pq(held_out, clip, "rma", rma)
    assert pq_tokens == pytest.approx(measured["pq_tokens"], abs=0.5)  # the CLIP asset is the measured one
    gain = measured["pq_rma"] - measured["pq_tokens"]
    assert pq_rma >= pq_tokens + MARGIN * gain, (pq_tokens, pq_rma)
