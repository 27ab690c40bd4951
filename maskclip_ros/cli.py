"""The `maskclip-ros` command. Each subcommand lives in its own module, which exposes
``register(subparsers)``: it adds its parser and sets ``func`` (called with the parsed args, returns an
exit code). Modules are imported lazily so `maskclip-ros --help` stays fast and torch-free commands never
import torch."""
from __future__ import annotations

import argparse
import importlib
import sys

# Modules that register subcommands, in help order. Each must define register(subparsers).
SUBCOMMAND_MODULES = (
    "maskclip_ros.demo",
    "maskclip_ros.bench",
    "maskclip_ros.ros.reference",
    "maskclip_ros.bench_model",
    "maskclip_ros.clip_training",
    "maskclip_ros.ros.commands.node",
    "maskclip_ros.ros.commands.set_vocabulary",
    "maskclip_ros.ros.commands.replay",
    "maskclip_ros.ros.commands.record",
    "maskclip_ros.ros.commands.bench_node",
    "maskclip_ros.training.cli",
    "maskclip_ros.evaluation.cli",
    "maskclip_ros.train_proposals",
    "maskclip_ros.bench_proposals",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="maskclip-ros",
        description="Open-vocabulary panoptic segmentation (MaskCLIP) for ROS 2.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in SUBCOMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
