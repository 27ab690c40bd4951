"""`maskclip-ros eval-clip`: zero-shot region classification of a CLIP on held-out generated scenes
(maskclip_ros.small_clip.evaluate). The CLIP is the params file's (config/default.yaml, --params-file,
--set clip.checkpoint=...) or --checkpoint; scenes from section ``eval_clip`` of config/small_clip.yaml.
"""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from maskclip_ros.commands import add_config_arguments, add_progress_argument

    parser.add_argument("--checkpoint", default=None, help="CLIP state dict (default: the params' clip.checkpoint)")
    parser.add_argument("--num-scenes", type=int, default=None, help="held-out scenes (default: eval_clip.num_scenes)")
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--modes", default="window,tokens",
                        help="comma list of window, tokens, tokens_core (diagnostic), crop (slow: one CLIP pass per region)")
    add_config_arguments(parser, side="small_clip.yaml")
    add_progress_argument(parser)


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import json
    from pathlib import Path

    from maskclip_ros import config
    from maskclip_ros.pipeline import PARAMS_FILE, SegmenterConfig
    from maskclip_ros.small_clip.config import CONFIG_FILE, EvalClipConfig, SmallClipTrainConfig
    from maskclip_ros.small_clip.evaluate import evaluate_clip, format_results

    side = tuple(args.side_files)
    sets = [*args.sets, *([f"eval_clip.num_scenes={args.num_scenes}"] if args.num_scenes else [])]
    cfg = config.load({"model": config.Source(SegmenterConfig, PARAMS_FILE, tuple(args.params_files), partial=True),
                       "eval": config.Source(EvalClipConfig, CONFIG_FILE, side, section="eval_clip"),
                       "train": config.Source(SmallClipTrainConfig, CONFIG_FILE, side, section="train_clip")}, sets)
    model = cfg["model"]
    if args.checkpoint:
        clip = dataclasses.replace(model.clip, checkpoint=args.checkpoint, pretrained="", random_init=False)
        model = dataclasses.replace(model, clip=clip)
    result = evaluate_clip(model, num_scenes=cfg["eval"].num_scenes, seed=cfg["eval"].seed,
                           max_window=cfg["train"].max_window, modes=tuple(m for m in args.modes.split(",") if m),
                           progress=not args.no_progress)
    print(format_results(result))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0
