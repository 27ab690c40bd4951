"""Benchmark of the MaskCLIP modes (`maskclip-ros bench-model`): per-image latency of the three MaskCLIP modes, side by side in one run.

ViT-B-16 (random init: latency does not depend on the weights) on a synthetic 640x480 frame with M = 10,
50, 100 seeded elliptical proposals; CPU with all of the machine's threads unless told otherwise. For each
repeat the modes run one after another on the same inputs, so the ratios compare like with like even
when other processes load the machine (the load average is recorded). Peak memory is the growth of the
process's peak resident set size during one forward pass (the kernel's peak mark is reset right before
it), measured in a fresh subprocess per mode after the model and inputs are built; tracemalloc cannot see
torch's allocations.

Targets (config/commands.yaml, bench_model.target_*): tokens >= 10x faster than crop at M = 100; each
extra 10 masks <= 2.5% of a frame; rma <= 1.3x tokens at M = 100.
"""
from __future__ import annotations

import dataclasses
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from dataclasses import dataclass
from typing import Sequence

import numpy as np

MODES = ("crop", "tokens", "rma")
FRAME_BLOCK = 16  # pixels per side of the synthetic frame's noise blocks
MASK_AREA = (0.01, 0.3)  # area of a synthetic proposal as a fraction of the frame (uniform)
MASK_ASPECT = (0.5, 2.0)  # aspect ratio of a synthetic proposal (uniform)


@dataclass(frozen=True)
class ModelBench:
    """What `maskclip-ros bench-model` measures (its options; defaults in config/commands.yaml)."""
    model: str                       # open_clip model name (random init)
    masks: tuple[int, ...]           # proposal counts M
    width: int                       # frame width
    height: int                      # frame height
    short_side: int                  # CLIP input short side (0 = the params file's clip.short_side)
    repeats: int                     # timed runs per mode and M
    threads: int                     # torch CPU threads (0 = all of the machine's)
    device: str                      # cpu, cuda or cuda:N
    seed: int                        # seeds the frame, the proposals and the random weights
    memory: bool                     # measure peak memory in subprocesses
    params_files: tuple[str, ...]    # node params files over config/default.yaml
    sets: tuple[str, ...]            # dotted overrides of the model settings
    targets: dict                    # target ratios (see config/commands.yaml bench_model.target_*)


def bench_model(opts: ModelBench) -> dict:
    """Time the three modes side by side (and their peak memory); returns the results dict."""
    import torch

    threads = opts.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    load_before = os.getloadavg()
    models = _build_models(opts)
    image = synthetic_frame(opts.height, opts.width, opts.seed)
    samples = _time_modes(models, image, opts)
    latency = {mode: {m: statistics.median(ts) for m, ts in per_m.items()} for mode, per_m in samples.items()}
    fastest = {mode: {m: min(ts) for m, ts in per_m.items()} for mode, per_m in samples.items()}
    results = {
        "model": opts.model, "frame": [opts.height, opts.width], "device": opts.device,
        "input_size": list(models["tokens"].tower.geometry((opts.height, opts.width)).input_size),
        "rma_layers_1based": [i + 1 for i in getattr(models["rma"], "maskclip", models["rma"]).rma.config.block_indices],
        "backend": type(models["tokens"]).__name__,
        "threads": threads, "repeats": opts.repeats, "machine": _machine(load_before),
        "latency_s": {mode: {str(m): t for m, t in per_m.items()} for mode, per_m in latency.items()},
        "samples_s": {mode: {str(m): ts for m, ts in per_m.items()} for mode, per_m in samples.items()},
        "summary": _summary(latency, opts.masks, opts.targets),
        "summary_fastest_run": _summary(fastest, opts.masks, opts.targets),
    }
    del models
    if opts.memory:
        results["peak_memory_mb"] = {mode: _memory_subprocess(opts, mode, max(opts.masks)) for mode in MODES}
    results["machine"]["load_average_end"] = list(os.getloadavg())
    return results


def segmenter_config(opts: ModelBench, **maskclip_changes):
    """The params' model settings with the benchmark's random-init CLIP (and maskclip changes)."""
    from maskclip_ros.pipeline import load_segmenter_config

    sets = [*opts.sets, f"clip.model_name={opts.model}", "clip.pretrained=", "clip.checkpoint=", "clip.random_init=true"]
    sets += [f"clip.short_side={opts.short_side}"] if opts.short_side else []
    sets += [f"maskclip.{k}={v}" for k, v in maskclip_changes.items()]
    return load_segmenter_config(*opts.params_files, overrides=sets)


def _build_models(opts: ModelBench, modes=MODES) -> dict:
    """One frozen ViT shared by MaskCLIP models in each mode (rma: default layers, untrained)."""
    import torch

    from maskclip_ros.model.factory import build_clip, build_maskclip
    from maskclip_ros.pipeline import build_encoder

    torch.manual_seed(opts.seed)
    cfg = segmenter_config(opts, rma_checkpoint="", rma_layers="")
    tower = build_clip(cfg.clip, opts.device)
    models = {}
    for mode in modes:  # maskclip.backend (params file / --set) applies to tokens and rma; crop runs torch
        mode_cfg = dataclasses.replace(cfg, maskclip=dataclasses.replace(cfg.maskclip, mode=mode))
        models[mode] = build_encoder(mode_cfg, build_maskclip(mode_cfg.maskclip, tower).eval())
    return models


def synthetic_frame(height: int, width: int, seed: int) -> np.ndarray:
    """A seeded blocky-noise RGB frame (H, W, 3) uint8 (blocks of FRAME_BLOCK pixels)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(height // FRAME_BLOCK + 1, width // FRAME_BLOCK + 1, 3)).astype(np.float32)
    return np.kron(coarse, np.ones((FRAME_BLOCK, FRAME_BLOCK, 1)))[:height, :width].astype(np.uint8)


def ellipse_masks(count: int, height: int, width: int, seed: int) -> np.ndarray:
    """(count, H, W) float32 elliptical masks of varied size (MASK_AREA of the frame), seeded: stand-in
    proposals whose content does not matter for timing."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width].astype(np.float32)
    masks = np.empty((count, height, width), np.float32)
    for i in range(count):
        area = rng.uniform(*MASK_AREA) * height * width
        aspect = rng.uniform(*MASK_ASPECT)
        ry, rx = np.sqrt(area / np.pi / aspect), np.sqrt(area / np.pi * aspect)
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        masks[i] = (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0)
    return masks


def time_forward(model, image: np.ndarray, masks: np.ndarray) -> float:
    """Seconds for one forward pass (CUDA synchronised)."""
    import torch

    sync = torch.cuda.synchronize if model.tower.device.type == "cuda" else (lambda: None)
    with torch.inference_mode():
        sync()
        start = time.perf_counter()
        model(image, masks)
        sync()
    return time.perf_counter() - start


def _time_modes(models: dict, image: np.ndarray, opts: ModelBench) -> dict[str, dict[int, list[float]]]:
    """mode -> M -> seconds of every repeat; modes interleaved within each repeat."""
    from tqdm import tqdm

    h, w = image.shape[:2]
    masks = {m: ellipse_masks(m, h, w, opts.seed) for m in opts.masks}
    for mode in MODES:  # warm-up: lazy kernel init, positional-embedding cache
        time_forward(models[mode], image, masks[min(opts.masks)])
    times: dict[str, dict[int, list[float]]] = {mode: {m: [] for m in opts.masks} for mode in MODES}
    steps = [(r, m, mode) for r in range(opts.repeats) for m in opts.masks for mode in MODES]
    for _, m, mode in tqdm(steps, desc="bench-model", unit="run"):
        times[mode][m].append(time_forward(models[mode], image, masks[m]))
    return times


def _summary(latency: dict, counts: Sequence[int], targets: dict) -> dict:
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
    crop_x, pct, rma_x = (targets[k] for k in ("crop_over_tokens", "pct_per_10_masks", "rma_over_tokens"))
    summary["targets"] = {
        f"tokens >= {crop_x:g}x faster than crop at M={hi}": summary["crop_over_tokens"][str(hi)] >= crop_x,
        f"each extra 10 masks <= {pct:g}% of a frame (tokens)": summary["tokens_pct_per_10_masks"] <= pct,
        f"rma <= {rma_x:g}x tokens at M={hi}": summary["rma_over_tokens"][str(hi)] <= rma_x,
    }
    return summary


def _memory_subprocess(opts: ModelBench, mode: str, count: int) -> dict:
    """Run ``memory_probe`` of one mode in a fresh interpreter; returns its JSON."""
    probe = dataclasses.replace(opts, masks=(count,), memory=False)
    code = ("import json, sys; from maskclip_ros.bench.model import ModelBench, memory_probe; "
            "print(json.dumps(memory_probe(ModelBench(**json.loads(sys.argv[1])), sys.argv[2])))")
    done = subprocess.run([sys.executable, "-c", code, json.dumps(dataclasses.asdict(probe)), mode],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def memory_probe(opts: ModelBench, mode: str) -> dict:
    """In this process: build, then one forward pass of ``mode``; peak RSS growth in MB.

    The kernel's peak-RSS mark (VmHWM) is reset right before the pass (``/proc/self/clear_refs``), so
    earlier peaks (model construction) do not hide the pass's own; without that, ``ru_maxrss`` growth."""
    import torch

    torch.set_num_threads(opts.threads or os.cpu_count() or 1)
    models = _build_models(opts, modes=(mode,))
    image = synthetic_frame(opts.height, opts.width, opts.seed)
    masks = ellipse_masks(max(opts.masks), opts.height, opts.width, opts.seed)
    before = status_mb("VmRSS")
    reset = reset_peak_rss()
    max_before = status_mb("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    seconds = time_forward(models[mode], image, masks)
    peak = status_mb("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return {"masks": max(opts.masks), "rss_before_mb": before, "peak_rss_mb": peak,
            "forward_growth_mb": peak - (before if reset else max_before), "seconds": seconds,
            "method": "VmHWM reset via /proc/self/clear_refs" if reset else "ru_maxrss growth"}


def reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def status_mb(key: str) -> float:
    """A memory line of /proc/self/status (kB) in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return float(line.split()[1]) / 1024.0
    raise KeyError(key)


def _machine(load_before) -> dict:
    import torch

    return {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "load_average_start": list(load_before)}


def report(results: dict) -> str:
    """A text table of ``bench_model``'s results."""
    lines: list[str] = []
    _print(results, lines.append)
    return "\n".join(lines)


def _print(results: dict, print) -> None:
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
