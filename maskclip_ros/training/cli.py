"""`maskclip-ros train`: train the RMA parameters on a COCO-panoptic-format dataset (base classes only).

Single process: ``maskclip-ros train --data DIR --out runs/rma``; several GPUs:
``torchrun --nproc_per_node 8 -m maskclip_ros.cli train --data DIR --out runs/rma --set device=cuda``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_data_arguments(parser: argparse.ArgumentParser, split: str) -> None:
    """--data/--layout/--split/--params/--config/--set, shared with `maskclip-ros eval`."""
    parser.add_argument("--data", required=True, help="dataset root (world, COCO or ADE20K panoptic layout)")
    parser.add_argument("--layout", default="world", choices=("world", "coco", "ade20k"),
                        help="directory layout of --data (default: world)")
    parser.add_argument("--split", default=split, help=f"dataset split (default: {split})")
    parser.add_argument("--params", default=None, help="model params file (default: config/default.yaml)")
    parser.add_argument("--config", default=None, help="training/eval settings (default: config/train.yaml)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="override one setting, e.g. train.steps=100 or maskclip.rma_layers=6 (repeatable)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def register(subparsers) -> None:
    parser = subparsers.add_parser("train", help="train RMA (frozen CLIP and proposals) on base classes",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arguments(parser, split="train")
    parser.add_argument("--out", required=True, help="output directory (checkpoint.pt, rma.pt, log.jsonl)")
    parser.add_argument("--resume", default=None,
                        help="continue from a checkpoint.pt (its step and optimizer state)")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from maskclip_ros.data.coco_panoptic import PanopticDataset
    from maskclip_ros.training.settings import load_settings, parse_sets
    from maskclip_ros.training.trainer import RunSettings, train

    params, sections = load_settings(args.params, args.config, parse_sets(args.sets))
    dataset = PanopticDataset.from_layout(args.data, args.split, args.layout)
    summary = train(dataset, RunSettings(params=params, sections=sections, out_dir=Path(args.out),
                                         resume=Path(args.resume) if args.resume else None,
                                         progress=not args.no_progress))
    print(json.dumps(summary))
    return 0
