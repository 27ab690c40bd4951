"""`maskclip-ros bench-tracking`: what tracking + 3D add to a frame, with and without the stage side by side in
one run (maskclip_ros.bench.tracking). Random-init weights of any open_clip ViT in `tokens` mode, M synthetic
proposals on a 640x480 frame with a synthetic depth image; model and tracking settings from
config/default.yaml (+ --params-file, --set); defaults in config/commands.yaml (section bench_tracking).
"""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    from maskclip_ros.commands import add_config_arguments, add_model_bench_arguments, set_defaults

    add_model_bench_arguments(p)
    p.add_argument("--masks", type=int, help="proposal count M")
    p.add_argument("--target-overhead", type=float, help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help="write the results as JSON here")
    add_config_arguments(p)
    set_defaults(p, "bench_tracking")


def run(args: argparse.Namespace) -> int:
    from maskclip_ros.bench import write_json
    from maskclip_ros.bench.tracking import bench_tracking, report
    from maskclip_ros.commands import model_bench_options

    results = bench_tracking(model_bench_options(args, masks=(args.masks,), memory=False, targets={}),
                             target_overhead=args.target_overhead)
    print(report(results))
    if args.out:
        write_json(args.out, results)
    return 0
