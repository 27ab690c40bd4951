"""`maskclip-ros make-world OUT_DIR`: write generated scenes as a COCO panoptic dataset (config/world.yaml:
the scene layout in section ``world``, what to write in ``make_world``; override with --set
make_world.num_images=20 or world.width=320). With --set make_world.num_sequences=N: N moving sequences
(section ``sequences``) in the same layout, plus per-frame depth (16UC1 mm PNG) and camera info (JSON)."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from maskclip_ros.commands import add_config_arguments

    parser.add_argument("out_dir", help="dataset root to write")
    add_config_arguments(parser, side="world.yaml")


def run(args: argparse.Namespace) -> int:
    from maskclip_ros import config
    from maskclip_ros.data.sequences import SequenceConfig, write_sequences
    from maskclip_ros.data.world import CONFIG_FILE, MakeWorldConfig, WorldConfig, write_world

    files = tuple(args.side_files)
    cfg = config.load({"world": config.Source(WorldConfig, CONFIG_FILE, files, section="world"),
                       "sequences": config.Source(SequenceConfig, CONFIG_FILE, files, section="sequences"),
                       "make": config.Source(MakeWorldConfig, CONFIG_FILE, files, section="make_world")}, args.sets)
    make = cfg["make"]
    if make.num_sequences > 0:
        print(write_sequences(args.out_dir, make.num_sequences, make.seed, split=make.split, cfg=cfg["sequences"],
                              world_cfg=cfg["world"]))
    else:
        print(write_world(args.out_dir, make.num_images, make.seed, split=make.split, cfg=cfg["world"]))
    return 0
