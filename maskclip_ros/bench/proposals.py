"""`maskclip-ros bench-proposals`: ms per 640x480 frame for each proposal backend, side by side in one run,
with the recall of ground-truth segments (things and stuff, IoU >= 0.5) on the same generated-world scenes.

Backends: regions (training-free), external (ground-truth masks through the wrapper: recall 1 by
construction, time = the wrapper's overhead), mask-rcnn and mask2former (mmdet, the shipped class-agnostic
configs; random weights unless a checkpoint is given, so their recall then means nothing: only their time
does). The frames are cycled through the backends in turn (frame 1 through every backend, then frame 2, ...)
so that load from other processes hits all of them alike; the load average is recorded.
"""
from __future__ import annotations

import dataclasses
import os
import platform
import statistics
import time
from dataclasses import dataclass


BACKENDS = ("regions", "external", "mask-rcnn", "mask2former")
MMDET_CONFIGS = {"mask-rcnn": "mask-rcnn_r50_fpn_1x_agnostic.py", "mask2former": "mask2former_r50_agnostic.py"}


@dataclass(frozen=True)
class ProposalBench:
    """What `maskclip-ros bench-proposals` measures (its options; defaults in config/commands.yaml)."""
    backends: tuple[str, ...]     # backends to time (BACKENDS)
    frames: int                   # timed frames per backend (after one warm-up frame)
    seed: int                     # world seed of the generated scenes
    threads: int                  # torch CPU threads (0 = all of the machine's)
    device: str                   # device of the mmdet backends
    checkpoints: dict             # backend name -> trained weights ("" = random)
    params_files: tuple[str, ...]  # node params files over config/default.yaml
    sets: tuple[str, ...]         # dotted overrides


def bench_proposals(opts: ProposalBench) -> dict:
    """Time every backend on the same generated frames, interleaved, and measure recall."""
    import torch

    from maskclip_ros.data.world import generate_scene
    from maskclip_ros.pipeline import load_segmenter_config

    threads = opts.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    cfg = load_segmenter_config(*opts.params_files, overrides=opts.sets).proposals
    load_before = os.getloadavg()
    scenes = [generate_scene(opts.seed, i) for i in range(opts.frames + 1)]  # scene 0: warm-up
    proposers, errors = _build(opts, cfg)
    timings, meters, counts = _measure(proposers, scenes)
    results = {
        "frame": list(scenes[0].image.shape[:2]), "frames": opts.frames, "seed": opts.seed, "threads": threads,
        "device": opts.device, "params": {k: getattr(cfg, k) for k in ("max_proposals", "min_area", "mask_long_side")},
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "load_average_start": list(load_before), "load_average_end": list(os.getloadavg())},
        "backends": {}}
    for name in opts.backends:
        if name in errors:
            results["backends"][name] = {"error": errors[name]}
            continue
        ms = timings[name]
        results["backends"][name] = {
            "ms_median": statistics.median(ms), "ms_mean": statistics.fmean(ms), "ms_min": min(ms),
            "proposals_mean": statistics.fmean(counts[name]), "recall": meters[name].summary(),
            "random_weights": name in MMDET_CONFIGS and not opts.checkpoints.get(name)}
    results["ratio_to_regions"] = _ratios(results["backends"])
    return results


def _build(opts: ProposalBench, cfg):
    """Proposer per backend (name -> callable(scene) -> Proposals) and the errors of those that failed."""
    from maskclip_ros.proposals import build_proposer

    proposers, errors = {}, {}
    for name in opts.backends:
        try:
            if name == "regions":
                proposer = build_proposer(dataclasses.replace(cfg, backend="regions"))
                proposers[name] = lambda scene, p=proposer: p(scene.image)
            elif name == "external":
                proposer = build_proposer(dataclasses.replace(cfg, backend="external"))
                proposers[name] = lambda scene, p=proposer: p(scene.image, masks=_gt_masks(scene))
            else:
                checkpoint = opts.checkpoints.get(name, "")
                mmdet = dataclasses.replace(cfg.mmdet, config=MMDET_CONFIGS[name], checkpoint=checkpoint,
                                            random_init=not checkpoint)
                proposer = build_proposer(dataclasses.replace(cfg, backend="mmdet", mmdet=mmdet), device=opts.device)
                proposers[name] = lambda scene, p=proposer: p(scene.image)
        except (ImportError, OSError, ValueError) as err:
            errors[name] = f"{type(err).__name__}: {err}"
            print(f"{name}: not measured ({errors[name]})")
    return proposers, errors


def _gt_masks(scene):
    from maskclip_ros.data.coco_panoptic import segment_masks
    return segment_masks(scene.panoptic, [s["id"] for s in scene.segments])  # (S, H, W) bool


def _measure(proposers: dict, scenes: list):
    """Interleaved timing: every backend on frame i before frame i + 1. Frame 0 warms up (not counted)."""
    from maskclip_ros.proposals.recall import RecallMeter

    timings = {name: [] for name in proposers}
    counts = {name: [] for name in proposers}
    meters = {name: RecallMeter() for name in proposers}
    for index, scene in enumerate(scenes):
        for name, propose in proposers.items():
            start = time.perf_counter()
            proposals = propose(scene)
            elapsed = (time.perf_counter() - start) * 1e3
            if index == 0:
                continue
            timings[name].append(elapsed)
            counts[name].append(len(proposals))
            meters[name].add(proposals, scene.panoptic, scene.segments)
    return timings, meters, counts


def _ratios(backends: dict) -> dict:
    base = backends.get("regions", {}).get("ms_median")
    if not base:
        return {}
    return {name: r["ms_median"] / base for name, r in backends.items() if "ms_median" in r}


def report(results: dict) -> str:
    """A text table of ``bench_proposals``' results."""
    lines: list[str] = []
    _print(results, lines.append)
    return "\n".join(lines)


def _print(results: dict, print) -> None:
    print(f"proposal backends, {results['frame'][1]}x{results['frame'][0]} frames, {results['frames']} timed, "
          f"{results['threads']} threads, load {results['machine']['load_average_start'][0]:.1f}")
    print(f"{'backend':<12} {'ms/frame':>9} {'x regions':>9} {'proposals':>9} {'things':>7} {'stuff':>7}")
    for name, r in results["backends"].items():
        if "error" in r:
            print(f"{name:<12} {r['error']}")
            continue
        note = "  (random weights: recall meaningless)" if r["random_weights"] else ""
        print(f"{name:<12} {r['ms_median']:>9.1f} {results['ratio_to_regions'].get(name, float('nan')):>9.2f} "
              f"{r['proposals_mean']:>9.1f} {r['recall']['things']:>7.3f} {r['recall']['stuff']:>7.3f}{note}")
