"""`maskclip-ros bench-tracking`: what tracking + 3D add to a frame, with and without the stage side by side in
one run (maskclip_ros.bench.tracking). Random-init weights of any open_clip ViT in `tokens` mode, M synthetic
proposals on a 640x480 frame with a synthetic depth image; model and tracking settings from
config/default.yaml (+ --params-file, --set); defaults in config/commands.yaml (section bench_tracking).
"""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    from maskclip_ros.commands import add_config_arguments, set_defaults

    p.add_argument("--model", help="open_clip model name (random init)")
    p.add_argument("--masks", type=int, help="proposal count M")
    p.add_argument("--width", type=int, help="frame width in pixels")
    p.add_argument("--height", type=int, help="frame height in pixels")
    p.add_argument("--short-side", type=int, default=0, help="CLIP input short side (0 = the params')")
    p.add_argument("--repeats", type=int, help="timed runs of each variant, interleaved (medians reported)")
    p.add_argument("--threads", type=int, help="torch CPU threads (0 = all of the machine's)")
    p.add_argument("--device", help="cpu, cuda or cuda:N")
    p.add_argument("--seed", type=int, help="seeds the frame, the proposals and the random weights")
    p.add_argument("--target-overhead", type=float, help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help="write the results as JSON here")
    add_config_arguments(p)
    set_defaults(p, "bench_tracking")


def run(args: argparse.Namespace) -> int:
    from maskclip_ros.bench import write_json
    from maskclip_ros.bench.model import ModelBench
    from maskclip_ros.bench.tracking import bench_tracking, report

    opts = ModelBench(model=args.model, masks=(args.masks,), width=args.width, height=args.height,
                      short_side=args.short_side, repeats=args.repeats, threads=args.threads, device=args.device,
                      seed=args.seed, memory=False, params_files=tuple(args.params_files), sets=tuple(args.sets),
                      targets={})
    results = bench_tracking(opts, target_overhead=args.target_overhead)
    print(report(results))
    if args.out:
        write_json(args.out, results)
    return 0
