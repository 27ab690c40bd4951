"""Whole frames per backend (part of `maskclip-ros bench-backends`): ``Segmenter.segment`` (proposals ->
MaskCLIP -> classification -> panoptic merge) on generated scenes with a params file's settings (the demo's:
config/demo.yaml, the small CLIP in rma mode with regions proposals at 640x480), once per backend and
precision. The exported encoder is built (exported, compiled) before timing into a temporary cache and
then taken from it; one warm-up frame per backend; frames interleave the backends. Medians of the whole
``segment`` call and of its stages; the speed-up of the whole frame against torch fp32; and the share of
pixels whose semantic label equals torch fp32's.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import numpy as np

from maskclip_ros.bench.backends import REFERENCE, export_cache, variant_name

STAGES = ("proposals", "clip", "merge")
WEIGHT_SEED = 0  # torch seed before each build (bench-backends' default seed)


@dataclass(frozen=True)
class FramesBench:
    """Settings of the whole-frame measurement (from `maskclip-ros bench-backends`' options)."""
    params: str                        # params file over config/default.yaml (a shipped name or a path)
    variants: tuple[tuple[str, str], ...]  # (backend, precision) pairs, torch fp32 among them
    frames: int                        # timed generated scenes (after one warm-up scene)
    seed: int                          # world seed of the scenes
    threads: int                       # CPU threads of torch and the runtimes
    export_cache: str                  # export cache ("" = a fresh temporary one)
    sets: tuple[str, ...]              # dotted overrides of the model settings


def frame_bench(opts: FramesBench) -> dict:
    """Median whole-frame time per backend and its speed-up against torch fp32 (see the module text)."""
    import torch

    from maskclip_ros.data import world

    torch.set_num_threads(opts.threads)
    scenes = [world.generate_scene(opts.seed, index).image for index in range(opts.frames + 1)]
    frame = scenes[0].shape[:2]
    with export_cache(opts.export_cache) as cache_dir:
        segmenters, builds = {}, {}
        for backend, precision in opts.variants:
            name = variant_name(backend, precision)
            start = time.perf_counter()
            segmenters[name] = _segmenter(opts, backend, precision, cache_dir, frame)
            builds[name] = time.perf_counter() - start
        cfg = _config(opts, "torch", "fp32", cache_dir, frame)
        times, stages, labels = _run(segmenters, scenes, cfg.vocabulary)
    frame_ms = {name: statistics.median(ts) for name, ts in times.items()}
    variants = {name: {"frame_ms": ms, "speedup": frame_ms[REFERENCE] / ms, "build_s": builds[name],
                       "stages_ms": {s: statistics.median(stages[name][s]) for s in STAGES},
                       "samples_ms": times[name],
                       "semantic_agreement": float(np.mean([np.mean(a == b) for a, b
                                                            in zip(labels[name], labels[REFERENCE])]))}
                for name, ms in frame_ms.items()}
    return {"params": opts.params, "frames": opts.frames, "seed": opts.seed, "frame": list(frame),
            "description": f"{cfg.clip.model_name} {cfg.maskclip.mode} mode, {cfg.proposals.backend} proposals",
            "variants": variants}


def _run(segmenters: dict, scenes: list[np.ndarray], vocabulary_cfg):
    """One warm-up scene, then every scene through every segmenter in turn: ms, stage ms, semantic maps."""
    vocabularies = {name: seg.make_vocabulary(vocabulary_cfg.class_names, vocabulary_cfg.is_thing)
                    for name, seg in segmenters.items()}
    for name, seg in segmenters.items():
        seg.segment(scenes[0], vocabularies[name])
    times = {name: [] for name in segmenters}
    stages = {name: {s: [] for s in STAGES} for name in segmenters}
    labels = {name: [] for name in segmenters}
    for image in scenes[1:]:
        for name, seg in segmenters.items():
            start = time.perf_counter()
            result = seg.segment(image, vocabularies[name])
            times[name].append((time.perf_counter() - start) * 1000.0)
            for s in STAGES:
                stages[name][s].append(result.timings_ms[s])
            labels[name].append(result.semantic)
    return times, stages, labels


def _segmenter(opts: FramesBench, backend: str, precision: str, cache_dir: str, frame):
    import torch

    from maskclip_ros.pipeline import build_segmenter

    torch.manual_seed(WEIGHT_SEED)  # random-init models (tests) get the same weights in every segmenter
    return build_segmenter(_config(opts, backend, precision, cache_dir, frame))


def _config(opts: FramesBench, backend: str, precision: str, cache_dir: str, frame):
    from maskclip_ros.config import shipped_config
    from maskclip_ros.pipeline import load_segmenter_config

    params = opts.params if "/" in opts.params else str(shipped_config(opts.params))
    sets = [*opts.sets, f"maskclip.backend={backend}", f"precision={precision}",
            f"maskclip.export_cache_dir={cache_dir}", f"maskclip.export_frame_size=[{frame[0]}, {frame[1]}]",
            f"maskclip.export_threads={opts.threads}"]
    return load_segmenter_config(params, overrides=sets)
