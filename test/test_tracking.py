"""The thing-segment tracker (maskclip_ros.tracking.tracker): ByteTrack-style matching on masks."""
from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest

from maskclip_ros.tracking.observations import Observation, mask_iou, thing_observations
from maskclip_ros.tracking.tracker import Tracker, TrackerConfig, TrackState

GRID = (60, 80)  # mask size used by most tests
DT = 0.1  # seconds between camera frames
EMBED_DIM = 32


def make_config(**changes) -> TrackerConfig:
    values = dict(enabled=True, high_score=0.5, low_score=0.1, iou_weight=0.5, class_weight=0.2,
                  embedding_weight=0.3, min_iou=0.2, min_containment=1.0, reid_similarity=0.85, min_similarity=0.3,
                  second_stage_min_iou=0.3, confirm_hits=2, max_age_s=2.0, embedding_momentum=0.8,
                  velocity_momentum=0.5, occluded_area_ratio=0.5, occluded_containment=0.8, mask_long_side=80)
    return TrackerConfig(**{**values, **changes})


def box_mask(row: float, col: float, size: int = 12, shape: tuple[int, int] = GRID) -> np.ndarray:
    """(h, w) bool square of ``size`` cells with top-left corner at (row, col) (rounded)."""
    mask = np.zeros(shape, bool)
    r, c = int(round(row)), int(round(col))
    mask[max(r, 0):max(r + size, 0), max(c, 0):max(c + size, 0)] = True
    return mask


def embeddings(count: int, seed: int = 0) -> np.ndarray:
    """(count, E) random unit vectors (nearly orthogonal)."""
    vectors = np.random.default_rng(seed).normal(size=(count, EMBED_DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def noisy(vector: np.ndarray, amount: float, seed: int) -> np.ndarray:
    """A perturbed copy of a unit vector (cosine to it ~ 1 - amount^2 / 2)."""
    out = vector + amount * np.random.default_rng(seed).normal(size=vector.shape).astype(np.float32) / np.sqrt(
        vector.size)
    return out / np.linalg.norm(out)


def obs(mask: np.ndarray, name: str = "mug", score: float = 0.9, embedding: np.ndarray | None = None):
    return Observation(mask=mask, class_name=name, score=score, embedding=embedding, bbox=(0, 0, 1, 1))


def run(tracker: Tracker, frames: list[list[Observation]], stamps=None) -> list[list[int]]:
    stamps = stamps if stamps is not None else [i * DT for i in range(len(frames))]
    return [tracker.update(frame, stamp) for frame, stamp in zip(frames, stamps)]


def test_track_is_confirmed_after_confirm_hits_and_keeps_its_id():
    tracker = Tracker(config=make_config(confirm_hits=3))
    ids = run(tracker, [[obs(box_mask(20, 10 + i))] for i in range(6)])
    assert ids == [[0], [0], [1], [1], [1], [1]]
    (track,) = tracker.tracks()
    assert track.state is TrackState.CONFIRMED and track.hits == 6 and track.first_seen_s == 0.0


def test_confirm_hits_one_gives_ids_at_once():
    tracker = Tracker(config=make_config(confirm_hits=1))
    assert tracker.update([obs(box_mask(5, 5)), obs(box_mask(30, 50))], 0.0) == [1, 2]


def crossing(tracker: Tracker, embedded: bool) -> list[tuple[int, int]]:
    """A moves right, B moves left 3 rows lower; A is in front, so B is mostly hidden while they cross.
    Returns (id of A, id of B) per frame; the input order alternates so ids cannot ride on list positions."""
    emb = embeddings(2) if embedded else [None, None]
    out = []
    for i in range(14):
        a = box_mask(20, 5 + 5 * i)
        b = box_mask(23, 65 - 5 * i) & ~a
        pair = [obs(a, embedding=emb[0]), obs(b, embedding=emb[1])]
        ids = tracker.update(pair if i % 2 else pair[::-1], i * DT)
        out.append(tuple(ids if i % 2 else ids[::-1]))
    return out


@pytest.mark.parametrize("embedded", [True, False])
def test_two_objects_crossing_keep_their_ids(embedded):
    ids = crossing(Tracker(config=make_config()), embedded)
    assert len(set(ids[1:])) == 1 and 0 not in ids[1]


def test_crossing_without_embeddings_needs_the_motion_model():
    """The control: the same crossing without embeddings and without motion swaps the ids."""
    ids = crossing(Tracker(config=make_config(velocity_momentum=1.0)), embedded=False)
    assert len(set(ids[1:])) > 1


def test_occlusion_and_reappearance_is_refound_by_embedding():
    tracker = Tracker(config=make_config())
    mug, other = embeddings(2)
    frames = [[obs(box_mask(20, 10), embedding=noisy(mug, 0.2, i))] for i in range(3)]
    frames += [[] for _ in range(8)]  # hidden for 0.8 s (< max_age_s)
    frames += [[obs(box_mask(22, 50), embedding=noisy(mug, 0.2, 10 + i)),  # reappears elsewhere
                obs(box_mask(40, 5), embedding=other)] for i in range(3)]
    ids = run(tracker, frames)
    assert ids[2] == [1]
    assert all(f == [] for f in ids[3:11])
    assert ids[11] == [1, 0] and ids[12] == [1, 2]  # the mug keeps id 1; the newcomer is new


def test_track_is_lost_while_hidden_and_dropped_after_max_age():
    tracker = Tracker(config=make_config(max_age_s=0.5))
    mug, = embeddings(1)
    run(tracker, [[obs(box_mask(20, 10), embedding=mug)]] * 2)
    tracker.update([], 0.3)
    assert [t.state for t in tracker.tracks()] == [TrackState.LOST]
    tracker.update([], 0.7)  # 0.6 s after the last sighting, 0.1 s past max_age_s
    tracker.update([], 0.75)
    assert tracker.tracks() == []
    ids = run(tracker, [[obs(box_mask(20, 10), embedding=mug)]] * 2, stamps=[0.8, 0.9])
    assert ids == [[0], [2]]  # same place, same embedding, but too late: a new id, never id 1 again


def test_lost_track_refound_by_iou_without_embeddings():
    tracker = Tracker(config=make_config())
    run(tracker, [[obs(box_mask(20, 10))]] * 3)
    tracker.update([], 0.3)
    assert tracker.update([obs(box_mask(21, 11))], 0.4) == [1]


def test_vocabulary_change_keeps_ids():
    tracker = Tracker(config=make_config())
    emb = embeddings(2)
    frames = []
    for i in range(12):
        names = ("mug", "dog") if i < 6 else ("cup", "animal")  # the vocabulary changes at frame 6
        frames.append([obs(box_mask(10, 5 + i), names[0], embedding=emb[0]),
                       obs(box_mask(40, 60 - i), names[1], embedding=emb[1])])
    ids = run(tracker, frames)
    assert all(f == [1, 2] for f in ids[1:])
    assert {t.class_name for t in tracker.tracks()} == {"cup", "animal"}


def test_vocabulary_change_keeps_ids_without_embeddings():
    tracker = Tracker(config=make_config())
    frames = [[obs(box_mask(10, 5 + i), "mug" if i < 4 else "cup")] for i in range(8)]
    assert [f[0] for f in run(tracker, frames)][1:] == [1] * 7


def test_empty_frames():
    tracker = Tracker(config=make_config())
    assert tracker.update([], 0.0) == []
    tracker.update([obs(box_mask(10, 10))], 0.1)  # tentative
    assert tracker.update([], 0.2) == []
    assert tracker.tracks() == []  # a tentative track that misses is dropped
    run(tracker, [[obs(box_mask(10, 10))]] * 2, stamps=[0.3, 0.4])
    assert tracker.update([], 0.5) == [] and tracker.tracks()[0].state is TrackState.LOST
    assert tracker.update([obs(box_mask(10, 10))], 0.6) == [1]


def test_ids_are_never_reused_even_after_reset():
    tracker = Tracker(config=make_config(confirm_hits=1, max_age_s=0.0))
    seen = []
    for round_ in range(5):
        seen += tracker.update([obs(box_mask(10, 10)), obs(box_mask(40, 60))], round_ * 1.0)
        tracker.update([], round_ * 1.0 + 0.1)  # both lost, then expired at the next update
        if round_ == 2:
            tracker.reset()
    assert seen == list(range(1, 11))
    tracker.reset()
    assert tracker.update([obs(box_mask(10, 10))], 0.0) == [11]  # the clock restarts, ids do not


def test_low_score_second_stage_continues_but_never_starts_tracks():
    tracker = Tracker(config=make_config())
    run(tracker, [[obs(box_mask(20, 10))]] * 2)
    # Partly occluded and unsure (0.1 <= 0.3 < 0.5): continues track 1. A low-score stranger gets nothing.
    ids = tracker.update([obs(box_mask(20, 11) & ~box_mask(20, 18, 6), score=0.3),
                          obs(box_mask(45, 60), score=0.3)], 0.2)
    assert ids == [1, 0]
    assert len(tracker.tracks()) == 1
    assert tracker.update([obs(box_mask(20, 12), score=0.05)], 0.3) == [0]  # below low_score: ignored
    assert tracker.tracks()[0].state is TrackState.LOST
    # A lost track is not continued by a low-score observation (stage two is for tracked tracks only) ...
    assert tracker.update([obs(box_mask(20, 12), score=0.3)], 0.4) == [0]
    # ... but by a high-score one.
    assert tracker.update([obs(box_mask(20, 12), score=0.8)], 0.5) == [1]


def test_second_stage_needs_iou():
    tracker = Tracker(config=make_config())
    mug, = embeddings(1)
    run(tracker, [[obs(box_mask(20, 10), embedding=mug)]] * 2)
    # Same embedding but far away and low score: stage two matches on IoU only.
    assert tracker.update([obs(box_mask(20, 60), score=0.3, embedding=mug)], 0.2) == [0]


def test_skipped_frames_with_embeddings_and_irregular_stamps():
    """Every 2nd..4th camera frame processed; the object moves 4 cells a frame, so consecutive processed
    masks barely overlap; the embedding carries the track."""
    tracker = Tracker(config=make_config())
    mug, = embeddings(1)
    processed = [0, 3, 5, 9, 12, 14]
    ids = [tracker.update([obs(box_mask(20, 2 + 4 * f), embedding=noisy(mug, 0.2, f))], f * DT)
           for f in processed]
    assert [i[0] for i in ids][1:] == [1] * 5


@pytest.mark.parametrize("momentum, keeps", [(0.5, True), (1.0, False)])
def test_skipped_frames_motion_model(momentum, keeps):
    """No embeddings: after two close frames the velocity predicts the object through frame skips of up to
    3 frames, where the raw masks overlap too little (IoU 0.14 < min_iou); momentum 1 = no motion model."""
    tracker = Tracker(config=make_config(velocity_momentum=momentum))
    processed = [0, 1, 4, 7, 9, 12]
    ids = [tracker.update([obs(box_mask(20, 2 + 4 * f, size=16))], f * DT)[0] for f in processed]
    assert (ids[1:] == [1] * 5) is keeps


def test_masks_at_another_resolution_still_match():
    tracker = Tracker(config=make_config())
    tracker.update([obs(box_mask(20, 10, shape=(60, 80)))], 0.0)
    big = np.kron(box_mask(20, 11, shape=(60, 80)), np.ones((4, 4), bool))  # (240, 320)
    assert tracker.update([obs(big)], 0.1) == [1]


def test_embedding_dimension_change_is_ignored_not_fatal():
    tracker = Tracker(config=make_config())
    run(tracker, [[obs(box_mask(20, 10), embedding=embeddings(1)[0])]] * 2)
    other = np.ones(16, np.float32)
    assert tracker.update([obs(box_mask(20, 11), embedding=other)], 0.2) == [1]


def test_stamps_must_not_go_back():
    tracker = Tracker(config=make_config())
    tracker.update([], 1.0)
    tracker.update([], 1.0)  # the same stamp twice is fine
    with pytest.raises(ValueError, match="back in time"):
        tracker.update([], 0.5)


def test_bad_observations_are_rejected():
    with pytest.raises(ValueError, match="bool"):
        obs(box_mask(1, 1).astype(np.uint8))
    with pytest.raises(ValueError, match="score"):
        obs(box_mask(1, 1), score=1.5)
    with pytest.raises(ValueError, match="embedding"):
        obs(box_mask(1, 1), embedding=np.array([np.nan, 1.0]))
    tracker = Tracker(config=make_config())
    with pytest.raises(ValueError, match="one shape"):
        tracker.update([obs(box_mask(1, 1)), obs(box_mask(1, 1, shape=(30, 40)))], 0.0)


def test_inputs_are_not_modified():
    tracker = Tracker(config=make_config())
    mask, emb = box_mask(20, 10), embeddings(1)[0] * 3.0
    before = (mask.copy(), emb.copy())
    run(tracker, [[obs(mask, embedding=emb)]] * 3)
    np.testing.assert_array_equal(mask, before[0])
    np.testing.assert_array_equal(emb, before[1])


@pytest.mark.parametrize("change", [dict(low_score=0.6), dict(high_score=1.5), dict(confirm_hits=0),
                                    dict(confirm_hits=2.0), dict(mask_long_side=True), dict(max_age_s=-1.0),
                                    dict(iou_weight=0.0, class_weight=0.0), dict(embedding_weight=-0.1),
                                    dict(occluded_containment=1.2), dict(reid_similarity="high"),
                                    dict(class_weight=11.0), dict(enabled=1)])
def test_config_validation(change):
    with pytest.raises(ValueError, match="tracking."):
        make_config(**change)


def test_config_has_no_defaults():
    assert all(f.default is dataclasses.MISSING for f in dataclasses.fields(TrackerConfig))


def test_set_config_applies_from_the_next_update():
    tracker = Tracker(config=make_config(confirm_hits=5))
    tracker.update([obs(box_mask(20, 10))], 0.0)
    tracker.set_config(make_config(confirm_hits=2))
    assert tracker.update([obs(box_mask(20, 10))], 0.1) == [1]


def test_mask_iou_matches_a_direct_computation():
    rng = np.random.default_rng(3)
    a, b = rng.random((5, 200)) < 0.3, rng.random((7, 200)) < 0.5
    a[0] = False  # an empty mask
    iou = mask_iou(a.astype(np.float32), b.astype(np.float32))
    for i in range(5):
        for k in range(7):
            union = (a[i] | b[k]).sum()
            assert iou[i, k] == pytest.approx((a[i] & b[k]).sum() / union if union else 0.0)


def test_thing_observations_from_a_panoptic_frame():
    panoptic = np.zeros((120, 160), np.int32)
    panoptic[:40] = 1  # wall (stuff)
    panoptic[60:80, 20:60] = 2
    panoptic[90:110, 100:140] = 3
    segments = [SimpleNamespace(id=1, class_index=0, score=0.9, is_thing=False, bbox=(0, 0, 160, 40)),
                SimpleNamespace(id=2, class_index=1, score=0.8, is_thing=True, bbox=(20, 60, 40, 20)),
                SimpleNamespace(id=3, class_index=2, score=0.4, is_thing=True, bbox=(100, 90, 40, 20))]
    emb = embeddings(3)
    index, observations = thing_observations(panoptic, segments, ["wall", "mug", "dog"], emb, long_side=80)
    assert index == [1, 2]
    assert [o.class_name for o in observations] == ["mug", "dog"]
    assert observations[0].mask.shape == (60, 80) and observations[0].mask.sum() == 10 * 20
    np.testing.assert_array_equal(observations[1].embedding, emb[2])
    assert observations[1].score == pytest.approx(0.4) and observations[1].bbox == (100, 90, 40, 20)
    assert thing_observations(panoptic, segments[:1], ["wall"], None, long_side=80) == ([], [])


def test_object_entering_from_the_border_keeps_its_id():
    """A sliver at the right border grows into a full box moving left and down: IoU with the sliver is 0.14,
    but 28 of its 32 cells lie inside the next mask (containment 0.875)."""
    width = GRID[1]
    frames = [[obs(box_mask(20 + 2 * i, width - 2 - 10 * i, size=16))] for i in range(3)]  # 2, 12, 16 columns
    assert run(Tracker(config=make_config(confirm_hits=1, min_containment=0.8)), frames) == [[1], [1], [1]]
    assert run(Tracker(config=make_config(confirm_hits=1, min_containment=0.9)), frames)[1] == [2]


def test_lost_track_is_found_at_its_predicted_place():
    """Seen moving right for three frames, missed for two, then seen 25 cells further: no embedding, IoU with
    the last-seen mask is 0, but the velocity-predicted mask overlaps."""
    tracker = Tracker(config=make_config(confirm_hits=1))
    ids = run(tracker, [[obs(box_mask(20, 5 + 5 * i))] for i in range(3)] + [[], []] + [[obs(box_mask(20, 30))]])
    assert ids[-1] == [1] and ids[0] == [1]


def test_observation_without_a_grid_cell_is_not_tracked_and_steals_no_track():
    """A 1-pixel sliver (no cell on the 80-cell grid of a 320-pixel mask) with the tracked object's embedding."""
    tracker = Tracker(config=make_config(confirm_hits=1, min_iou=0.5))
    mug, = embeddings(1)
    big = (240, 320)
    run(tracker, [[obs(box_mask(80, 40 + 4 * i, size=48, shape=big), embedding=mug)] for i in range(2)])
    sliver = np.zeros(big, bool)
    sliver[200, 300] = True
    ids = tracker.update([obs(sliver, embedding=mug), obs(box_mask(80, 48, size=48, shape=big), embedding=mug)], 0.2)
    assert ids == [0, 1]


def test_assignment_prefers_better_pairs_to_more_pairs():
    """Track A's object (cost 0.35) and a sliver inside A's mask that B cannot reach: a plain assignment with a
    large cost for the inadmissible pair takes A-sliver + B-object (two matches, ids swapped); ``assign`` keeps
    A-object and leaves B and the sliver unmatched."""
    from scipy.optimize import linear_sum_assignment

    from maskclip_ros.tracking.tracker import INADMISSIBLE_COST, assign
    cost = np.array([[0.35, 0.80], [0.59, 0.99]])  # rows: tracks A, B; columns: A's object, the sliver
    admissible = np.array([[True, True], [True, False]])
    plain = linear_sum_assignment(np.where(admissible, cost, INADMISSIBLE_COST))
    assert plain[1].tolist() == [1, 0]  # the swap this guards against
    rows, cols = assign(cost, admissible, cost_limit=0.8)
    assert rows.tolist() == [0] and cols.tolist() == [0]


def test_assignment_takes_any_admissible_pair_alone_and_never_an_inadmissible_one():
    from maskclip_ros.tracking.tracker import assign
    rows, cols = assign(np.array([[0.8]]), np.array([[True]]), cost_limit=0.8)  # at the limit: still taken
    assert rows.tolist() == [0] and cols.tolist() == [0]
    rows, cols = assign(np.array([[0.1, 0.2]]), np.array([[False, False]]), cost_limit=0.8)
    assert rows.size == 0 and cols.size == 0
    rows, cols = assign(np.zeros((0, 3)), np.zeros((0, 3), bool), cost_limit=0.8)
    assert rows.size == 0
    rows, cols = assign(np.array([[0.5, 0.1], [0.1, 0.5]]), np.ones((2, 2), bool), cost_limit=0.8)
    assert sorted(zip(rows.tolist(), cols.tolist())) == [(0, 1), (1, 0)]
