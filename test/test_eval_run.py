"""`maskclip-ros eval` end to end on a tiny world with a tiny random-init CLIP, and the evaluation loop
against ground truth fed back as a perfect prediction."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest

from maskclip_ros.data import world
from maskclip_ros.data.coco_panoptic import PanopticDataset
from maskclip_ros.evaluation.runner import evaluate, gt_proposals

TINY = ["clip.model_name=maskclip-ros-test-tiny", "clip.random_init=true", "clip.checkpoint=", "clip.short_side=64", "maskclip.crop_size=32"]


@pytest.fixture(scope="module")
def tiny_val(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_val")
    cfg = dataclasses.replace(world.default_world_config(), width=160, height=128, min_size=24, max_size=40,
                              max_things=4, region_warp=20.0)
    world.write_world(root, 3, seed=5, split="val", cfg=cfg)
    return root


class _Oracle:
    """A stand-in Segmenter that returns the ground truth of the image it is given (tests the loop)."""

    def __init__(self, dataset):
        self.samples = {dataset[i].image.tobytes(): dataset[i] for i in range(len(dataset))}
        self.cats = dataset.categories

    def make_vocabulary(self, names, is_thing):
        return list(names)

    def segment(self, image, vocabulary, external_masks=None):
        from maskclip_ros.model.panoptic import SegmentInfo
        from maskclip_ros.pipeline import PanopticResult
        sample = self.samples[image.tobytes()]
        index = {c["id"]: k for k, c in enumerate(self.cats)}
        segs = [SegmentInfo(s["id"], index[s["category_id"]], 0.9, bool(s["isthing"]), int(s["area"]),
                            tuple(s["bbox"])) for s in sample.segments]
        return PanopticResult(panoptic=sample.panoptic, semantic=np.zeros_like(sample.panoptic), segments=segs,
                              embeddings=None, vocabulary=vocabulary, timings_ms={"clip": 1.0})


def test_evaluate_oracle_scores_100(tiny_val):
    dataset = PanopticDataset.from_layout(tiny_val, "val", "world")
    result = evaluate(dataset, _Oracle(dataset), progress=False)
    assert result["images"] == 3
    assert result["panoptic"]["all"]["pq"] == pytest.approx(100)
    assert result["semantic"]["miou"] == pytest.approx(100)
    assert result["instance"]["ap"] == pytest.approx(100)
    assert gt_proposals(dataset[0]).shape[0] == len(dataset[0].segments)


def test_eval_cli_writes_json_and_markdown(tiny_val, tmp_path):
    sets = [a for s in TINY for a in ("--set", s)]
    cmd = [sys.executable, "-m", "maskclip_ros.cli", "eval", "--data", str(tiny_val), "--out", str(tmp_path),
           "--no-progress", *sets, "--set", "eval.proposals=gt",
           "--variant", "tokens:maskclip.mode=tokens", "--variant", "crop:maskclip.mode=crop"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert list(results) == ["tokens", "crop"]
    for r in results.values():
        assert r["images"] == 3 and set(r["panoptic"]) >= {"all", "things", "stuff", "base", "novel", "per_class"}
        assert len(r["panoptic"]["per_class"]) == 14
    assert results["crop"]["settings"]["maskclip"]["mode"] == "crop"
    markdown = (tmp_path / "results.md").read_text()
    assert "| tokens |" in markdown and "| crop |" in markdown and "| ring |" in markdown
