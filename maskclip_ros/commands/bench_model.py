"""`maskclip-ros bench-model`: per-image latency of the crop / tokens / rma modes side by side in one run,
with peak memory (maskclip_ros.bench.model). Random-init weights of any open_clip ViT (speed does not depend
on them); model settings from config/default.yaml (+ --params-file, --set); defaults in config/commands.yaml.
"""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    from maskclip_ros.commands import add_config_arguments, add_model_bench_arguments, set_defaults

    add_model_bench_arguments(p)
    p.add_argument("--masks", type=int, nargs="+", help="proposal counts M")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    for name in ("crop_over_tokens", "pct_per_10_masks", "rma_over_tokens"):
        p.add_argument(f"--target-{name.replace('_', '-')}", dest=f"target_{name}", type=float,
                       help=argparse.SUPPRESS)
    add_config_arguments(p)
    set_defaults(p, "bench_model")


def run(args: argparse.Namespace) -> int:
    from maskclip_ros.bench import write_json
    from maskclip_ros.bench.model import bench_model, report
    from maskclip_ros.commands import model_bench_options

    targets = {k[len("target_"):]: v for k, v in vars(args).items() if k.startswith("target_")}
    results = bench_model(model_bench_options(args, masks=tuple(args.masks), memory=not args.no_memory,
                                              targets=targets))
    print(report(results))
    if args.out:
        write_json(args.out, results)
    return 0
