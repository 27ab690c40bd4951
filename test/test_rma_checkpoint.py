"""The committed RMA checkpoint, trained on the world's base classes, beats training-free ``tokens`` mode on
held-out generated scenes (seed 12: neither the small CLIP, seed 0, nor RMA training, seed 11, saw them).

The margin asserted is a little below the one measured on these same scenes with this test's settings
(see MEASURED); the README's table gives the full evaluation.
"""
from __future__ import annotations

import pytest
import torch

from maskclip_ros.config import load_params
from maskclip_ros.data import world
from maskclip_ros.data.coco_panoptic import PanopticDataset
from maskclip_ros.evaluation.runner import evaluate
from maskclip_ros.model.factory import ASSETS_DIR
from maskclip_ros.pipeline import build_segmenter

RMA_ASSET = "rma/maskclip-ros-tiny-vit16-rma.pt"  # relative to maskclip_ros/assets (as maskclip.rma_checkpoint)
SCENES = 6
MEASURED = {"pq_tokens": 11.00, "pq_rma": 36.09}  # PQ with ground-truth masks on these 6 scenes (2026-11-25)
MARGIN = 20.0  # PQ points asserted: a little below the measured 25.1


@pytest.fixture(scope="module")
def held_out(tmp_path_factory):
    root = tmp_path_factory.mktemp("held_out")
    world.write_world(root, SCENES, seed=12, split="val")
    return PanopticDataset.from_layout(root, "val", "world")


def _pq(dataset, mode: str) -> float:
    torch.set_num_threads(1)
    params = load_params()
    params["maskclip"].update(mode=mode, rma_checkpoint=RMA_ASSET if mode == "rma" else "")
    params.pop("proposals", None)  # ground-truth masks as proposals
    result = evaluate(dataset, build_segmenter(params), proposals="gt", instance=False, progress=False)
    return result["panoptic"]["all"]["pq"]


def test_committed_rma_checkpoint_beats_tokens(held_out):
    assert (ASSETS_DIR / RMA_ASSET).is_file()
    pq_tokens, pq_rma = _pq(held_out, "tokens"), _pq(held_out, "rma")
    assert pq_tokens == pytest.approx(MEASURED["pq_tokens"], abs=0.5)  # the CLIP asset is the measured one
    assert pq_rma >= pq_tokens + MARGIN, (pq_tokens, pq_rma)
