"""Command faces of the library (argparse only; the work happens in the library modules they call).

Each module has ``add_arguments(parser)`` and ``run(args) -> int`` and is listed in ``maskclip_ros.cli``.
The helpers here give every command the same options: ``--params-file`` (node params files over
config/default.yaml), ``--config`` (a side file over its shipped one) and ``--set KEY=VALUE`` (dotted
overrides of any of them), and take option defaults from config/commands.yaml.
"""
from __future__ import annotations

import argparse
import functools
from typing import Any

from maskclip_ros import config

COMMANDS_FILE = "commands.yaml"


@functools.lru_cache(maxsize=1)
def _command_sections() -> dict[str, Any]:
    return config.read_yaml(config.shipped_config(COMMANDS_FILE))


def set_defaults(parser: argparse.ArgumentParser, section: str) -> None:
    """Option defaults of ``parser`` from ``section`` of config/commands.yaml; every key must be an
    option of the command (a typo is an error)."""
    values = _command_sections()[section]
    dests = {action.dest for action in parser._actions}
    unknown = sorted(set(values) - dests)
    if unknown:
        raise config.ConfigError(f"config/{COMMANDS_FILE} section {section!r} has keys {unknown} that are not "
                                 f"options of the command")
    parser.set_defaults(**values)


def add_config_arguments(parser: argparse.ArgumentParser, side: str | None = None) -> None:
    """``--params-file`` (repeatable), ``--config`` (when the command has a side file) and ``--set``."""
    parser.add_argument("--params-file", dest="params_files", action="append", default=[], metavar="FILE",
                        help="ROS 2 params file over config/default.yaml (repeatable; later files win)")
    if side:
        parser.add_argument("--config", dest="side_files", action="append", default=[], metavar="FILE",
                            help=f"settings file over config/{side} (repeatable)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="override one setting by its dotted name, e.g. maskclip.mode=rma or "
                             "train.steps=100 (repeatable; values are YAML)")


def add_progress_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_dataset_arguments(parser: argparse.ArgumentParser, split: str) -> None:
    """--data/--layout/--split: a COCO-panoptic-format dataset."""
    parser.add_argument("--data", required=True, help="dataset root (world, COCO or ADE20K panoptic layout)")
    parser.add_argument("--layout", default="world", choices=("world", "coco", "ade20k"),
                        help="directory layout of --data (default: world)")
    parser.add_argument("--split", default=split, help=f"dataset split (default: {split})")


def add_model_bench_arguments(parser: argparse.ArgumentParser) -> None:
    """The synthetic-frame options of the model benchmarks (bench-model, bench-tracking): model, frame size,
    CLIP input size, repeats, threads, device, seed."""
    parser.add_argument("--model", help="open_clip model name (random init)")
    parser.add_argument("--width", type=int, help="frame width in pixels")
    parser.add_argument("--height", type=int, help="frame height in pixels")
    parser.add_argument("--short-side", type=int, default=0, help="CLIP input short side (0 = the params')")
    parser.add_argument("--repeats", type=int, help="timed runs per variant (medians reported)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (0 = all of the machine's)")
    parser.add_argument("--device", help="cpu, cuda or cuda:N")
    parser.add_argument("--seed", type=int, help="seeds the frame, the proposals and the random weights")


def model_bench_options(args: argparse.Namespace, *, masks: tuple[int, ...], memory: bool, targets: dict):
    """The bench.model.ModelBench of parsed add_model_bench_arguments + add_config_arguments options."""
    from maskclip_ros.bench.model import ModelBench
    return ModelBench(model=args.model, masks=masks, width=args.width, height=args.height,
                      short_side=args.short_side, repeats=args.repeats, threads=args.threads, device=args.device,
                      seed=args.seed, memory=memory, params_files=tuple(args.params_files), sets=tuple(args.sets),
                      targets=targets)
