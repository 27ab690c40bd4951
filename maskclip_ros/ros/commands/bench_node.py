"""`maskclip-ros bench-node`: end-to-end node latency vs model-only time on the same frames (JSON out)."""
from __future__ import annotations


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "bench-node", help="benchmark: node overhead (publish -> outputs) over the model's own time",
        description="Time Segmenter.segment alone and through the node (its own process) on the same "
                    "generated frames, one frame in flight; print and write the ratio as JSON.")
    parser.add_argument("--params-file", default=None, help="params file (default: config/default.yaml)")
    parser.add_argument("--frames", type=int, default=20, help="timed frames (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed frames first (default 3)")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--out", default="out/bench_node.json", help="JSON report path")
    parser.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from maskclip_ros.ros.bench import bench

    report = bench(args.params_file, args.frames, args.warmup, args.width, args.height, Path(args.out))
    model, node = report["model_ms"], report["end_to_end_ms"]
    print(f"model only   median {model['median']:.1f} ms  mean {model['mean']:.1f} ms")
    print(f"end to end   median {node['median']:.1f} ms  mean {node['mean']:.1f} ms")
    print(f"node overhead {report['overhead_ms_median']:.1f} ms = {100 * report['overhead_ratio_median']:.1f}% "
          f"of the model time (medians); paired per frame {100 * report['overhead_ratio_paired_median']:.1f}%")
    print(f"node's own inference mean {report['node_inference_mean_ms']:.1f} ms, end to end "
          f"{report['end_to_end_mean_all_frames_ms']:.1f} ms: overhead "
          f"{100 * report['overhead_vs_node_inference_ratio']:.1f}% (target <= 5%); written to {args.out}")
    return 0
