"""`maskclip-ros bench-model`: per-image latency of the three MaskCLIP modes, side by side in one run.

ViT-B-16 (random init: latency does not depend on the weights) on a synthetic 640x480 frame with M = 10,
50, 100 seeded elliptical proposals; CPU with all of the machine's threads unless told otherwise. For each
repeat the modes run one after another on the same inputs, so the ratios compare like with like even
when other processes load the machine (the load average is recorded). Peak memory is the growth of the
process's peak resident set size during one forward pass (the kernel's peak mark is reset right before
it), measured in a fresh subprocess per mode after the model and inputs are built; tracemalloc cannot see
torch's allocations.

Targets (issue 3): tokens >= 10x faster than crop at M = 100; each extra 10 masks <= 2.5% of a frame;
rma <= 1.3x tokens at M = 100.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from maskclip_ros.procutil import write_json

MODES = ("crop", "tokens", "rma")


def register(subparsers) -> None:
    """Add the `bench-model` subcommand."""
    p = subparsers.add_parser("bench-model", help="latency of crop / tokens / rma modes (ViT-B-16, CPU)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="ViT-B-16", help="open_clip model name (random init)")
    p.add_argument("--masks", type=int, nargs="+", default=[10, 50, 100], help="proposal counts M")
    p.add_argument("--width", type=int, default=640, help="frame width in pixels")
    p.add_argument("--height", type=int, default=480, help="frame height in pixels")
    p.add_argument("--short-side", type=int, default=None, help="CLIP input short side (default: params file)")
    p.add_argument("--repeats", type=int, default=2,
                   help="timed runs per mode and M (medians and fastest runs reported)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = all of the machine's)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--params", type=Path, default=None, help="params file (default: config/default.yaml)")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    p.add_argument("--memory-probe", choices=MODES, default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Entry point of the subcommand (also the memory-probe subprocess)."""
    import torch

    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    if args.memory_probe:
        print(json.dumps(_memory_probe(args)))
        return 0
    load_before = os.getloadavg()
    models = _build_models(args)
    image = _frame(args.height, args.width)
    samples = _time_modes(models, image, args)
    latency = {mode: {m: statistics.median(ts) for m, ts in per_m.items()} for mode, per_m in samples.items()}
    fastest = {mode: {m: min(ts) for m, ts in per_m.items()} for mode, per_m in samples.items()}
    results = {
        "model": args.model, "frame": [args.height, args.width], "device": args.device,
        "input_size": list(models["tokens"].tower.geometry((args.height, args.width)).input_size),
        "rma_layers_1based": [i + 1 for i in models["rma"].rma.config.block_indices],
        "threads": threads, "repeats": args.repeats, "machine": _machine(load_before),
        "latency_s": {mode: {str(m): t for m, t in per_m.items()} for mode, per_m in latency.items()},
        "samples_s": {mode: {str(m): ts for m, ts in per_m.items()} for mode, per_m in samples.items()},
        "summary": _summary(latency, args.masks),
        "summary_fastest_run": _summary(fastest, args.masks),
    }
    del models
    if not args.no_memory:
        results["peak_memory_mb"] = {mode: _memory_subprocess(args, mode, max(args.masks)) for mode in MODES}
    results["machine"]["load_average_end"] = list(os.getloadavg())
    _print(results)
    if args.out:
        write_json(args.out, results)
    return 0


def _params(args: argparse.Namespace) -> dict:
    from maskclip_ros.config import deep_update, load_params

    clip = {"model_name": args.model, "pretrained": "", "checkpoint": "", "random_init": True}
    if args.short_side:
        clip["short_side"] = args.short_side
    return deep_update(load_params(args.params), {"clip": clip})


def _build_models(args: argparse.Namespace, modes=MODES) -> dict:
    """One frozen ViT shared by MaskCLIP models in each mode (rma: default layers, untrained)."""
    import torch

    from maskclip_ros.config import deep_update, from_section
    from maskclip_ros.model.factory import ClipConfig, build_clip, build_maskclip

    params = _params(args)
    torch.manual_seed(0)
    tower = build_clip(from_section(ClipConfig, params["clip"], "clip"), args.device)
    return {mode: build_maskclip(deep_update(params, {"maskclip": {"mode": mode, "rma_checkpoint": "",
                                                                   "rma_layers": ""}}),
                                 args.device, tower=tower).eval()
            for mode in modes}


def _frame(height: int, width: int) -> np.ndarray:
    """A seeded smooth-noise RGB frame (H, W, 3) uint8."""
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 256, size=(height // 16 + 1, width // 16 + 1, 3)).astype(np.float32)
    return np.kron(coarse, np.ones((16, 16, 1)))[:height, :width].astype(np.uint8)


def proposals(count: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """(count, H, W) float32 elliptical masks of varied size (1% to 30% of the frame), seeded."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width].astype(np.float32)
    masks = np.empty((count, height, width), np.float32)
    for i in range(count):
        area = rng.uniform(0.01, 0.3) * height * width
        aspect = rng.uniform(0.5, 2.0)
        ry, rx = np.sqrt(area / np.pi / aspect), np.sqrt(area / np.pi * aspect)
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        masks[i] = (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0)
    return masks


def _forward(model, image: np.ndarray, masks: np.ndarray) -> float:
    """Seconds for one forward pass (CUDA synchronised)."""
    import torch

    sync = torch.cuda.synchronize if model.tower.device.type == "cuda" else (lambda: None)
    with torch.inference_mode():
        sync()
        start = time.perf_counter()
        model(image, masks)
        sync()
    return time.perf_counter() - start


def _time_modes(models: dict, image: np.ndarray, args: argparse.Namespace) -> dict[str, dict[int, list[float]]]:
    """mode -> M -> seconds of every repeat; modes interleaved within each repeat."""
    from tqdm import tqdm

    h, w = image.shape[:2]
    masks = {m: proposals(m, h, w) for m in args.masks}
    for mode in MODES:  # warm-up: lazy kernel init, positional-embedding cache
        _forward(models[mode], image, masks[min(args.masks)])
    times: dict[str, dict[int, list[float]]] = {mode: {m: [] for m in args.masks} for mode in MODES}
    steps = [(r, m, mode) for r in range(args.repeats) for m in args.masks for mode in MODES]
    for _, m, mode in tqdm(steps, desc="bench-model", unit="run"):
        times[mode][m].append(_forward(models[mode], image, masks[m]))
    return times


def _summary(latency: dict, counts: list[int]) -> dict:
    """Ratios and per-10-masks costs from mode -> M -> seconds, and whether the targets are met."""
    lo, hi = min(counts), max(counts)
    tokens, rma, crop = latency["tokens"], latency["rma"], latency["crop"]

    def per_10(times: dict) -> float:  # extra time per 10 masks as % of the frame time at the fewest masks
        return 100.0 * (times[hi] - times[lo]) / ((hi - lo) / 10.0) / times[lo] if hi > lo else 0.0

    summary = {
        "crop_over_tokens": {str(m): crop[m] / tokens[m] for m in counts},
        "rma_over_tokens": {str(m): rma[m] / tokens[m] for m in counts},
        "tokens_pct_per_10_masks": per_10(tokens),
        "rma_pct_per_10_masks": per_10(rma),
    }
    summary["targets"] = {
        f"tokens >= 10x faster than crop at M={hi}": summary["crop_over_tokens"][str(hi)] >= 10.0,
        "each extra 10 masks <= 2.5% of a frame (tokens)": summary["tokens_pct_per_10_masks"] <= 2.5,
        f"rma <= 1.3x tokens at M={hi}": summary["rma_over_tokens"][str(hi)] <= 1.3,
    }
    return summary


def _memory_subprocess(args: argparse.Namespace, mode: str, count: int) -> dict:
    """Run the memory probe of one mode in a fresh interpreter; returns its JSON."""
    cmd = [sys.executable, "-m", "maskclip_ros.cli", "bench-model", "--memory-probe", mode, "--masks", str(count),
           "--model", args.model, "--width", str(args.width), "--height", str(args.height),
           "--threads", str(args.threads), "--device", args.device]
    if args.short_side:
        cmd += ["--short-side", str(args.short_side)]
    if args.params:
        cmd += ["--params", str(args.params)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _memory_probe(args: argparse.Namespace) -> dict:
    """In this process: build, then one forward pass of ``args.memory_probe``; peak RSS growth in MB.

    The kernel's peak-RSS mark (VmHWM) is reset right before the pass (``/proc/self/clear_refs``), so
    earlier peaks (model construction) do not hide the pass's own; without that, ``ru_maxrss`` growth."""
    models = _build_models(args, modes=(args.memory_probe,))
    image = _frame(args.height, args.width)
    masks = proposals(max(args.masks), args.height, args.width)
    before = _status_mb("VmRSS")
    reset = _reset_peak_rss()
    max_before = _status_mb("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    seconds = _forward(models[args.memory_probe], image, masks)
    peak = _status_mb("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return {"masks": max(args.masks), "rss_before_mb": before, "peak_rss_mb": peak,
            "forward_growth_mb": peak - (before if reset else max_before), "seconds": seconds,
            "method": "VmHWM reset via /proc/self/clear_refs" if reset else "ru_maxrss growth"}


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _status_mb(key: str) -> float:
    """A memory line of /proc/self/status (kB) in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return float(line.split()[1]) / 1024.0
    raise KeyError(key)


def _machine(load_before) -> dict:
    import torch

    return {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "load_average_start": list(load_before)}


def _print(results: dict) -> None:
    lat, summary = results["latency_s"], results["summary"]
    counts = list(lat["tokens"])
    print(f"\n{results['model']} random init, frame {results['frame'][1]}x{results['frame'][0]} -> input "
          f"{results['input_size'][1]}x{results['input_size'][0]}, {results['threads']} threads, "
          f"rma layers {results['rma_layers_1based']}, load avg {results['machine']['load_average_start'][0]:.1f}")
    print(f"{'M':>5} {'crop s':>9} {'tokens s':>9} {'rma s':>9} {'crop/tokens':>12} {'rma/tokens':>11}")
    for m in counts:
        print(f"{m:>5} {lat['crop'][m]:9.3f} {lat['tokens'][m]:9.3f} {lat['rma'][m]:9.3f} "
              f"{summary['crop_over_tokens'][m]:12.1f} {summary['rma_over_tokens'][m]:11.3f}")
    print(f"extra 10 masks: tokens {summary['tokens_pct_per_10_masks']:.2f}% of a frame, "
          f"rma {summary['rma_pct_per_10_masks']:.2f}%")
    fast = results["summary_fastest_run"]
    print("fastest runs instead of medians: crop/tokens "
          + ", ".join(f"M={m} {fast['crop_over_tokens'][m]:.1f}" for m in counts)
          + "; rma/tokens " + ", ".join(f"M={m} {fast['rma_over_tokens'][m]:.3f}" for m in counts))
    for mode, mem in results.get("peak_memory_mb", {}).items():
        print(f"peak memory {mode} (M={mem['masks']}): +{mem['forward_growth_mb']:.0f} MB during the forward "
              f"pass (peak RSS {mem['peak_rss_mb']:.0f} MB)")
    for name, ok in summary["targets"].items():
        print(f"[{'met' if ok else 'MISSED'}] {name}")
