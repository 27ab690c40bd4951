"""RMA training on a tiny generated world with a tiny random-init CLIP: the loss falls, only the added
parameters change, checkpoints reload exactly, and resuming continues the same run."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from maskclip_ros.data import world
from maskclip_ros.data.coco_panoptic import PanopticDataset
from maskclip_ros.training.coarse import CoarseConfig, coarse_proposals
from maskclip_ros.training.data import IGNORED_CLASS
from maskclip_ros.training.losses import LossWeights, match, rma_loss
from maskclip_ros import config
from maskclip_ros.data.coco_panoptic import segment_masks
from maskclip_ros.pipeline import SegmenterConfig
from maskclip_ros.training.trainer import (CONFIG_FILE, DistInfo, RunSettings, TrainConfig, base_categories,
                                           optimisation_step, rma_model_config, train)

TINY = ["clip.model_name=maskclip-ros-test-tiny", "clip.random_init=true", "clip.checkpoint=", "clip.short_side=64", "train.batch_size=2",
        "train.log_every=1", "train.max_proposals=8", "train.mask_stride=4"]
WEIGHTS = LossWeights(ce=2.0, dice=5.0, bce=5.0, no_object=0.1, min_match_iou=0.2)


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_world")
    cfg = dataclasses.replace(world.default_world_config(), width=160, height=128, min_size=24, max_size=40,
                              max_things=4, region_warp=20.0)
    world.write_world(root, 4, seed=3, split="train", cfg=cfg)
    return PanopticDataset.from_layout(root, "train", "world")


def _settings(*extra) -> dict:
    """model, train, loss, coarse configs as `maskclip-ros train --set ...` reads them."""
    return config.load({"model": config.Source(SegmenterConfig, "default.yaml", partial=True),
                        "train": config.Source(TrainConfig, CONFIG_FILE, section="train"),
                        "loss": config.Source(LossWeights, CONFIG_FILE, section="loss"),
                        "coarse": config.Source(CoarseConfig, CONFIG_FILE, section="coarse")}, TINY + list(extra))


def _model(model_cfg, checkpoint=None, seed=0):
    from maskclip_ros.pipeline import build_segmenter
    torch.manual_seed(seed)  # the same random CLIP every time
    return build_segmenter(rma_model_config(model_cfg, torch.device("cpu"), checkpoint), with_proposer=False)


# ------------------------------------------------------------------------------------ loss pieces
def test_hungarian_matching_on_mask_cost_leaves_low_iou_unmatched():
    targets = torch.zeros(2, 8, 8)
    targets[0, :4], targets[1, 4:] = 1, 1  # top half, bottom half
    proposals = torch.zeros(3, 8, 8)
    proposals[0, 5:] = 0.9  # mostly the bottom half
    proposals[1, :3] = 0.8  # mostly the top half
    proposals[2, :, :1] = 0.9  # a thin column: IoU with either half < 0.2
    pairs = match(proposals, targets, WEIGHTS)
    assert sorted(zip(pairs.proposal.tolist(), pairs.target.tolist())) == [(0, 1), (1, 0)]
    only_column = match(proposals[2:], targets, WEIGHTS)
    assert only_column.proposal.numel() == 0  # Hungarian pairs it, the IoU floor drops it


def test_loss_no_object_and_ignored_novel_segments():
    targets = torch.zeros(2, 8, 8)
    targets[0, :4], targets[1, 4:] = 1, 1
    proposals = targets.clone()
    logits = torch.zeros(2, 3, requires_grad=True)
    no_object = torch.zeros(2, requires_grad=True)
    # segment 1 belongs to a novel class (IGNORED_CLASS): its proposal gets no loss at all
    out = rma_loss(logits, no_object, [], proposals, targets, torch.tensor([2, IGNORED_CLASS]), WEIGHTS)
    out["loss"].backward()
    assert logits.grad[1].abs().sum() == 0 and no_object.grad[1] == 0
    assert logits.grad[0, 2] < 0  # the matched class is pushed up
    # an unmatched proposal learns "no object"
    blob = torch.zeros(1, 8, 8)
    blob[0, :, :1] = 1
    logits2 = torch.zeros(1, 3, requires_grad=True)
    no_object2 = torch.zeros(1, requires_grad=True)
    rma_loss(logits2, no_object2, [], blob, targets, torch.tensor([0, 1]), WEIGHTS)["loss"].backward()
    assert no_object2.grad[0] < 0 and (logits2.grad[0] > 0).all()


def test_coarse_proposals_are_seeded_and_degraded():
    gt = np.zeros((3, 40, 50), bool)
    gt[0, :20], gt[1, 20:, :25], gt[2, 20:, 25:] = True, True, True
    cfg = CoarseConfig(morph_max=0.05, shift_max=0.05, blur_max=0.03, merge_prob=0.3, drop_prob=0.0,
                       blobs_max=2, blob_size=0.2)
    a = coarse_proposals(gt, np.random.default_rng(1), cfg)
    b = coarse_proposals(gt, np.random.default_rng(1), cfg)
    assert np.array_equal(a, b) and a.dtype == np.float32 and a.shape[1:] == (40, 50)
    assert 3 <= len(a) <= 5 and a.min() >= 0 and a.max() <= 1
    assert not any(np.array_equal(p > 0.5, g) for p in a for g in gt)  # every proposal is degraded
    assert gt.sum() == 40 * 50  # the caller's masks are untouched


# ---------------------------------------------------------------------------------------- training
def test_few_steps_lower_the_loss_and_change_only_rma(tiny_world):
    from maskclip_ros.training.data import TrainDataset
    settings = _settings("train.lr=1e-2")
    segmenter = _model(settings["model"])
    model = segmenter.maskclip
    base = base_categories(tiny_world.categories)
    text = segmenter.make_vocabulary([c["name"] for c in base]).text_embeddings
    data = TrainDataset(tiny_world, class_index={c["id"]: i for i, c in enumerate(base)}, stride=4,
                        max_proposals=8, seed=0, coarse=settings["coarse"])
    batch = [data[0], data[1]]
    cfg = settings["train"]
    clip_before = {k: v.clone() for k, v in model.tower.state_dict().items()}
    rma_before = {k: v.clone() for k, v in model.rma.state_dict().items()}
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    dist = DistInfo(0, 1, torch.device("cpu"))
    losses = [optimisation_step(model, model, optimizer, batch, text, WEIGHTS, cfg, dist, ddp=False)["loss"]
              for _ in range(6)]
    assert losses[-1] < 0.9 * losses[0], losses
    assert all(torch.equal(v, clip_before[k]) for k, v in model.tower.state_dict().items())
    changed = [k for k, v in model.rma.state_dict().items() if not torch.equal(v, rma_before[k])]
    assert len(changed) >= len(rma_before) // 2, changed
    assert {id(p) for p in model.trainable_parameters()} == {id(p) for p in model.rma.parameters()}


def test_checkpoint_reloads_to_identical_outputs_and_resume_continues(tiny_world, tmp_path):
    from maskclip_ros.model.factory import load_rma_checkpoint_extra
    settings = _settings("train.steps=4", "train.save_every=2", "train.lr=1e-3")
    full = train(tiny_world, RunSettings(**settings, out_dir=tmp_path / "full", progress=False))
    assert full["step"] == 4
    # the same run stopped after 2 steps and resumed from its checkpoint
    first = _settings("train.steps=2", "train.save_every=2", "train.lr=1e-3")
    train(tiny_world, RunSettings(**first, out_dir=tmp_path / "part", progress=False))
    extra = load_rma_checkpoint_extra(tmp_path / "part" / "checkpoint.pt")
    assert extra["step"] == 2 and extra["optimizer"]["state"]
    resumed = train(tiny_world, RunSettings(**settings, out_dir=tmp_path / "part",
                                            resume=tmp_path / "part" / "checkpoint.pt", progress=False))
    assert resumed["step"] == 4
    steps = [json.loads(line)["step"] for line in (tmp_path / "part" / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    state_full = torch.load(tmp_path / "full" / "rma.pt", weights_only=True)["state_dict"]
    state_resumed = torch.load(tmp_path / "part" / "rma.pt", weights_only=True)["state_dict"]
    for key, value in state_full.items():
        torch.testing.assert_close(state_resumed[key], value, rtol=1e-5, atol=1e-6)
    final_extra = load_rma_checkpoint_extra(tmp_path / "part" / "checkpoint.pt")
    adam_steps = {float(s["step"]) for s in final_extra["optimizer"]["state"].values()}
    assert adam_steps == {4.0}  # AdamW's own counters continued from 2, not restarted

    # the saved rma.pt, loaded through the factory, gives exactly the trained model's outputs
    model_cfg = settings["model"]
    trained = _model(model_cfg)
    trained.maskclip.rma.load_state_dict(state_full)
    reloaded = _model(model_cfg, checkpoint=tmp_path / "full" / "rma.pt")
    sample = tiny_world[3]
    masks = segment_masks(sample.panoptic, [s["id"] for s in sample.segments]).astype(np.float32)
    with torch.no_grad():
        a = trained.maskclip(sample.image, masks)
        b = reloaded.maskclip(sample.image, masks)
    assert torch.equal(a.embeddings, b.embeddings) and torch.equal(a.masks, b.masks)
    untrained = _model(model_cfg)
    with torch.no_grad():
        c = untrained.maskclip(sample.image, masks)
    assert not torch.equal(a.embeddings, c.embeddings)  # training changed what the model outputs


@pytest.mark.slow
def test_torchrun_two_processes_on_cpu(tiny_world, tmp_path):
    """The DistributedDataParallel path (Gloo on CPU): both processes train in step and rank 0 saves."""
    root = tiny_world.json_path.parent
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "maskclip_ros.cli", "train", "--data", str(root), "--split", "train", "--out", str(tmp_path),
           "--no-progress"] + [a for s in TINY + ["train.steps=2", "train.batch_size=1", "train.threads=1"]
                               for a in ("--set", s)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    summaries = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(summaries) == 1, done.stdout  # rank 0 alone prints, one JSON line
    assert summaries[0]["world_size"] == 2 and summaries[0]["step"] == 2 and summaries[0]["rank"] == 0
    assert (tmp_path / "rma.pt").is_file()
