"""Every benchmark in one run, one JSON and one plot (`maskclip-ros bench`).

* This CPU's fp32 matmul peak (square torch.matmul, best of several) and, per CLIP model, the plain ViT
  forward at 640x480 as a share of that peak (FLOPs counted from the model's shape, see ``vit_flops``).
* Latency of the three MaskCLIP modes against the number of masks (`maskclip-ros bench-model`, per model).
* Latency of `tokens` mode against the input size (short side), same frame content.
* Proposal backends (`maskclip-ros bench-proposals`) and the node's end-to-end overhead
  (`maskclip-ros bench-node`).
Sub-benchmarks run as their own commands (fresh processes), so each is measured as a user would run it.
Random-init weights: speed does not depend on them. Machine load is recorded; the ratios inside each
sub-benchmark are measured side by side in one run.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from maskclip_ros.bench import write_json

MATMUL_SIDE = 2048  # n of the n x n x n matmul that measures this CPU's peak
MATMUL_REPEATS = 5


@dataclass(frozen=True)
class Suite:
    """What `maskclip-ros bench` runs (its options; defaults in config/commands.yaml)."""
    models: tuple[str, ...]   # open_clip ViT names (random init)
    masks: tuple[int, ...]    # proposal counts M
    sizes: tuple[int, ...]    # input short sides of the latency-vs-size curve
    size_masks: int           # masks per frame of that curve
    repeats: int              # timed runs per point
    skip: tuple[str, ...]     # parts left out: model, size, proposals, node
    out: Path                 # output directory


def run_suite(suite: Suite) -> dict:
    """Run the parts; write <out>/bench.json and <out>/bench.png; returns the results."""
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    suite.out.mkdir(parents=True, exist_ok=True)
    results: dict = {"machine": {"cpus": os.cpu_count(), "threads": torch.get_num_threads(),
                                 "load_average_start": list(os.getloadavg())}}
    results["matmul_peak_gflops"] = matmul_peak_gflops()
    results["models"] = {}
    for name in suite.models:
        entry = results["models"][name] = {"vit_forward": vit_forward(name, results["matmul_peak_gflops"])}
        if "model" not in suite.skip:
            entry["modes"] = _subcommand(["bench-model", "--model", name, "--masks", *map(str, suite.masks),
                                          "--repeats", str(suite.repeats)], suite.out / f"model_{name}.json")
        if "size" not in suite.skip:
            entry["tokens_vs_size"] = latency_vs_size(name, suite.sizes, suite.size_masks, suite.repeats)
    if "proposals" not in suite.skip:
        results["proposals"] = _subcommand(["bench-proposals"], suite.out / "proposals.json")
    if "node" not in suite.skip:
        results["node"] = _subcommand(["bench-node"], suite.out / "node.json")
    results["machine"]["load_average_end"] = list(os.getloadavg())
    write_json(suite.out / "bench.json", results)
    plot(results, suite.out / "bench.png")
    return results


# ----------------------------------------------------------------------------------------- measurements
def matmul_peak_gflops(n: int = MATMUL_SIDE, repeats: int = MATMUL_REPEATS) -> float:
    """Best fp32 GFLOP/s of an n x n x n torch.matmul on this CPU with all threads (2 n^3 FLOPs each)."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.matmul(a, b)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def vit_flops(tokens: int, width: int, depth: int, mlp_hidden: int, patch: int) -> float:
    """FLOPs (2 per multiply-add) of one ViT forward over ``tokens`` tokens: per block the q/k/v/out
    projections (4 T D^2), the MLP (2 T D H), the attention scores and weighted sum (2 T^2 D); plus the patch
    embedding (T * 3 p^2 D). Layer norms, softmax and GELU are left out (memory-bound, few FLOPs)."""
    per_block = 4 * tokens * width**2 + 2 * tokens * width * mlp_hidden + 2 * tokens**2 * width
    return 2.0 * (depth * per_block + tokens * 3 * patch**2 * width)


def _tower(name: str, short_side: int):
    """A random-init CLIP tower ``name`` on the CPU (seeded) at ``short_side`` (0 = the params')."""
    import torch

    from maskclip_ros.model.factory import build_clip

    torch.manual_seed(0)
    return build_clip(_model_config(name, short_side).clip, "cpu")


def _model_config(name: str, short_side: int):
    from maskclip_ros.pipeline import load_segmenter_config

    sets = [f"clip.model_name={name}", "clip.pretrained=", "clip.checkpoint=", "clip.random_init=true",
            "maskclip.mode=tokens"] + ([f"clip.short_side={short_side}"] if short_side else [])
    return load_segmenter_config(overrides=sets)


def vit_forward(name: str, peak_gflops: float, frame=(480, 640), repeats: int = 3) -> dict:
    """Plain ViT forward (class-token embedding, no masks) on a 640x480 frame at the model's default
    short side: seconds (best of `repeats`), GFLOPs, GFLOP/s and the share of the matmul peak."""
    import numpy as np
    import torch

    tower = _tower(name, 0)
    image = np.random.default_rng(0).integers(0, 256, (*frame, 3), dtype=np.uint8)
    pixels, geometry = tower.preprocess(image)
    visual = tower.visual
    mlp_hidden = visual.transformer.resblocks[0].mlp.c_fc.out_features
    flops = vit_flops(1 + geometry.num_patches, tower.width, tower.depth, mlp_hidden, tower.patch_size)
    with torch.inference_mode():
        tower.encode_images(pixels)  # warm-up (positional embedding cache)
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            tower.encode_images(pixels)
            best = min(best, time.perf_counter() - start)
    achieved = flops / best / 1e9
    return {"input_size": list(geometry.input_size), "tokens": 1 + geometry.num_patches, "seconds": best,
            "gflops": flops / 1e9, "achieved_gflops_per_s": achieved, "share_of_matmul_peak": achieved / peak_gflops}


def latency_vs_size(name: str, sizes: list[int], masks: int, repeats: int) -> dict:
    """tokens-mode seconds per 4:3 frame at each short side (frame resized to the input, `masks` masks)."""
    import statistics

    import torch

    from maskclip_ros.bench.model import ellipse_masks, synthetic_frame, time_forward
    from maskclip_ros.model.factory import build_maskclip

    out = {}
    for side in sizes:
        tower = _tower(name, side)
        model = build_maskclip(_model_config(name, side).maskclip, tower).eval()
        h, w = side, side * 4 // 3
        image, mask_stack = synthetic_frame(h, w, seed=0), ellipse_masks(masks, h, w, seed=0)
        time_forward(model, image, mask_stack)  # warm-up
        out[str(side)] = statistics.median(time_forward(model, image, mask_stack) for _ in range(repeats))
        del model, tower
        torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return out


def _subcommand(argv: list[str], json_path: Path) -> dict:
    """Run `maskclip-ros <argv> --out json_path` in a fresh process; its JSON, or the error."""
    cmd = [sys.executable, "-m", "maskclip_ros.cli", *argv, "--out", str(json_path)]
    print("[bench] " + " ".join(cmd[2:]), flush=True)
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0 or not json_path.exists():
        return {"error": f"exit {done.returncode}: {done.stderr.strip()[-2000:]}"}
    return json.loads(json_path.read_text())


# -------------------------------------------------------------------------------------------- reporting
def plot(results: dict, path: Path) -> None:
    """Latency vs number of masks (per model and mode) and tokens latency vs input short side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, entry in results["models"].items():
        for mode, per_m in entry.get("modes", {}).get("latency_s", {}).items():
            counts = sorted(per_m, key=int)
            left.plot([int(m) for m in counts], [per_m[m] for m in counts], marker="o", label=f"{name} {mode}")
        sizes = entry.get("tokens_vs_size", {})
        if sizes:
            right.plot([int(s) for s in sizes], list(sizes.values()), marker="o", label=f"{name} tokens")
    left.set(xlabel="mask proposals M", ylabel="seconds per 640x480 frame (CPU)", yscale="log",
             title="MaskCLIP modes vs number of masks")
    right.set(xlabel="input short side (px, 4:3)", ylabel="seconds per frame (CPU)",
              title="tokens mode vs input size")
    for axis in (left, right):
        axis.grid(True, alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def report(results: dict) -> str:
    """A markdown summary of the headline figures."""
    lines = [f"fp32 matmul peak: {results['matmul_peak_gflops']:.1f} GFLOP/s", "",
             "| model | ViT forward 640x480 (s) | share of matmul peak | crop / tokens @M=max | rma / tokens @M=max |",
             "|---|---|---|---|---|"]
    for name, entry in results["models"].items():
        vit = entry["vit_forward"]
        summary = entry.get("modes", {}).get("summary", {})
        crop = summary.get("crop_over_tokens", {})
        rma = summary.get("rma_over_tokens", {})
        top = max(crop, key=int) if crop else None
        lines.append(f"| {name} | {vit['seconds']:.2f} | {100 * vit['share_of_matmul_peak']:.0f}% | "
                     f"{crop[top]:.1f}x | {rma[top]:.2f}x |" if top else
                     f"| {name} | {vit['seconds']:.2f} | {100 * vit['share_of_matmul_peak']:.0f}% | n/a | n/a |")
    return "\n".join(lines)
