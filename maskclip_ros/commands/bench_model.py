"""`maskclip-ros bench-model`: per-image latency of the crop / tokens / rma modes side by side in one run,
with peak memory (maskclip_ros.bench.model). Random-init weights of any open_clip ViT (speed does not depend
on them); model settings from config/default.yaml (+ --params-file, --set); defaults in config/commands.yaml.
"""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    from maskclip_ros.commands import add_config_arguments, set_defaults

    p.add_argument("--model", help="open_clip model name (random init)")
    p.add_argument("--masks", type=int, nargs="+", help="proposal counts M")
    p.add_argument("--width", type=int, help="frame width in pixels")
    p.add_argument("--height", type=int, help="frame height in pixels")
    p.add_argument("--short-side", type=int, default=0, help="CLIP input short side (0 = the params')")
    p.add_argument("--repeats", type=int, help="timed runs per mode and M (medians and fastest runs reported)")
    p.add_argument("--threads", type=int, help="torch CPU threads (0 = all of the machine's)")
    p.add_argument("--device", help="cpu, cuda or cuda:N")
    p.add_argument("--seed", type=int, help="seeds the frame, the proposals and the random weights")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    for name in ("crop_over_tokens", "pct_per_10_masks", "rma_over_tokens"):
        p.add_argument(f"--target-{name.replace('_', '-')}", dest=f"target_{name}", type=float,
                       help=argparse.SUPPRESS)
    add_config_arguments(p)
    set_defaults(p, "bench_model")


def run(args: argparse.Namespace) -> int:
    from maskclip_ros.bench import write_json
    from maskclip_ros.bench.model import ModelBench, bench_model, report

    targets = {k[len("target_"):]: v for k, v in vars(args).items() if k.startswith("target_")}
    opts = ModelBench(model=args.model, masks=tuple(args.masks), width=args.width, height=args.height,
                      short_side=args.short_side, repeats=args.repeats, threads=args.threads, device=args.device,
                      seed=args.seed, memory=not args.no_memory, params_files=tuple(args.params_files),
                      sets=tuple(args.sets), targets=targets)
    results = bench_model(opts)
    print(report(results))
    if args.out:
        write_json(args.out, results)
    return 0
