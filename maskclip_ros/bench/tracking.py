"""Benchmark of what tracking + 3D add to a frame: the Segmenter at M proposals with and without the stage.

The reference frame is ``bench.model``'s: an open_clip ViT (random init: speed does not depend on the
weights; ViT-B-16 by default) in ``tokens`` mode on a synthetic 640x480 frame with M = 100 seeded elliptical
proposals, here through the whole ``Segmenter.segment`` (MaskCLIP, classification, panoptic merge). The two
variants run side by side, interleaved within each repeat, on the same inputs:

* ``without``: ``segment(image, vocabulary, external_masks=masks)`` (what the node does with tracking and depth
  off and no embeddings published);
* ``with``: ``segment(..., with_embeddings=True)`` (the tracker's embeddings) + ``decode_depth`` of a 16UC1
  depth image + ``SegmentTracker.step`` (tracking and per-segment 3D geometry with oriented boxes).

The stage runs on consecutive stamps of the same frame, so after the first frames it holds one confirmed
track per thing segment and matches all of them every frame (the steady state of a static scene). Random
weights classify nothing (class probabilities about 1 / C), so the merge keeps every mask with any visible
pixels (``merge.object_mask_threshold=0``, ``merge.overlap_threshold=0``, for both variants) and the tracker
takes every thing segment (``tracking.high_score=0``); the segment counts are reported.
Overhead = median(with) / median(without) - 1; ``stage_share`` = the stage's own time / median(without), the
figure that the machine's load moves least.
"""
from __future__ import annotations

import dataclasses
import os
import statistics
import time

import numpy as np

from maskclip_ros.bench.model import ModelBench, _machine, ellipse_masks, segmenter_config, synthetic_frame

DEPTH_RANGE_M = (1.0, 6.0)  # the synthetic depth image: a plane receding from the bottom row to the top
FOCAL_PER_WIDTH = 0.8  # synthetic camera: fx = fy = this times the frame width (about 64 degrees across)
STAMP_STEP_S = 0.1  # seconds between the stage's frames
WARMUP_FRAMES = 3  # untimed frames per variant (the stage confirms its tracks during these)
# Random weights classify nothing: keep every mask through the merge, and track every thing (scores ~ 1 / C).
KEEP_ALL_MASKS = ("merge.object_mask_threshold=0.0", "merge.overlap_threshold=0.0")
TRACK_ALL = ("tracking.high_score=0.0", "tracking.low_score=0.0")


def bench_tracking(opts: ModelBench, *, target_overhead: float) -> dict:
    """Frame time with and without tracking + 3D at M = max(opts.masks); returns the results dict.

    ``opts`` is bench-model's (model, masks, width, height, repeats, threads, device, seed, params_files,
    sets; memory and targets are not used); ``target_overhead`` is the largest acceptable overhead (0.05)."""
    import torch

    from maskclip_ros.pipeline import build_segmenter
    from maskclip_ros.tracking.stage import SegmentTracker, camera_intrinsics, load_perception_config

    threads = opts.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    load_before = os.getloadavg()
    torch.manual_seed(opts.seed)
    cfg = segmenter_config(dataclasses.replace(opts, sets=(*opts.sets, *KEEP_ALL_MASKS)), mode="tokens")
    segmenter = build_segmenter(cfg, with_proposer=False)
    vocabulary = segmenter.make_vocabulary(cfg.vocabulary.class_names, cfg.vocabulary.is_thing)
    count = max(opts.masks)
    image = synthetic_frame(opts.height, opts.width, opts.seed)
    masks = ellipse_masks(count, opts.height, opts.width, opts.seed)
    depth_mm = synthetic_depth_mm(opts.height, opts.width)
    focal = FOCAL_PER_WIDTH * opts.width
    intrinsics, _ = camera_intrinsics([focal, 0, (opts.width - 1) / 2, 0, focal, (opts.height - 1) / 2, 0, 0, 1],
                                      opts.width, opts.height)
    stage = SegmentTracker(config=load_perception_config(*opts.params_files, overrides=[*opts.sets, *TRACK_ALL]))
    frame = _Frame(segmenter, vocabulary, image, masks, depth_mm, intrinsics, stage)
    samples, segments, stage_ms = _time_variants(frame, opts.repeats)
    return _results(opts, threads, load_before, count, samples, segments, stage_ms, target_overhead)


def synthetic_depth_mm(height: int, width: int) -> np.ndarray:
    """(H, W) uint16 millimetres: a plane from DEPTH_RANGE_M[1] at the top row to DEPTH_RANGE_M[0] at the bottom."""
    near, far = DEPTH_RANGE_M
    rows = np.linspace(far, near, height)[:, None] * np.ones((1, width))
    return np.round(rows * 1000.0).astype(np.uint16)


class _Frame:
    """One frame of each variant on fixed inputs (the stage advances its clock every call)."""

    def __init__(self, segmenter, vocabulary, image, masks, depth_mm, intrinsics, stage):
        self.segmenter, self.vocabulary, self.image, self.masks = segmenter, vocabulary, image, masks
        self.depth_mm, self.intrinsics, self.stage = depth_mm, intrinsics, stage
        self.stamp = 0.0

    def without(self):
        return self.segmenter.segment(self.image, self.vocabulary, external_masks=self.masks)

    def with_stage(self):
        from maskclip_ros.tracking.stage import decode_depth

        result = self.segmenter.segment(self.image, self.vocabulary, external_masks=self.masks,
                                        with_embeddings=True)
        depth_m, _ = decode_depth(self.depth_mm, "16UC1")
        self.stamp += STAMP_STEP_S
        tracked = self.stage.step(result, self.stamp, depth_m, self.intrinsics)
        return result, tracked


def _time_variants(frame: _Frame, repeats: int):
    """Seconds per repeat of each variant (interleaved), segment counts and the stage's own ms."""
    for _ in range(WARMUP_FRAMES):
        frame.without()
        frame.with_stage()
    samples: dict[str, list[float]] = {"without": [], "with": []}
    stage_ms: dict[str, list[float]] = {"tracking": [], "geometry": []}
    counts = {"segments": 0, "things": 0, "tracked": 0, "with_geometry": 0}
    for _ in range(repeats):
        start = time.perf_counter()
        frame.without()
        samples["without"].append(time.perf_counter() - start)
        start = time.perf_counter()
        result, tracked = frame.with_stage()
        samples["with"].append(time.perf_counter() - start)
        for key in stage_ms:
            stage_ms[key].append(tracked.timings_ms[key])
    counts.update(segments=len(result.segments), things=sum(s.is_thing for s in result.segments),
                  tracked=sum(i > 0 for i in tracked.track_ids),
                  with_geometry=sum(g is not None and g.valid for g in tracked.geometry))
    return samples, counts, stage_ms


def _results(opts, threads, load_before, count, samples, segments, stage_ms, target_overhead) -> dict:
    median = {k: statistics.median(v) for k, v in samples.items()}
    overhead = median["with"] / median["without"] - 1.0
    stage_median = {k: statistics.median(v) for k, v in stage_ms.items()}
    machine = _machine(load_before)
    machine["load_average_end"] = list(os.getloadavg())
    return {"model": opts.model, "frame": [opts.height, opts.width], "masks": count, "mode": "tokens",
            "device": opts.device, "threads": threads, "repeats": opts.repeats, "machine": machine,
            "frame_s": median, "samples_s": samples, "stage_ms": stage_median,
            "stage_share": sum(stage_median.values()) / 1000.0 / median["without"], "segments": segments,
            "overhead": overhead, "target_overhead": target_overhead,
            "target_met": overhead <= target_overhead}


def report(results: dict) -> str:
    """A few lines of text for ``bench_tracking``'s results."""
    f, s = results["frame_s"], results["stage_ms"]
    seg = results["segments"]
    load = results["machine"]["load_average_start"][0], results["machine"]["load_average_end"][0]
    return "\n".join([
        f"{results['model']} random init, {results['frame'][1]}x{results['frame'][0]}, tokens, M={results['masks']}, "
        f"{results['threads']} threads, load avg {load[0]:.1f} -> {load[1]:.1f}",
        f"frame without tracking + 3D {f['without']:.3f} s, with {f['with']:.3f} s: overhead "
        f"{100 * results['overhead']:+.1f}% (target <= {100 * results['target_overhead']:.0f}%: "
        f"{'met' if results['target_met'] else 'MISSED'})",
        f"stage alone: tracking {s['tracking']:.1f} ms + geometry {s['geometry']:.1f} ms = "
        f"{100 * results['stage_share']:.1f}% of a frame; {seg['segments']} segments ({seg['things']} things, "
        f"{seg['tracked']} tracked, {seg['with_geometry']} with 3D)"])
