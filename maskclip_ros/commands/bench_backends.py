"""`maskclip-ros bench-backends`: torch / OpenVINO / ONNX Runtime x fp32 / bf16 x tokens / rma x M side by side in
one run (maskclip_ros.bench.backends): medians of interleaved repeats, speed-ups against torch fp32, export and
compile times, peak memory, GFLOP/s against this CPU's fp32 FMA limit and the best GEMM of each library; the
accuracy of bf16 on the small CLIP over held-out scenes (maskclip_ros.bench.precision); whole frames of the
demo's configuration per backend (maskclip_ros.bench.frames). Writes JSON (--out) and a PNG beside it.

Model settings from config/default.yaml (+ --params-file, --set); defaults in config/commands.yaml section
``bench_backends``; --quick runs the quick_* variant (one model, M = 100, two repeats, no memory probes, no
accuracy, no frames).
"""
from __future__ import annotations

import argparse

TARGETS = ("model", "exported_speedup", "parity", "bf16_speedup", "gemm_share", "agreement")
QUICK = ("models", "masks", "repeats", "memory", "accuracy", "frames")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from maskclip_ros.commands import add_config_arguments, set_defaults

    p.add_argument("--quick", action="store_true", help="the quick_* settings instead (finishes within 3 minutes)")
    p.add_argument("--models", nargs="+", help="open_clip model names")
    p.add_argument("--clip-checkpoints", nargs="*", metavar="MODEL=FILE",
                   help="CLIP weights per model (others: random)")
    p.add_argument("--rma-checkpoints", nargs="*", metavar="MODEL=FILE",
                   help="RMA weights per model (others: untrained)")
    p.add_argument("--backends", nargs="+", help="torch, openvino, onnxruntime (those installed run)")
    p.add_argument("--modes", nargs="+", choices=("tokens", "rma"), help="MaskCLIP modes")
    p.add_argument("--masks", type=int, nargs="+", help="proposal counts M")
    p.add_argument("--width", type=int, help="frame width in pixels")
    p.add_argument("--height", type=int, help="frame height in pixels")
    p.add_argument("--short-side", type=int, help="CLIP input short side (0 = the params')")
    p.add_argument("--repeats", type=int, help="timed rounds (medians reported)")
    p.add_argument("--threads", type=int, help="CPU threads (0 = all this process may use)")
    p.add_argument("--seed", type=int, help="seeds the frame, the proposals and random weights")
    p.add_argument("--memory", action=argparse.BooleanOptionalAction, help="peak memory per backend (subprocesses)")
    p.add_argument("--gemm-side", type=int, help="n of the n^3 GEMMs")
    p.add_argument("--gemm-repeats", type=int, help="GEMM runs per library (best reported)")
    p.add_argument("--export-cache", help="export cache ('' = a fresh temporary one, so first builds really export)")
    p.add_argument("--accuracy", action=argparse.BooleanOptionalAction, help="bf16 accuracy on held-out scenes")
    p.add_argument("--accuracy-model", help="model of the accuracy report (its checkpoints from the lists above)")
    p.add_argument("--accuracy-scenes", type=int, help="held-out scenes of the accuracy report")
    p.add_argument("--accuracy-seed", type=int, default=None,
                   help="world seed of those scenes (default: eval_clip.seed of config/small_clip.yaml)")
    p.add_argument("--frames", type=int, help="whole frames per backend with --frames-params (0 = none)")
    p.add_argument("--frames-params", help="params file of the whole frames (a shipped config name or a path)")
    p.add_argument("--frames-seed", type=int, default=None, help="world seed of those frames (default: demo.seed)")
    for name in QUICK:
        kind = {"models": dict(nargs="+"), "masks": dict(type=int, nargs="+"),
                "memory": dict(action=argparse.BooleanOptionalAction),
                "accuracy": dict(action=argparse.BooleanOptionalAction)}.get(name, dict(type=int))
        p.add_argument(f"--quick-{name}", dest=f"quick_{name}", help=f"{name} with --quick", **kind)
    p.add_argument("--out", help="JSON results path (a PNG plot is written beside it; '' = none)")
    for name in TARGETS:
        p.add_argument(f"--target-{name.replace('_', '-')}", dest=f"target_{name}",
                       type=str if name == "model" else float, help=argparse.SUPPRESS)
    add_config_arguments(p)
    set_defaults(p, "bench_backends")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from maskclip_ros.bench import write_json
    from maskclip_ros.bench.backends import BackendsBench, available_variants, run_backends
    from maskclip_ros.bench.backends_report import plot, report

    if args.quick:
        for name in QUICK:
            setattr(args, name, getattr(args, f"quick_{name}"))
    targets = {name: getattr(args, f"target_{name}") for name in TARGETS}
    opts = BackendsBench(models=tuple(args.models), clip_checkpoints=_pairs(args.clip_checkpoints),
                         rma_checkpoints=_pairs(args.rma_checkpoints), backends=tuple(args.backends),
                         modes=tuple(args.modes), masks=tuple(sorted(args.masks)), width=args.width,
                         height=args.height, short_side=args.short_side, repeats=args.repeats, threads=args.threads,
                         seed=args.seed, memory=args.memory, gemm_side=args.gemm_side,
                         gemm_repeats=args.gemm_repeats, export_cache=args.export_cache,
                         params_files=tuple(args.params_files), sets=tuple(args.sets), targets=targets)
    results = run_backends(opts)
    variants = tuple(available_variants(opts.backends)[0])
    if args.accuracy:
        from maskclip_ros.bench.precision import agreement_target

        results["accuracy"] = _accuracy(args, opts, variants)
        name, met = agreement_target(results["accuracy"], targets["agreement"])
        results["summary"]["targets"][name] = met
    if args.frames:
        results["frames"] = _frames(args, opts, variants)
    print(report(results))
    if args.out:
        write_json(Path(args.out), results)
        plot(results, Path(args.out).with_suffix(".png"))
    return 0


def _pairs(items) -> dict[str, str]:
    """["MODEL=FILE", ...] -> {MODEL: FILE}."""
    out = {}
    for item in items or ():
        model, sep, path = item.partition("=")
        if not sep or not model:
            raise SystemExit(f"expected MODEL=FILE, got {item!r}")
        out[model] = path
    return out


def _accuracy(args, opts, variants) -> dict:
    import os

    from maskclip_ros import config
    from maskclip_ros.bench.precision import AccuracyBench, bf16_accuracy
    from maskclip_ros.small_clip.config import CONFIG_FILE, EvalClipConfig

    seed = args.accuracy_seed
    if seed is None:
        seed = config.load_one(EvalClipConfig, CONFIG_FILE, section="eval_clip").seed
    model = args.accuracy_model
    return bf16_accuracy(AccuracyBench(
        model=model, clip_checkpoint=opts.clip_checkpoints.get(model, ""),
        rma_checkpoint=opts.rma_checkpoints.get(model, ""), modes=opts.modes, variants=variants,
        scenes=args.accuracy_scenes, seed=seed, short_side=opts.short_side,
        threads=opts.threads or len(os.sched_getaffinity(0)), export_cache=opts.export_cache,
        params_files=opts.params_files, sets=opts.sets))


def _frames(args, opts, variants) -> dict:
    import os

    from maskclip_ros import config
    from maskclip_ros.bench.frames import FramesBench, frame_bench
    from maskclip_ros.commands import COMMANDS_FILE

    seed = args.frames_seed
    if seed is None:
        seed = config.read_yaml(config.shipped_config(COMMANDS_FILE))["demo"]["seed"]
    return frame_bench(FramesBench(params=args.frames_params, variants=variants, frames=args.frames, seed=seed,
                                   threads=opts.threads or len(os.sched_getaffinity(0)),
                                   export_cache=opts.export_cache, sets=opts.sets))
