"""`maskclip-ros eval-tracking`: the Segmenter and the per-frame stage (``tracking.stage.SegmentTracker``) on
held-out generated sequences, scored by ``evaluation.tracking`` (MOTA, IDF1, ID switches, HOTA, 3D error).

Per proposal source, every sequence runs from a fresh stage; of each sequence only every ``frame_skip``-th
frame is processed (the node's newest-frame policy when the model takes about ``frame_skip`` camera frames).
A processed frame goes through what the node does: ``segment(..., with_embeddings=True)``, the depth as the
sensor publishes it (16UC1 millimetres, noise and dropout) decoded by ``decode_depth``, the camera's K through
``camera_intrinsics``, then ``SegmentTracker.step``. Predictions are the thing segments with a track id and
their 3D centroids; ground truth every visible thing with its id and exact centroid.

Proposal sources:

* ``gt``: every ground-truth segment's mask (things and stuff) is one proposal, the paper's ground-truth-mask
  ablation; classes, thing/stuff and embeddings still come from the Segmenter.
* ``gt_things``: only the things' masks (tracking without the CLIP's stuff-as-thing confusions).
* ``oracle``: no classifier: the ground-truth segments (masks, classes, score 1) with the Segmenter's MaskCLIP
  embedding of each mask -- the tracker and the 3D stage alone, on perfect detections.
* ``regions``: the training-free proposal backend (``proposals.backend`` forced to ``regions``).
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from maskclip_ros.data.sequences import Sequence as GeneratedSequence
from maskclip_ros.data.sequences import SequenceConfig, depth_to_mm, generate_sequence
from maskclip_ros.data.world import WorldConfig
from maskclip_ros.evaluation.tracking import (TrackedObject, TrackingEvalConfig, TrackingEvaluator, frame_indices,
                                              objects_from_panoptic)
from maskclip_ros.tracking.stage import PerceptionConfig, SegmentTracker, camera_intrinsics, decode_depth

SOURCES = ("gt", "gt_things", "oracle", "regions")
ORACLE_SCORE = 1.0  # score of every ground-truth segment in the oracle source
DEPTH_ENCODING = "16UC1"  # the sequences' depth is evaluated as a 16UC1 sensor publishes it
MS_PER_S = 1000.0


@dataclass(frozen=True)
class EvalTrackingConfig:
    """What one eval-tracking run measures (the command's options; defaults in config/commands.yaml)."""
    sources: tuple[str, ...]   # proposal sources (SOURCES)
    num_sequences: int         # held-out sequences per source
    frames: int                # camera frames per sequence
    seed: int                  # world seed of the sequences (one the project never trains or tunes on)
    frame_skip: int            # process every n-th camera frame
    matching: TrackingEvalConfig  # mask-IoU matching of predictions to ground truth

    def __post_init__(self) -> None:
        unknown = sorted(set(self.sources) - set(SOURCES))
        if unknown or not self.sources:
            raise ValueError(f"sources must be some of {SOURCES}, got {list(self.sources)}")
        if self.num_sequences < 1 or self.frames < 1 or self.frame_skip < 1:
            raise ValueError("num_sequences, frames and frame_skip must be >= 1")


def ground_truth_masks(frame, things_only: bool) -> np.ndarray:
    """(G, H, W) float32 masks of the frame's ground-truth segments (only things when ``things_only``)."""
    ids = [s["id"] for s in frame.segments if s["isthing"] or not things_only]
    if not ids:
        return np.zeros((0, *frame.panoptic.shape), np.float32)
    return (frame.panoptic[None] == np.asarray(ids)[:, None, None]).astype(np.float32)


def oracle_result(segmenter, vocabulary, frame):
    """The frame's ground truth as a ``PanopticResult`` (classes by name in ``vocabulary``, score 1) with the
    MaskCLIP embedding of every ground-truth mask (the Segmenter's encoder, no classification or merge)."""
    import torch
    import torch.nn.functional as F

    from maskclip_ros.data.world import categories
    from maskclip_ros.model.panoptic import SegmentInfo
    from maskclip_ros.pipeline import PanopticResult

    names = {c["id"]: c["name"] for c in categories()}
    index = {name: i for i, name in enumerate(vocabulary.class_names)}
    missing = sorted({names[s["category_id"]] for s in frame.segments} - set(index))
    if missing:
        raise ValueError(f"the oracle source needs every ground-truth class in the vocabulary; missing {missing}")
    segments = [SegmentInfo(id=s["id"], class_index=index[names[s["category_id"]]], score=ORACLE_SCORE,
                            is_thing=bool(s["isthing"]), area=s["area"], bbox=tuple(s["bbox"]))
                for s in frame.segments]
    with torch.no_grad():
        embeddings = segmenter.maskclip(frame.image, ground_truth_masks(frame, things_only=False)).embeddings
    semantic = np.full(frame.panoptic.shape, -1, np.int32)
    for seg in segments:
        semantic[frame.panoptic == seg.id] = seg.class_index
    return PanopticResult(panoptic=frame.panoptic, semantic=semantic, segments=segments,
                          embeddings=F.normalize(embeddings.float(), dim=-1).cpu().numpy(), vocabulary=vocabulary,
                          timings_ms={})


def frame_result(segmenter, vocabulary, frame, source: str):
    """The ``PanopticResult`` of one frame for a proposal source."""
    if source == "oracle":
        return oracle_result(segmenter, vocabulary, frame)
    masks = None if source == "regions" else ground_truth_masks(frame, things_only=source == "gt_things")
    return segmenter.segment(frame.image, vocabulary, external_masks=masks, with_embeddings=True)


def tracked_objects(result, tracked) -> list[TrackedObject]:
    """The tracked thing segments of one frame as predictions (mask, track id, 3D centroid or None)."""
    out = []
    for seg, track_id, geometry in zip(result.segments, tracked.track_ids, tracked.geometry):
        if track_id > 0:
            centroid = np.asarray(geometry.centroid) if geometry is not None and geometry.valid else None
            out.append(TrackedObject(mask=result.panoptic == seg.id, track_id=track_id, centroid=centroid))
    return out


@dataclass
class _Tally:
    """Running totals of one source: processed frames, seconds per part, depth problems by kind."""
    frames: int = 0
    seconds: dict = dataclasses.field(default_factory=lambda: {"render": 0.0, "segment": 0.0, "stage": 0.0})
    stage_ms: dict = dataclasses.field(default_factory=lambda: {"tracking": 0.0, "geometry": 0.0})
    depth_problems: dict = dataclasses.field(default_factory=dict)


def track_sequence(segmenter, vocabulary, perception: PerceptionConfig, seq: GeneratedSequence, source: str,
                   frame_skip: int, tally: _Tally) -> Iterator[tuple[list, list]]:
    """(ground truth, prediction) per processed frame of one sequence, from a fresh stage."""
    stage = SegmentTracker(config=perception)
    cam = seq.camera
    intrinsics, _ = camera_intrinsics(cam.k, cam.width, cam.height)
    for t in frame_indices(len(seq), frame_skip):
        started = time.perf_counter()
        frame = seq[t]
        depth_m, _ = decode_depth(depth_to_mm(frame.depth), DEPTH_ENCODING)
        rendered = time.perf_counter()
        result = frame_result(segmenter, vocabulary, frame, source)
        segmented = time.perf_counter()
        tracked = stage.step(result, frame.stamp_s, depth_m, intrinsics)
        done = time.perf_counter()
        _count(tally, (rendered - started, segmented - rendered, done - segmented), tracked)
        yield objects_from_panoptic(frame.panoptic, frame.segments), tracked_objects(result, tracked)


def _count(tally: _Tally, seconds: tuple[float, float, float], tracked) -> None:
    tally.frames += 1
    for key, value in zip(("render", "segment", "stage"), seconds):
        tally.seconds[key] += value
    for key in tally.stage_ms:
        tally.stage_ms[key] += tracked.timings_ms[key]
    if tracked.depth_problem is not None:
        name = tracked.depth_problem.value
        tally.depth_problems[name] = tally.depth_problems.get(name, 0) + 1


def evaluate_source(segmenter, vocabulary, perception: PerceptionConfig, sequences: Sequence[GeneratedSequence],
                    source: str, opts: EvalTrackingConfig, progress: bool = True) -> dict:
    """Metrics of one proposal source over ``sequences`` (``TrackingEvaluator.compute`` plus run details)."""
    from tqdm import tqdm

    evaluator = TrackingEvaluator(config=opts.matching)
    tally = _Tally()
    total = sum(len(frame_indices(len(s), opts.frame_skip)) for s in sequences)
    with tqdm(total=total, desc=f"eval-tracking {source}", unit="frame", disable=not progress) as bar:
        for seq in sequences:
            for gt, pred in track_sequence(segmenter, vocabulary, perception, seq, source, opts.frame_skip, tally):
                evaluator.update(seq.index, gt, pred)
                bar.update()
    metrics = evaluator.compute()
    frames = max(tally.frames, 1)
    return dict(metrics, source=source, frame_skip=opts.frame_skip, seed=opts.seed,
                sequences=len(sequences), camera_frames=sum(len(s) for s in sequences),
                seconds_per_frame={k: v / frames for k, v in tally.seconds.items()},
                stage_ms_per_frame={k: v / frames for k, v in tally.stage_ms.items()},
                depth_problems=tally.depth_problems)


def eval_tracking(segmenter_cfg, perception: PerceptionConfig, sequence_cfg: SequenceConfig,
                  world_cfg: WorldConfig, opts: EvalTrackingConfig, *, progress: bool = True) -> dict[str, dict]:
    """Every source of ``opts`` on the same held-out sequences: ``{source: metrics}``."""
    from maskclip_ros.pipeline import build_segmenter

    if "regions" in opts.sources:
        segmenter_cfg = dataclasses.replace(segmenter_cfg,
                                            proposals=dataclasses.replace(segmenter_cfg.proposals, backend="regions"))
    segmenter = build_segmenter(segmenter_cfg, with_proposer="regions" in opts.sources)
    vocab_cfg = segmenter_cfg.vocabulary
    vocabulary = segmenter.make_vocabulary(vocab_cfg.class_names, vocab_cfg.is_thing)
    sequence_cfg = dataclasses.replace(sequence_cfg, frames=opts.frames)
    sequences = [generate_sequence(opts.seed, i, sequence_cfg, world_cfg) for i in range(opts.num_sequences)]
    return {source: evaluate_source(segmenter, vocabulary, perception, sequences, source, opts, progress)
            for source in opts.sources}


def targets_report(results: dict[str, dict], targets: dict[str, float]) -> list[str]:
    """One line per issue target: the measured value and met / MISSED (sources not run are skipped)."""
    checks = [("gt", "idf1", ">=", targets["gt_idf1"], "IDF1 with ground-truth masks"),
              ("gt", "id_switches_per_100_frames", "<=", targets["gt_switches_per_100"],
               "ID switches per 100 frames with ground-truth masks"),
              ("regions", "idf1", ">=", targets["regions_idf1"], "IDF1 with regions proposals"),
              ("gt", "centroid_error_rel_median", "<=", targets["centroid_rel_median"],
               "median 3D centroid error / depth with ground-truth masks")]
    lines = []
    for source, key, op, bound, text in checks:
        if source not in results:
            continue
        value = results[source][key]
        met = value >= bound if op == ">=" else value <= bound
        lines.append(f"[{'met' if met else 'MISSED'}] {text}: {value:.4g} (target {op} {bound:g})")
    return lines
