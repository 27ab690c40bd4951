"""`maskclip-ros bench-node`: what the node costs on top of the model. Times Segmenter.segment alone and
through the node (its own process) on the same generated frames, interleaved, one frame in flight; prints
the ratio and writes JSON (maskclip_ros.ros.bench_node). Defaults: config/commands.yaml (bench_node)."""
from __future__ import annotations


def add_arguments(parser) -> None:
    from maskclip_ros.commands import set_defaults

    parser.add_argument("--params-file", dest="params_files", action="append", default=[], metavar="FILE",
                        help="node params file over config/default.yaml (repeatable)")
    parser.add_argument("--frames", type=int, help="timed frames")
    parser.add_argument("--warmup", type=int, help="untimed frames first")
    parser.add_argument("--width", type=int, help="frame width")
    parser.add_argument("--height", type=int, help="frame height")
    parser.add_argument("--seed", type=int, help="world seed of the frames")
    parser.add_argument("--timeout", type=float, help="seconds to wait for the node and each frame's outputs")
    parser.add_argument("--target-overhead", type=float, help="target: at most this fraction over the model")
    parser.add_argument("--out", help="JSON report path")
    set_defaults(parser, "bench_node")


def run(args) -> int:
    from pathlib import Path

    from maskclip_ros.ros.bench_node import NodeBench, bench

    report = bench(NodeBench(params_files=tuple(args.params_files), frames=args.frames, warmup=args.warmup,
                             width=args.width, height=args.height, seed=args.seed, timeout=args.timeout,
                             target_overhead=args.target_overhead, out=Path(args.out)))
    model, node = report["model_ms"], report["end_to_end_ms"]
    print(f"model only   median {model['median']:.1f} ms  mean {model['mean']:.1f} ms")
    print(f"end to end   median {node['median']:.1f} ms  mean {node['mean']:.1f} ms")
    print(f"node overhead {report['overhead_ms_median']:.1f} ms = {100 * report['overhead_ratio_median']:.1f}% "
          f"of the model time (medians); paired per frame {100 * report['overhead_ratio_paired_median']:.1f}%")
    print(f"node's own inference mean {report['node_inference_mean_ms']:.1f} ms, end to end "
          f"{report['end_to_end_mean_all_frames_ms']:.1f} ms: overhead "
          f"{100 * report['overhead_vs_node_inference_ratio']:.1f}% (target <= "
          f"{100 * report['target_overhead_ratio']:.0f}%); written to {args.out}")
    return 0
