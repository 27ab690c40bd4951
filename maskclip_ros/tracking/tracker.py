"""Multi-object tracking of thing segments across frames: ByteTrack's two-stage matching on masks.

One ``Tracker.update(observations, stamp_s)`` per processed frame (frames may be skipped: every age and motion
is measured in seconds from the stamps, not in frames). Per update:

1. Lost tracks older than ``max_age_s`` are dropped.
2. Stage one (ByteTrack's high-score stage): observations with score >= ``high_score`` against every live
   track (tentative, confirmed, lost). The pair similarity is the weighted mean of mask IoU, class agreement
   (same class *name* = 1, else 0: soft, so a vocabulary change -- "the class may change; the object does
   not" -- keeps ids) and embedding cosine (left out of the mean for pairs without embeddings). A pair is
   admissible when (IoU >= ``min_iou`` or cosine >= ``reid_similarity`` or, for a track matched in the
   previous update, containment >= ``min_containment``) and similarity >= ``min_similarity``. The embedding
   gate re-finds a lost track after an occlusion or a jump over skipped frames; containment (intersection
   over the smaller mask) follows an object growing into view from the border or shrinking behind an
   occluder, where IoU is low. Hungarian assignment (``scipy.optimize.linear_sum_assignment``) on
   1 - similarity, with leaving a track or an observation unmatched priced at half the largest admissible
   cost (``assign``): better pairs win over more pairs.
3. Stage two: observations with ``low_score`` <= score < ``high_score`` against the tracks still unmatched
   that were matched in the previous update (not lost), on IoU >= ``second_stage_min_iou`` only: a partly
   occluded, low-confidence object keeps its track but never starts one. Lower scores are ignored.
4. Unmatched tentative tracks are dropped; unmatched confirmed tracks become lost (kept ``max_age_s``);
   unmatched high-score observations start tentative tracks. An observation too small to leave a cell on the
   comparison grid is not tracked (id 0): its embedding is unreliable and it has no shape to match.

Masks are compared on a grid with long side ``mask_long_side`` (nearest sampling) as one matrix product
(N tracks x K observations). A track matched in the previous update is compared at its predicted place:
its last mask shifted by its smoothed centroid velocity times the elapsed time (zero-filled); a lost track
scores the better IoU of that predicted place and where it was last seen (an object may have stopped). A
match that covers much less than its track's predicted mask and lies inside it (``occluded_area_ratio``,
``occluded_containment``) is taken as partly occluded: the track keeps its own shape at the predicted place
and its velocity, so it is found again when the object re-emerges; an observation outside the prediction
re-anchors the track.

Ids: a track gets its id when confirmed (``confirm_hits`` matches in a row; a tentative track that misses
an update is dropped), so tentative tracks return 0 and the numbering has no gaps from short-lived
candidates. Ids are positive and never reused within a Tracker's life, ``reset()`` included.

Why our own and not a library: ``trackers`` (Roboflow, Apache-2.0) ByteTrackTracker takes supervision
``Detections``, associates by box IoU after a Kalman box prediction, counts the lost buffer in frames at a
fixed frame rate and has no hook for a caller's cost matrix, so it can use neither mask IoU, class names nor
our embeddings (and it pulls in supervision). What ByteTrack needs on top of scipy's assignment is short.
"""
from __future__ import annotations

import enum
import itertools
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from maskclip_ros.tracking.geometry import resize_nearest
from maskclip_ros.tracking.observations import Observation, ObservationFrame, mask_overlaps, shift_mask, unit

__all__ = ["TrackInfo", "TrackState", "Tracker", "TrackerConfig"]

INADMISSIBLE_COST = 1e6  # assignment cost of a pair that fails the gates (such a pair is never accepted)
UNMATCHED_TIE_BREAK = 1e-6  # added to the unmatched cost, so a pair exactly at the cost limit is still taken
MAX_WEIGHT = 10.0  # largest weight of a similarity term (only their ratios matter)


class TrackState(enum.Enum):
    TENTATIVE = "tentative"  # fewer than confirm_hits matches so far; no id shown (update returns 0)
    CONFIRMED = "confirmed"  # matched in the latest update; has its id
    LOST = "lost"  # confirmed once, unmatched in the latest update; kept max_age_s for re-identification


@dataclass(frozen=True, kw_only=True)
class TrackerConfig:
    """The ``tracking`` section of the params (config/default.yaml documents every field)."""

    enabled: bool  # track thing segments (false: the per-frame stage gives every segment id 0)
    high_score: float  # [0, 1] stage one: observations at or above it match on everything and may start tracks
    low_score: float  # [0, high_score] below: ignored (id 0); from here to high_score: stage two (IoU only)
    iou_weight: float  # [0, 10] weight of mask IoU in the pair similarity
    class_weight: float  # [0, 10] weight of class-name agreement (1 same name, 0 else)
    embedding_weight: float  # [0, 10] weight of the embedding cosine (clipped to [0, 1]; only pairs with both)
    min_iou: float  # [0, 1] a pair is admissible with at least this IoU (0 = no IoU gate) ...
    min_containment: float  # [0, 1] ... or, for a track matched in the previous update, with the smaller of the
    #                         two masks at least this much inside the other (an object entering the view or
    #                         partly hidden; 1 = only when one contains the other) ...
    reid_similarity: float  # [0, 1] ... or at least this embedding cosine (re-finds lost and far-moved objects)
    min_similarity: float  # [0, 1] ... and at least this weighted similarity
    second_stage_min_iou: float  # [0, 1] least IoU for a low-score observation to continue a track
    confirm_hits: int  # [1, 1000] matches in a row before a track is confirmed and gets its id (1 = at once)
    max_age_s: float  # [0, 3600] seconds a lost track is kept for re-identification
    embedding_momentum: float  # [0, 1] share of the old embedding when a match updates it (0 = replace)
    velocity_momentum: float  # [0, 1] share of the old velocity when a match updates it (1 = no motion model)
    occluded_area_ratio: float  # [0, 1] a match with less than this share of the track's (predicted) area ...
    occluded_containment: float  # [0, 1] ... and at least this share inside it is partly occluded: the track
    #                              keeps its own shape, moved by its velocity, instead of the sliver (0 = off)
    mask_long_side: int  # [8, 1024] long side in cells of the grid masks are compared on

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise ValueError(f"tracking.enabled must be true or false, got {self.enabled!r}")
        for name in ("high_score", "min_iou", "min_containment", "reid_similarity", "min_similarity",
                     "second_stage_min_iou", "embedding_momentum", "velocity_momentum", "occluded_area_ratio",
                     "occluded_containment"):
            _check_range(name, getattr(self, name), 0.0, 1.0)
        _check_range("low_score", self.low_score, 0.0, self.high_score)
        for name in ("iou_weight", "class_weight", "embedding_weight"):
            _check_range(name, getattr(self, name), 0.0, MAX_WEIGHT)
        if self.iou_weight + self.class_weight <= 0:
            raise ValueError("tracking.iou_weight + tracking.class_weight must be > 0 (pairs without embeddings "
                             f"need a similarity), got {self.iou_weight} + {self.class_weight}")
        _check_range("confirm_hits", self.confirm_hits, 1, 1000, integer=True)
        _check_range("max_age_s", self.max_age_s, 0.0, 3600.0)
        _check_range("mask_long_side", self.mask_long_side, 8, 1024, integer=True)


def _check_range(name: str, value: Any, lo: float, hi: float, *, integer: bool = False) -> None:
    types = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    if isinstance(value, bool) or not isinstance(value, types) or not lo <= value <= hi:
        kind = "an integer" if integer else "a number"
        raise ValueError(f"tracking.{name} must be {kind} in [{lo}, {hi}], got {value!r}")


@dataclass(frozen=True, kw_only=True)
class TrackInfo:
    """A read-only view of one live track."""

    track_id: int  # positive id; 0 while tentative
    state: TrackState
    class_name: str  # class of the latest matched observation
    score: float  # score of the latest matched observation
    bbox: tuple[int, int, int, int]  # (x, y, w, h) of the latest matched observation
    hits: int  # matched observations so far
    first_seen_s: float  # stamp of the first observation
    last_seen_s: float  # stamp of the latest matched observation


@dataclass(kw_only=True, eq=False)
class _Track:
    """Mutable internal state of one track."""

    track_id: int  # 0 until confirmed
    state: TrackState
    mask: np.ndarray  # (gh, gw) bool on the comparison grid, as last seen
    centroid: np.ndarray  # (2,) float64 (row, col) as fractions of the grid; NaN while the mask is empty
    velocity: np.ndarray  # (2,) float64 centroid velocity in grid fractions per second
    embedding: np.ndarray | None  # (E,) float32 unit vector
    class_name: str
    score: float
    bbox: tuple[int, int, int, int]
    hits: int
    first_seen_s: float
    last_seen_s: float

    def info(self) -> TrackInfo:
        return TrackInfo(track_id=self.track_id, state=self.state, class_name=self.class_name, score=self.score,
                         bbox=self.bbox, hits=self.hits, first_seen_s=self.first_seen_s,
                         last_seen_s=self.last_seen_s)


class Tracker:
    """Assigns persistent ids to thing segments frame by frame (see the module docstring)."""

    def __init__(self, *, config: TrackerConfig):
        self._config = config
        self._tracks: list[_Track] = []
        self._ids = itertools.count(1)
        self._last_stamp: float | None = None

    @property
    def config(self) -> TrackerConfig:
        return self._config

    def set_config(self, config: TrackerConfig) -> None:
        """Replace the thresholds; applies from the next update (tracks are kept)."""
        self._config = config

    def tracks(self) -> list[TrackInfo]:
        """Every live track (tentative, confirmed, lost), oldest first."""
        return [t.info() for t in self._tracks]

    def reset(self) -> None:
        """Forget every track and the clock (e.g. after a jump back in time); ids still never repeat."""
        self._tracks = []
        self._last_stamp = None

    def update(self, observations: Sequence[Observation], stamp_s: float) -> list[int]:
        """Match one frame's observations; returns one id per observation (0 = not tracked: tentative, score
        below low_score, or an unmatched low-score observation). Stamps must not decrease."""
        observations = list(observations)
        stamp = self._advance_clock(stamp_s)
        cfg = self._config
        self._tracks = [t for t in self._tracks
                        if not (t.state is TrackState.LOST and stamp - t.last_seen_s > cfg.max_age_s)]
        frame = ObservationFrame.build(observations, cfg.mask_long_side) if observations else None
        scores = np.array([o.score for o in observations], dtype=np.float64)
        if frame is not None:  # a mask with no cell on the comparison grid cannot be told apart: not tracked
            scores[frame.flat.sum(1) == 0] = -1.0
        high = np.flatnonzero(scores >= cfg.high_score)
        low = np.flatnonzero((scores >= cfg.low_score) & (scores < cfg.high_score))
        first = self._match(self._tracks, high, frame, stamp, second_stage=False)
        taken = {id(t) for t, _ in first}
        active = [t for t in self._tracks if id(t) not in taken and t.state is not TrackState.LOST]
        second = self._match(active, low, frame, stamp, second_stage=True)
        for track, k in first + second:
            self._refresh(track, frame, k, observations[k], stamp)
        matched = {id(t) for t, _ in first + second}
        self._tracks = [t for t in self._tracks if id(t) in matched or t.state is not TrackState.TENTATIVE]
        for track in self._tracks:
            if id(track) not in matched:
                track.state = TrackState.LOST
        started = sorted(set(high.tolist()) - {k for _, k in first})
        new = [(self._start(frame, k, observations[k], stamp), k) for k in started]
        ids = [0] * len(observations)
        for track, k in first + second + new:
            ids[k] = track.track_id
        return ids

    def _advance_clock(self, stamp_s: float) -> float:
        stamp = float(stamp_s)
        if not math.isfinite(stamp):
            raise ValueError(f"stamp_s must be finite, got {stamp_s!r}")
        if self._last_stamp is not None and stamp < self._last_stamp:
            raise ValueError(f"stamp_s went back in time ({stamp} < {self._last_stamp}); call reset() first")
        self._last_stamp = stamp
        return stamp

    def _match(self, tracks: list[_Track], columns: np.ndarray, frame: ObservationFrame | None, stamp: float,
               *, second_stage: bool) -> list[tuple[_Track, int]]:
        """Hungarian matching of ``tracks`` with the observations ``columns``; (track, observation index)."""
        if not tracks or len(columns) == 0 or frame is None:
            return []
        cfg = self._config
        similarity, iou, contained, cosine = self._similarity(tracks, frame, columns, stamp)  # (N, K') each
        if second_stage:
            admissible = iou >= cfg.second_stage_min_iou
        else:
            tracked = np.array([t.state is not TrackState.LOST for t in tracks])[:, None]  # (N, 1)
            gates = (iou >= cfg.min_iou) | (cosine >= cfg.reid_similarity)
            gates |= tracked & (contained >= cfg.min_containment)
            admissible = gates & (similarity >= cfg.min_similarity)
        cost_limit = 1.0 if second_stage else 1.0 - cfg.min_similarity  # the largest admissible cost
        rows, cols = assign(1.0 - similarity, admissible, cost_limit)
        return [(tracks[r], int(columns[c])) for r, c in zip(rows.tolist(), cols.tolist())]

    def _similarity(self, tracks: list[_Track], frame: ObservationFrame, columns: np.ndarray,
                    stamp: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(N, K') weighted similarity, mask IoU, containment and embedding cosine (-inf where a side lacks an
        embedding). A lost track's IoU is the better of its predicted place and where it was last seen."""
        cfg = self._config
        grid = frame.masks.shape[1:]
        observed = frame.flat[columns]  # (K', G)
        predicted = np.stack([self._predicted_mask(t, grid, stamp) for t in tracks])  # (N, gh, gw)
        iou, contained = mask_overlaps(predicted.reshape(len(tracks), -1).astype(np.float32), observed)
        lost = np.flatnonzero([t.state is TrackState.LOST for t in tracks])
        if len(lost):
            last = np.stack([_on_grid(tracks[n].mask, grid) for n in lost]).reshape(len(lost), -1)
            iou[lost] = np.maximum(iou[lost], mask_overlaps(last.astype(np.float32), observed)[0])
        agree = (np.array([t.class_name for t in tracks], dtype=object)[:, None]
                 == frame.class_names[columns][None, :]).astype(np.float64)  # (N, K')
        cosine, has = _cosines(tracks, frame, columns)
        numerator = cfg.iou_weight * iou + cfg.class_weight * agree + cfg.embedding_weight * np.where(
            has, np.clip(cosine, 0.0, 1.0), 0.0)
        denominator = cfg.iou_weight + cfg.class_weight + cfg.embedding_weight * has
        return numerator / denominator, iou, contained, np.where(has, cosine, -np.inf)

    def _predicted_mask(self, track: _Track, grid: tuple[int, int], stamp: float) -> np.ndarray:
        """The track's mask on ``grid`` shifted by its velocity times the time since it was last seen."""
        mask = _on_grid(track.mask, grid)
        dy, dx = np.rint(track.velocity * (stamp - track.last_seen_s) * np.array(grid)).astype(int).tolist()
        return shift_mask(mask, dy, dx) if (dy or dx) else mask

    def _refresh(self, track: _Track, frame: ObservationFrame, k: int, observation: Observation,
                 stamp: float) -> None:
        """Update a matched track with observation ``k``."""
        cfg = self._config
        self._move(track, frame, k, stamp)
        if frame.has_embedding[k]:
            new, old, keep = frame.embeddings[k], track.embedding, cfg.embedding_momentum
            fresh = old is None or old.shape != new.shape
            track.embedding = new.copy() if fresh else unit(keep * old + (1.0 - keep) * new)
        track.class_name, track.score, track.bbox = observation.class_name, float(observation.score), observation.bbox
        track.hits += 1
        track.last_seen_s = stamp
        if track.state is TrackState.LOST or track.hits >= cfg.confirm_hits:
            self._confirm(track)

    def _move(self, track: _Track, frame: ObservationFrame, k: int, stamp: float) -> None:
        """New mask, centroid and velocity of a matched track. A tracked (not lost) track whose observation is
        much smaller than its predicted mask and lies mostly inside it is partly occluded: it keeps its own
        shape, moved to the predicted place, and its velocity. An observation outside the prediction re-anchors
        the track, so a wrong velocity cannot carry it away."""
        cfg = self._config
        dt = stamp - track.last_seen_s
        if track.state is not TrackState.LOST:
            predicted = self._predicted_mask(track, frame.masks.shape[1:], stamp)  # (gh, gw)
            seen = frame.masks[k]
            area = seen.sum()
            smaller = area < cfg.occluded_area_ratio * predicted.sum()
            inside = cfg.occluded_containment > 0 and (seen & predicted).sum() >= cfg.occluded_containment * area
            if smaller and inside and area > 0:
                track.centroid = track.centroid + track.velocity * dt
                track.mask = predicted
                return
        centroid = frame.centroids[k]
        known = np.isfinite(centroid).all() and np.isfinite(track.centroid).all()
        if cfg.velocity_momentum < 1.0 and dt > 0 and known:
            measured = (centroid - track.centroid) / dt
            momentum = 0.0 if track.hits == 1 else cfg.velocity_momentum  # the first measurement is taken whole
            track.velocity = momentum * track.velocity + (1.0 - momentum) * measured
        if np.isfinite(centroid).all():
            track.centroid = centroid.copy()
        track.mask = frame.masks[k].copy()  # the track keeps no view of the frame

    def _start(self, frame: ObservationFrame, k: int, observation: Observation, stamp: float) -> _Track:
        track = _Track(track_id=0, state=TrackState.TENTATIVE, mask=frame.masks[k].copy(),
                       centroid=frame.centroids[k].copy(), velocity=np.zeros(2),
                       embedding=frame.embeddings[k].copy() if frame.has_embedding[k] else None,
                       class_name=observation.class_name, score=float(observation.score), bbox=observation.bbox,
                       hits=1, first_seen_s=stamp, last_seen_s=stamp)
        if self._config.confirm_hits <= 1:
            self._confirm(track)
        self._tracks.append(track)
        return track

    def _confirm(self, track: _Track) -> None:
        if track.track_id == 0:
            track.track_id = next(self._ids)
        track.state = TrackState.CONFIRMED


def assign(cost: np.ndarray, admissible: np.ndarray, cost_limit: float) -> tuple[np.ndarray, np.ndarray]:
    """Minimum-cost assignment of rows to columns where leaving a row or a column unmatched costs
    ``cost_limit / 2`` (lapjv's ``cost_limit``, as ByteTrack matches): every admissible pair is worth taking on
    its own, but two good pairs are not traded for more, worse ones (a plain assignment with a large cost for
    inadmissible pairs maximises the number of matches first and swaps ids to get one more). Solved with
    scipy on the (N + K) x (K + N) matrix [[cost, unmatched rows], [unmatched columns, 0]].
    cost, admissible: (N, K). Returns the matched (rows, cols), admissible pairs only."""
    n, k = cost.shape
    half = cost_limit / 2.0 + UNMATCHED_TIE_BREAK
    extended = np.full((n + k, k + n), INADMISSIBLE_COST)
    extended[:n, :k] = np.where(admissible, cost, INADMISSIBLE_COST)
    extended[:n, k:][np.diag_indices(n)] = half  # row r left unmatched
    extended[n:, :k][np.diag_indices(k)] = half  # column c left unmatched
    extended[n:, k:] = 0.0
    rows, cols = linear_sum_assignment(extended)
    keep = (rows < n) & (cols < k)
    rows, cols = rows[keep], cols[keep]
    keep = admissible[rows, cols]
    return rows[keep], cols[keep]


def _on_grid(mask: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """A track's (h, w) mask on the comparison grid (the grid changes with mask_long_side or the frame size)."""
    return mask if mask.shape == grid else resize_nearest(mask, *grid)


def _cosines(tracks: list[_Track], frame: ObservationFrame,
             columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, K') cosine and whether both sides have comparable embeddings."""
    dim = frame.embeddings.shape[1]
    usable = np.array([t.embedding is not None and t.embedding.shape[0] == dim for t in tracks])  # (N,)
    rows = np.zeros((len(tracks), dim), np.float32)
    for n in np.flatnonzero(usable):
        rows[n] = tracks[n].embedding
    cosine = (rows @ frame.embeddings[columns].T).astype(np.float64)  # (N, K')
    return cosine, usable[:, None] & frame.has_embedding[columns][None, :]

