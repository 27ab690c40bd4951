"""Tracking and 3D metrics on generated sequences (``data.sequences``), for any tracker.

The input is generic: per frame, the ground-truth objects and the predicted ones, each a
:class:`TrackedObject` (a mask, a track id and optionally a 3D centroid). Matching is by *mask IoU*
(motmetrics distance ``1 - IoU``, pairs below ``iou_threshold`` never match). Well-kept libraries do the
counting:

* CLEAR MOT (MOTA, ID switches, misses, false positives) and the identity metrics (IDF1) -- ``motmetrics``;
* HOTA (with DetA and AssA, averaged over the IoU thresholds 0.05..0.95) -- ``trackeval``'s ``HOTA``.

3D: for every matched pair (motmetrics' MATCH and SWITCH events) whose prediction has a centroid, the
Euclidean error to the ground-truth centroid in metres and relative to the ground-truth depth (z).

The node's newest-frame policy skips frames; simulate it by feeding only every k-th frame
(:func:`frame_indices`). Rates "per 100 frames" count the evaluated frames.
"""
from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np

MOTMETRICS = ("num_frames", "mota", "motp", "idf1", "idp", "idr", "num_switches", "num_objects", "num_matches",
              "num_misses", "num_false_positives", "precision", "recall")
MATCHED_EVENTS = ("MATCH", "SWITCH")  # motmetrics events that pair an object with a hypothesis
OVERALL = "OVERALL"  # motmetrics' name of the summary row of compute_many
PER_FRAMES = 100  # ID switches are also reported per this many evaluated frames
P90 = 90  # percentile reported besides the median
SUMMARY_KEYS = ("idf1", "mota", "id_switches", "centroid_error_rel_median")  # always in results.json


@dataclass(frozen=True, kw_only=True)
class TrackedObject:
    """One object in one frame: mask (H, W) bool, track id (> 0, unique in the frame) and optionally its
    3D centroid (3,) in metres in the camera's optical frame."""
    mask: np.ndarray
    track_id: int
    centroid: np.ndarray | None = None


@dataclass(frozen=True)
class TrackingEvalConfig:
    """Matching rules; defaults live in the YAML section that the ``eval-tracking`` command reads."""
    iou_threshold: float   # least mask IoU of a match (motmetrics distance 1 - IoU at most 1 - this)
    min_gt_area: int       # ground-truth objects with fewer visible pixels are ignored: neither missed nor
                           # matched, and predictions on them are no false positives (0 = count all)


def frame_indices(num_frames: int, frame_skip: int) -> range:
    """Frames a node with the newest-frame policy processes when only every ``frame_skip``-th one fits."""
    if frame_skip < 1:
        raise ValueError(f"frame_skip must be >= 1, got {frame_skip}")
    return range(0, num_frames, frame_skip)


def objects_from_panoptic(panoptic: np.ndarray, segments: Sequence[Mapping]) -> list[TrackedObject]:
    """Ground truth of one generated frame: every thing segment with a ``track_id`` (and ``centroid_xyz``)."""
    out = []
    for seg in segments:
        if seg.get("isthing") and seg.get("track_id"):
            centroid = seg.get("centroid_xyz")
            out.append(TrackedObject(mask=panoptic == seg["id"], track_id=int(seg["track_id"]),
                                     centroid=None if centroid is None else np.asarray(centroid, np.float64)))
    return out


def mask_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every pair of masks: a (A, H, W) bool, b (B, H, W) bool -> (A, B) float64."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    fa = a.reshape(len(a), -1).astype(np.float32)  # (A, H * W); float32 sums of 0/1 are exact below 2^24
    fb = b.reshape(len(b), -1).astype(np.float32)
    inter = (fa @ fb.T).astype(np.float64)  # (A, B)
    union = fa.sum(1, dtype=np.float64)[:, None] + fb.sum(1, dtype=np.float64)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


@dataclass
class _FrameRecord:
    """What one evaluated frame leaves for HOTA and the 3D errors."""
    gt_ids: np.ndarray     # (G,) int
    pred_ids: np.ndarray   # (P,) int
    iou: np.ndarray        # (G, P)
    gt_centroids: dict     # gt id -> (3,) or None
    pred_centroids: dict   # pred id -> (3,) or None


@dataclass
class _SequenceState:
    accumulator: object    # motmetrics.MOTAccumulator
    frames: list = field(default_factory=list)  # [_FrameRecord]


class TrackingEvaluator:
    """``update`` once per evaluated frame (with the sequence it belongs to), then ``compute``."""

    def __init__(self, *, config: TrackingEvalConfig):
        self.config = config
        self._sequences: dict[str, _SequenceState] = {}

    def reset(self) -> None:
        self._sequences = {}

    def update(self, sequence: str | int, gt: Sequence[TrackedObject], pred: Sequence[TrackedObject]) -> None:
        """Add one frame of ``sequence`` (frames of a sequence in order; sequences may interleave)."""
        import motmetrics as mm

        _check_unique(gt, "ground truth")
        _check_unique(pred, "prediction")
        gt, pred = self._drop_ignored(gt, pred)
        state = self._sequences.setdefault(str(sequence), _SequenceState(mm.MOTAccumulator(auto_id=True)))
        iou = mask_iou(_stack(gt), _stack(pred))  # (G, P)
        gt_ids = np.asarray([o.track_id for o in gt], np.int64)
        pred_ids = np.asarray([o.track_id for o in pred], np.int64)
        distance = np.where(iou >= self.config.iou_threshold, 1.0 - iou, np.nan)
        state.accumulator.update(gt_ids, pred_ids, distance)
        state.frames.append(_FrameRecord(gt_ids, pred_ids, iou, {o.track_id: o.centroid for o in gt},
                                         {o.track_id: o.centroid for o in pred}))

    def _drop_ignored(self, gt, pred):
        """Remove ground truth below min_gt_area and the predictions that match only such objects."""
        small = [o for o in gt if int(o.mask.sum()) < self.config.min_gt_area]
        if not small:
            return list(gt), list(pred)
        kept = [o for o in gt if int(o.mask.sum()) >= self.config.min_gt_area]
        iou = mask_iou(_stack(small), _stack(pred))  # (S, P)
        on_small = (iou >= self.config.iou_threshold).any(0) if len(small) else np.zeros(len(pred), bool)
        on_kept = (mask_iou(_stack(kept), _stack(pred)) >= self.config.iou_threshold).any(0) \
            if kept else np.zeros(len(pred), bool)
        return kept, [p for p, s, k in zip(pred, on_small, on_kept) if k or not s]

    def compute(self) -> dict:
        """Overall metrics plus ``per_sequence``: {name: metrics} (see :func:`_metrics_row` for the keys)."""
        import motmetrics as mm

        if not self._sequences:
            raise ValueError("no frames were evaluated")
        names = list(self._sequences)
        summary = mm.metrics.create().compute_many([s.accumulator for s in self._states()],
                                                   metrics=list(MOTMETRICS), names=names, generate_overall=True)
        hota = [hota_metrics(to_trackeval(s.frames)) for s in self._states()]
        errors = [centroid_errors(s.accumulator, s.frames) for s in self._states()]
        per_sequence = {n: _metrics_row(summary.loc[n], h, e, 1) for n, h, e in zip(names, hota, errors)}
        overall = _metrics_row(summary.loc[OVERALL], combine_hota(hota),
                               tuple(np.concatenate(parts) for parts in zip(*errors)), len(names))
        return dict(overall, per_sequence=per_sequence)

    def trackeval_data(self, sequence: str | int) -> dict:
        """The frames seen so far of one sequence in trackeval's per-sequence format (see :func:`to_trackeval`)."""
        return to_trackeval(self._sequences[str(sequence)].frames)

    def _states(self) -> list[_SequenceState]:
        return list(self._sequences.values())


def _check_unique(objects: Sequence[TrackedObject], what: str) -> None:
    ids = [o.track_id for o in objects]
    if len(ids) != len(set(ids)):
        raise ValueError(f"{what} track ids repeat within a frame: {sorted(ids)}")


def _stack(objects: Sequence[TrackedObject]) -> np.ndarray:
    """(N, H, W) bool masks of the objects ((0, 1, 1) when there are none)."""
    if not objects:
        return np.zeros((0, 1, 1), bool)
    return np.stack([np.asarray(o.mask, bool) for o in objects])


# ------------------------------------------------------------------------------------------------ 3D errors
def centroid_errors(accumulator, frames: Sequence[_FrameRecord]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """3D error of every matched pair: (errors (K,) metres, errors / gt depth (K,), missing (M,) flags).

    ``missing`` has one True per matched pair whose prediction or ground truth has no centroid."""
    events = accumulator.mot_events
    matched = events[events["Type"].isin(MATCHED_EVENTS)]
    errors, missing = [], []
    for (frame, _), row in matched.iterrows():
        record = frames[int(frame)]
        g, p = record.gt_centroids.get(int(row["OId"])), record.pred_centroids.get(int(row["HId"]))
        if g is None or p is None:
            missing.append(True)
            continue
        g, p = np.asarray(g, np.float64), np.asarray(p, np.float64)
        errors.append((float(np.linalg.norm(p - g)), float(np.linalg.norm(p - g) / g[2])))
    err = np.asarray(errors, np.float64).reshape(-1, 2)
    return err[:, 0], err[:, 1], np.asarray(missing, bool)


# -------------------------------------------------------------------------------------------------- HOTA
def to_trackeval(frames: Sequence[_FrameRecord]) -> dict:
    """One sequence in trackeval's per-sequence format (ids renumbered 0..n-1; similarity = mask IoU)."""
    gt_map = {i: k for k, i in enumerate(sorted({int(i) for f in frames for i in f.gt_ids}))}
    pred_map = {i: k for k, i in enumerate(sorted({int(i) for f in frames for i in f.pred_ids}))}
    return {"num_timesteps": len(frames), "num_gt_ids": len(gt_map), "num_tracker_ids": len(pred_map),
            "num_gt_dets": sum(len(f.gt_ids) for f in frames),
            "num_tracker_dets": sum(len(f.pred_ids) for f in frames),
            "gt_ids": [np.asarray([gt_map[int(i)] for i in f.gt_ids], int) for f in frames],
            "tracker_ids": [np.asarray([pred_map[int(i)] for i in f.pred_ids], int) for f in frames],
            "similarity_scores": [np.asarray(f.iou, float) for f in frames]}


def hota_metrics(data: dict) -> dict:
    """trackeval's HOTA result for one sequence (arrays over the IoU thresholds 0.05..0.95)."""
    from trackeval.metrics import HOTA

    return HOTA().eval_sequence(data)


def combine_hota(results: Sequence[dict]) -> dict:
    """trackeval's combination of per-sequence HOTA results."""
    from trackeval.metrics import HOTA

    return HOTA().combine_sequences(dict(enumerate(results)))


# ------------------------------------------------------------------------------------------------ summary
def _metrics_row(mm_row, hota: dict, errors: tuple, num_sequences: int) -> dict:
    """One flat dict of metrics (floats; NaN where undefined) from a motmetrics row, HOTA and 3D errors."""
    err, rel, missing = errors
    frames = int(mm_row["num_frames"])
    switches = int(mm_row["num_switches"])
    return {
        "mota": float(mm_row["mota"]), "idf1": float(mm_row["idf1"]), "idp": float(mm_row["idp"]),
        "idr": float(mm_row["idr"]), "hota": float(np.mean(hota["HOTA"])), "deta": float(np.mean(hota["DetA"])),
        "assa": float(np.mean(hota["AssA"])), "mean_iou": 1.0 - float(mm_row["motp"]),
        "id_switches": switches, "id_switches_per_100_frames": PER_FRAMES * switches / max(frames, 1),
        "num_sequences": num_sequences, "num_frames": frames, "num_gt": int(mm_row["num_objects"]),
        "num_matches": int(mm_row["num_matches"]), "num_misses": int(mm_row["num_misses"]),
        "num_false_positives": int(mm_row["num_false_positives"]), "precision": float(mm_row["precision"]),
        "recall": float(mm_row["recall"]),
        "centroid_error_median": _stat(err, 50), "centroid_error_p90": _stat(err, P90),
        "centroid_error_rel_median": _stat(rel, 50), "centroid_error_rel_p90": _stat(rel, P90),
        "centroid_pairs": int(len(err)), "centroid_missing": int(missing.sum()),
    }


def _stat(values: np.ndarray, percentile: float) -> float:
    return float(np.percentile(values, percentile)) if len(values) else math.nan


def evaluate_tracking(sequences: Iterable[tuple[str | int, Iterable[tuple[Sequence[TrackedObject],
                                                                          Sequence[TrackedObject]]]]],
                      *, config: TrackingEvalConfig) -> dict:
    """Evaluate ``(name, frames)`` pairs, frames yielding ``(gt, pred)`` per evaluated frame (lazily, so the
    tracker runs while the metrics accumulate). Returns :meth:`TrackingEvaluator.compute`'s dict."""
    evaluator = TrackingEvaluator(config=config)
    for name, frames in sequences:
        for gt, pred in frames:
            evaluator.update(name, gt, pred)
    return evaluator.compute()


def skip_frames(frames: Iterable, frame_skip: int) -> Iterator:
    """Every ``frame_skip``-th item of an iterable, starting with the first (see :func:`frame_indices`)."""
    frame_indices(0, frame_skip)  # validates frame_skip
    return itertools.islice(frames, 0, None, frame_skip)


# ------------------------------------------------------------------------------------------------ writing
def write_results(out_dir: str | Path, results: Mapping[str, Mapping], *,
                  title: str = "Tracking on generated sequences", notes: Sequence[str] = ()) -> tuple[Path, Path]:
    """Write ``results.json`` ({source: metrics}, NaN as null) and ``results.md``; returns both paths.

    ``results`` maps a proposal source ("gt", "regions", ...) to a :meth:`TrackingEvaluator.compute` dict
    (extra keys such as the frame skip are kept); every entry must hold :data:`SUMMARY_KEYS`."""
    for source, metrics in results.items():
        missing = [k for k in SUMMARY_KEYS if k not in metrics]
        if missing:
            raise KeyError(f"results for {source!r} lack {missing}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "results.json", out / "results.md"
    json_path.write_text(json.dumps(_json_safe(dict(results)), indent=1, allow_nan=False))
    md_path.write_text(results_markdown(results, title=title, notes=notes))
    return json_path, md_path


def _json_safe(value):
    """NaN / inf -> None and numpy scalars -> Python numbers, recursively."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


MARKDOWN_COLUMNS = (  # (header, key, format)
    ("IDF1", "idf1", "{:.3f}"), ("MOTA", "mota", "{:.3f}"), ("HOTA", "hota", "{:.3f}"),
    ("ID switches", "id_switches", "{:d}"), ("ID sw. / 100 fr.", "id_switches_per_100_frames", "{:.2f}"),
    ("frames", "num_frames", "{:d}"), ("3D err. median (m)", "centroid_error_median", "{:.3f}"),
    ("3D err. p90 (m)", "centroid_error_p90", "{:.3f}"),
    ("3D err. / depth median", "centroid_error_rel_median", "{:.2%}"),
    ("3D err. / depth p90", "centroid_error_rel_p90", "{:.2%}"))


def results_markdown(results: Mapping[str, Mapping], *, title: str, notes: Sequence[str] = ()) -> str:
    """One table, a row per proposal source (missing or NaN values as '-')."""
    lines = [f"# {title}", "", "| source | " + " | ".join(h for h, _, _ in MARKDOWN_COLUMNS) + " |",
             "|---" * (len(MARKDOWN_COLUMNS) + 1) + "|"]
    for source, metrics in results.items():
        cells = [_cell(metrics.get(key), fmt) for _, key, fmt in MARKDOWN_COLUMNS]
        lines.append(f"| {source} | " + " | ".join(cells) + " |")
    return "\n".join(lines + [""] + [f"- {n}" for n in notes]) + "\n"


def _cell(value, fmt: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return fmt.format(int(value) if fmt == "{:d}" else float(value))
