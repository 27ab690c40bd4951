"""`maskclip-ros train-clip --out FILE.pt`: train the project's small CLIP on the generated world
(maskclip_ros.small_clip). Settings: section ``train_clip`` of config/small_clip.yaml, the world of
config/world.yaml, prompt templates from config/default.yaml; override any with --set, e.g.
``--set train_clip.minutes=20 --set train_clip.init=ckpt.pt``; ``--set train_clip.device=cuda`` trains on a
CUDA GPU. The command line is stored in the metadata JSON beside the checkpoint (with the chain of runs it
continues), so every checkpoint says how to make it.
"""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from maskclip_ros.commands import add_config_arguments, add_progress_argument

    parser.add_argument("--out", required=True, help="checkpoint path (.pt); metadata goes to .json")
    parser.add_argument("--log", default=None, help="JSON-lines loss log")
    add_config_arguments(parser, side="small_clip.yaml")
    add_progress_argument(parser)


def run(args: argparse.Namespace) -> int:
    import shlex
    import sys
    from pathlib import Path

    from maskclip_ros import config
    from maskclip_ros.data.world import CONFIG_FILE as WORLD_FILE, WorldConfig
    from maskclip_ros.pipeline import PARAMS_FILE, SegmenterConfig
    from maskclip_ros.small_clip.config import CONFIG_FILE, SmallClipTrainConfig
    from maskclip_ros.small_clip.train import torch_device, train

    cfg = config.load({"train": config.Source(SmallClipTrainConfig, CONFIG_FILE, tuple(args.side_files),
                                              section="train_clip"),
                       "world": config.Source(WorldConfig, WORLD_FILE, section="world"),
                       "model": config.Source(SegmenterConfig, PARAMS_FILE, tuple(args.params_files),
                                              partial=True)}, args.sets)
    try:
        torch_device(cfg["train"].device)  # refused before the world is generated
    except ValueError as err:
        print(f"maskclip-ros train-clip: {err}", file=sys.stderr)
        return 2
    command = shlex.join(["maskclip-ros", *args.argv])  # reproduces this run
    meta = train(cfg["train"], Path(args.out), Path(args.log) if args.log else None, cfg["world"],
                 cfg["model"].vocabulary.prompt_templates, command, progress=not args.no_progress)
    print(f"saved {args.out} after {meta['steps']} steps, {meta['seconds']} s, final loss {meta['losses'][-1]['loss']}")
    return 0
