"""`maskclip-ros bench`: every benchmark in one run, one JSON and one plot (maskclip_ros.bench.suite).

* This CPU's fp32 matmul peak and, per CLIP model, the plain ViT forward at 640x480 as a share of it.
* Latency of the three MaskCLIP modes against the number of masks (`maskclip-ros bench-model`, per model).
* Latency of `tokens` mode against the input size (short side), same frame content.
* Proposal backends (`maskclip-ros bench-proposals`) and the node's end-to-end overhead
  (`maskclip-ros bench-node`). Sub-benchmarks run as their own commands (fresh processes).
Defaults in config/commands.yaml (section bench).
"""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    from maskclip_ros.commands import set_defaults

    p.add_argument("--models", nargs="+", help="open_clip ViT names (random init)")
    p.add_argument("--masks", type=int, nargs="+", help="proposal counts M")
    p.add_argument("--sizes", type=int, nargs="+", help="input short sides of the latency-vs-size curve")
    p.add_argument("--size-masks", type=int, help="masks per frame for the latency-vs-size curve")
    p.add_argument("--repeats", type=int, help="timed runs per point (median reported)")
    p.add_argument("--skip", nargs="*", default=[], choices=("model", "size", "proposals", "node"),
                   help="parts to leave out")
    p.add_argument("--out", help="output directory")
    set_defaults(p, "bench")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from maskclip_ros.bench.suite import Suite, report, run_suite

    results = run_suite(Suite(models=tuple(args.models), masks=tuple(args.masks), sizes=tuple(args.sizes),
                              size_masks=args.size_masks, repeats=args.repeats, skip=tuple(args.skip),
                              out=Path(args.out)))
    print(report(results))
    return 0
