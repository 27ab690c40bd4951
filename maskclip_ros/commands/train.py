"""`maskclip-ros train`: train the RMA parameters on a COCO-panoptic-format dataset (base classes only).

Settings: the model from config/default.yaml (+ --params-file), training from config/train.yaml
(+ --config), any key overridden with --set (train.steps=100, maskclip.rma_layers=6).
Single process: ``maskclip-ros train --data DIR --out runs/rma``; several GPUs:
``torchrun --nproc_per_node 8 -m maskclip_ros.cli train --data DIR --out runs/rma --set device=cuda``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from maskclip_ros.commands import add_config_arguments, add_dataset_arguments, add_progress_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_dataset_arguments(parser, split="train")
    add_config_arguments(parser, side="train.yaml")
    add_progress_argument(parser)
    parser.add_argument("--out", required=True, help="output directory (checkpoint.pt, rma.pt, log.jsonl)")
    parser.add_argument("--resume", default=None, help="continue from a checkpoint.pt (its step and optimizer state)")


def run(args: argparse.Namespace) -> int:
    from maskclip_ros import config
    from maskclip_ros.data.coco_panoptic import PanopticDataset
    from maskclip_ros.pipeline import PARAMS_FILE, SegmenterConfig
    from maskclip_ros.training.coarse import CoarseConfig
    from maskclip_ros.training.losses import LossWeights
    from maskclip_ros.training.trainer import CONFIG_FILE, RunSettings, TrainConfig, train

    side = tuple(args.side_files)
    cfg = config.load({
        "model": config.Source(SegmenterConfig, PARAMS_FILE, tuple(args.params_files), partial=True),
        "train": config.Source(TrainConfig, CONFIG_FILE, side, section="train"),
        "loss": config.Source(LossWeights, CONFIG_FILE, side, section="loss"),
        "coarse": config.Source(CoarseConfig, CONFIG_FILE, side, section="coarse")}, args.sets)
    dataset = PanopticDataset.from_layout(args.data, args.split, args.layout)
    summary = train(dataset, RunSettings(**cfg, out_dir=Path(args.out),
                                         resume=Path(args.resume) if args.resume else None,
                                         progress=not args.no_progress))
    if summary["rank"] == 0:  # one summary line per run, not one per torchrun process
        print(json.dumps(summary), flush=True)
    return 0
