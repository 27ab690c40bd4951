"""`maskclip-ros bench-proposals`: ms per 640x480 frame for each proposal backend, side by side in one run,
with the recall of ground-truth segments on the same generated scenes (maskclip_ros.bench.proposals).
Defaults in config/commands.yaml; proposal settings from config/default.yaml (+ --params-file, --set)."""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    from maskclip_ros.bench.proposals import BACKENDS
    from maskclip_ros.commands import add_config_arguments, set_defaults

    p.add_argument("--backends", nargs="+", choices=BACKENDS, help="backends to time")
    p.add_argument("--frames", type=int, help="timed frames per backend (after one warm-up frame)")
    p.add_argument("--seed", type=int, help="world seed of the generated scenes")
    p.add_argument("--threads", type=int, help="torch CPU threads (0 = all of the machine's)")
    p.add_argument("--device", help="device of the mmdet backends (cpu, cuda, cuda:N)")
    p.add_argument("--mask-rcnn-checkpoint", default="", help="trained Mask R-CNN weights (default: random)")
    p.add_argument("--mask2former-checkpoint", default="", help="trained Mask2Former weights (default: random)")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    add_config_arguments(p)
    set_defaults(p, "bench_proposals")


def run(args: argparse.Namespace) -> int:
    from maskclip_ros.bench import write_json
    from maskclip_ros.bench.proposals import ProposalBench, bench_proposals, report

    opts = ProposalBench(backends=tuple(args.backends), frames=args.frames, seed=args.seed, threads=args.threads,
                         device=args.device, checkpoints={"mask-rcnn": args.mask_rcnn_checkpoint,
                                                          "mask2former": args.mask2former_checkpoint},
                         params_files=tuple(args.params_files), sets=tuple(args.sets))
    results = bench_proposals(opts)
    print(report(results))
    if args.out:
        write_json(args.out, results)
    return 0
