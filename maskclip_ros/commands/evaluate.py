"""`maskclip-ros eval`: PQ/SQ/RQ (all, things, stuff, base, novel), mIoU and mask AP of any mode and
proposal source on a COCO-panoptic-format dataset; writes ``results.json`` and ``results.md``.

Settings as for `maskclip-ros train` (the eval section of config/train.yaml). Several configurations side
by side (one table): repeat ``--variant "NAME:KEY=VALUE,KEY=VALUE"``, e.g.
``--variant "tokens/gt:maskclip.mode=tokens,eval.proposals=gt"``; each variant starts from the --set values.
"""
from __future__ import annotations

import argparse

from maskclip_ros.commands import add_config_arguments, add_dataset_arguments, add_progress_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_dataset_arguments(parser, split="val")
    add_config_arguments(parser, side="train.yaml")
    add_progress_argument(parser)
    parser.add_argument("--variant", action="append", default=[], metavar="NAME:KEY=VALUE,...",
                        help="evaluate a named configuration (repeatable); default: one run named 'eval'")
    parser.add_argument("--out", required=True, help="output directory (results.json, results.md)")


def parse_variant(text: str) -> tuple[str, list[str]]:
    """``"name:a=1,b=2"`` -> ``("name", ["a=1", "b=2"])``."""
    name, _, rest = text.partition(":")
    if not name.strip():
        raise ValueError(f"--variant needs a name before ':', got {text!r}")
    return name.strip(), [item for item in rest.split(",") if item.strip()]


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from maskclip_ros.evaluation.runner import evaluate_variants, write_results

    variants = [parse_variant(v) for v in args.variant] or [("eval", [])]
    results = evaluate_variants(args.data, args.split, args.layout, variants, params_files=args.params_files,
                                side_files=args.side_files, sets=args.sets, progress=not args.no_progress)
    write_results(results, Path(args.out))
    return 0
