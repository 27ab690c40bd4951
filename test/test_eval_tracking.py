"""Tracking / 3D metrics on synthetic cases with known answers (no tracker involved)."""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from maskclip_ros.evaluation import tracking as T

H, W, SIDE = 60, 80, 10
CFG = T.TrackingEvalConfig(iou_threshold=0.5, min_gt_area=0)


def _box(x: int, y: int, side: int = SIDE) -> np.ndarray:
    mask = np.zeros((H, W), bool)
    mask[y:y + side, x:x + side] = True
    return mask


def _obj(track_id: int, x: int, y: int, z: float | None = 2.0, side: int = SIDE) -> T.TrackedObject:
    centroid = None if z is None else np.array([x / 100.0, y / 100.0, z])
    return T.TrackedObject(mask=_box(x, y, side), track_id=track_id, centroid=centroid)


def _two_objects(t: int) -> list[T.TrackedObject]:
    """Two objects moving apart: track 1 rightwards along y=5, track 2 leftwards along y=40."""
    return [_obj(1, 2 + 2 * t, 5), _obj(2, 60 - 2 * t, 40)]


def _run(frames, config=CFG, name="s") -> dict:
    return T.evaluate_tracking([(name, frames)], config=config)


def _relabel(objects, mapping) -> list[T.TrackedObject]:
    return [dataclasses.replace(o, track_id=mapping[o.track_id]) for o in objects]


def test_perfect_tracks():
    frames = [(_two_objects(t), _relabel(_two_objects(t), {1: 11, 2: 12})) for t in range(20)]
    r = _run(frames)
    assert r["idf1"] == 1 and r["mota"] == 1 and r["id_switches"] == 0
    assert r["num_frames"] == 20 and r["num_gt"] == 40 and r["num_matches"] == 40
    assert math.isclose(r["hota"], 1.0) and math.isclose(r["mean_iou"], 1.0)
    assert r["centroid_error_median"] == 0 and r["centroid_error_rel_median"] == 0 and r["centroid_pairs"] == 40


def test_new_id_midway_is_one_switch():
    frames = [(_two_objects(t), _relabel(_two_objects(t), {1: 11, 2: 12 if t < 10 else 13})) for t in range(20)]
    r = _run(frames)
    assert r["id_switches"] == 1 and r["id_switches_per_100_frames"] == 5.0
    assert r["mota"] == pytest.approx(1 - 1 / 40)
    assert r["idf1"] == pytest.approx(30 / 40)  # track 2 keeps one id for 10 of its 20 frames
    assert r["hota"] < 1


def test_swapped_ids_are_two_switches():
    frames = [(_two_objects(t), _relabel(_two_objects(t), {1: 11, 2: 12} if t < 10 else {1: 12, 2: 11}))
              for t in range(20)]
    r = _run(frames)
    assert r["id_switches"] == 2 and r["idf1"] == pytest.approx(0.5)


def test_missed_object_lowers_mota_not_precision():
    frames = [(_two_objects(t), _relabel(_two_objects(t)[:1] if t % 2 else _two_objects(t), {1: 11, 2: 12}))
              for t in range(20)]
    r = _run(frames)
    assert r["num_misses"] == 10 and r["num_false_positives"] == 0
    assert r["mota"] == pytest.approx(1 - 10 / 40) and r["recall"] == pytest.approx(30 / 40)
    assert r["precision"] == 1 and r["id_switches"] == 0


def test_false_positive_and_low_iou():
    ghost = _obj(99, 30, 20)
    frames = [(_two_objects(t), _relabel(_two_objects(t), {1: 11, 2: 12}) + [ghost]) for t in range(10)]
    # shifted by 6 pixels: IoU 40/160 = 0.25 with the truth, no match
    frames += [(_two_objects(t)[:1], [_obj(1, 2 + 2 * t + 6, 5)]) for t in range(10, 20)]
    r = _run(frames)
    assert r["num_false_positives"] == 10 + 10 and r["num_misses"] == 10
    assert r["mota"] == pytest.approx(1 - 30 / 30)


def test_centroid_errors():
    frames = []
    for t in range(10):
        gt = _two_objects(t)
        off = np.array([0.0, 0.0, 0.02 * (t + 1)])  # 2 cm .. 20 cm along the optical axis
        pred = [dataclasses.replace(gt[0], track_id=5, centroid=gt[0].centroid + off),
                dataclasses.replace(gt[1], track_id=6, centroid=None)]
        frames.append((gt, pred))
    r = _run(frames)
    errors = 0.02 * np.arange(1, 11)
    assert r["centroid_pairs"] == 10 and r["centroid_missing"] == 10
    assert r["centroid_error_median"] == pytest.approx(np.median(errors))
    assert r["centroid_error_p90"] == pytest.approx(np.percentile(errors, 90))
    assert r["centroid_error_rel_median"] == pytest.approx(np.median(errors) / 2.0)  # gt depth 2 m


def test_frame_skip_counts_evaluated_frames():
    assert list(T.frame_indices(10, 3)) == [0, 3, 6, 9]
    assert list(T.skip_frames(iter("abcdefg"), 3)) == ["a", "d", "g"]
    with pytest.raises(ValueError):
        T.frame_indices(10, 0)
    all_frames = [(_two_objects(t), _relabel(_two_objects(t), {1: 11, 2: 12 if t < 10 else 13})) for t in range(30)]
    r = _run(T.skip_frames(all_frames, 3))
    assert r["num_frames"] == 10 and r["id_switches"] == 1 and r["id_switches_per_100_frames"] == 10.0


def test_small_ground_truth_is_ignored():
    cfg = T.TrackingEvalConfig(iou_threshold=0.5, min_gt_area=50)
    tiny = _obj(3, 40, 20, side=5)  # 25 pixels
    frames = [(_two_objects(t) + [tiny], _relabel(_two_objects(t) + [tiny], {1: 11, 2: 12, 3: 13}))
              for t in range(5)]
    r = _run(frames, config=cfg)
    assert r["num_gt"] == 10 and r["num_false_positives"] == 0 and r["mota"] == 1
    unmatched = _run([(g, p[:2]) for g, p in frames], config=cfg)  # the tiny one missed: not counted
    assert unmatched["num_misses"] == 0


def test_empty_frames_and_duplicates():
    frames = [([], []), (_two_objects(1), _relabel(_two_objects(1), {1: 4, 2: 5})), ([], [])]
    r = _run(frames)
    assert r["num_frames"] == 3 and r["mota"] == 1
    with pytest.raises(ValueError):
        _run([(_two_objects(0), _relabel(_two_objects(0), {1: 4, 2: 4}))])
    with pytest.raises(ValueError):
        T.TrackingEvaluator(config=CFG).compute()


def test_sequences_combine():
    ev = T.TrackingEvaluator(config=CFG)
    for t in range(10):
        ev.update("a", _two_objects(t), _relabel(_two_objects(t), {1: 1, 2: 2}))
        ev.update("b", _two_objects(t), _relabel(_two_objects(t), {1: 1, 2: 2 if t < 5 else 3}))
    r = ev.compute()
    assert r["num_sequences"] == 2 and r["num_frames"] == 20 and r["id_switches"] == 1
    assert r["per_sequence"]["a"]["idf1"] == 1 and r["per_sequence"]["b"]["id_switches"] == 1
    assert r["per_sequence"]["a"]["idf1"] > r["idf1"] > r["per_sequence"]["b"]["idf1"]


def test_motmetrics_agrees_with_trackeval():
    """MOTA, IDF1 and ID switches from motmetrics equal trackeval's CLEAR / Identity on the same frames."""
    from trackeval.metrics import CLEAR, Identity

    rng = np.random.default_rng(0)
    start, speed = rng.integers(0, W - SIDE, 6), rng.integers(-3, 4, 6)
    ev = T.TrackingEvaluator(config=CFG)
    ids = np.arange(1, 7) + 100
    for t in range(40):
        # one object per 10-pixel lane (no ambiguous overlaps), bouncing between the left and right borders
        xs = [(W - SIDE) - abs((x + t * v) % (2 * (W - SIDE)) - (W - SIDE)) for x, v in zip(start, speed)]
        gt = [_obj(k + 1, int(x), SIDE * k) for k, x in enumerate(xs)]
        if rng.random() < 0.15:
            ids[rng.integers(6)] = 200 + t  # a new id: an ID switch
        # jittered by up to 5 pixels (IoU < 0.5 beyond 3: a miss and a false positive), some missed
        pred = [T.TrackedObject(mask=np.roll(g.mask, int(rng.integers(-5, 6)), axis=1), track_id=int(ids[k]))
                for k, g in enumerate(gt) if rng.random() > 0.15]
        ev.update("r", gt, pred)
    r = ev.compute()
    data = ev.trackeval_data("r")
    clear = CLEAR({"THRESHOLD": 0.5, "PRINT_CONFIG": False}).eval_sequence(data)
    ident = Identity({"THRESHOLD": 0.5, "PRINT_CONFIG": False}).eval_sequence(data)
    assert r["id_switches"] == clear["IDSW"] and r["num_misses"] == clear["CLR_FN"]
    assert r["mota"] == pytest.approx(clear["MOTA"]) and r["idf1"] == pytest.approx(ident["IDF1"])
    assert r["id_switches"] >= 3 and r["num_misses"] >= 10 and r["num_false_positives"] >= 5
    assert 0 < r["hota"] < 1


def test_objects_from_generated_frame():
    from maskclip_ros.data import sequences as S

    panoptic = np.full((H, W), 1, np.int32)
    panoptic[5:15, 5:15] = S.THING_ID_OFFSET + 7
    segments = [{"id": 1, "isthing": 0, "track_id": None, "centroid_xyz": [0, 0, 9.0]},
                {"id": S.THING_ID_OFFSET + 7, "isthing": 1, "track_id": 7, "centroid_xyz": [0.1, 0.2, 1.5]}]
    objects = T.objects_from_panoptic(panoptic, segments)
    assert len(objects) == 1 and objects[0].track_id == 7 and objects[0].mask.sum() == 100
    assert np.allclose(objects[0].centroid, [0.1, 0.2, 1.5])


def test_write_results(tmp_path):
    good = _run([(_two_objects(t), _relabel(_two_objects(t), {1: 1, 2: 2})) for t in range(5)])
    no_3d = _run([(_two_objects(t), [dataclasses.replace(o, centroid=None) for o in _two_objects(t)])
                  for t in range(5)])
    json_path, md_path = T.write_results(tmp_path, {"gt": dict(good, frame_skip=3), "regions": no_3d})
    data = json.loads(json_path.read_text())
    assert set(data) == {"gt", "regions"} and data["gt"]["frame_skip"] == 3
    for entry in data.values():
        assert set(T.SUMMARY_KEYS) <= set(entry)
    assert data["regions"]["centroid_error_rel_median"] is None  # NaN -> null
    md = md_path.read_text()
    assert "| gt |" in md and "| regions |" in md and "IDF1" in md
    with pytest.raises(KeyError):
        T.write_results(tmp_path, {"bad": {"idf1": 1.0}})


def test_ground_truth_tracker_on_generated_sequence():
    """GT masks relabelled as a tracker's output, 3D from the noisy depth (median): IDF1 1, small 3D error."""
    from maskclip_ros.data import sequences as S
    from maskclip_ros.data import world

    cfg = S.SequenceConfig(frames=15, fps=10.0, min_things=3, max_things=5, context_things=1, min_speed=40.0,
                           max_speed=90.0, curved_prob=0.5, max_turn=30.0, max_spin=20.0, enter_prob=0.3,
                           leave_prob=0.3, pan_prob=0.5, max_pan=20.0, focal=260.0, min_depth=1.0, max_depth=4.0,
                           ground_near=4.5, horizon=-0.25, wall_depth=6.0, far_depth=20.0, depth_noise=0.01,
                           depth_dropout=0.05)
    world_cfg = dataclasses.replace(world.default_world_config(), width=320, height=240, min_size=28, max_size=56)
    seq = S.generate_sequence(1, 0, cfg, world_cfg)
    cam = seq.camera

    def predict(frame):
        out = []
        for o in T.objects_from_panoptic(frame.panoptic, frame.segments):
            v, u = np.nonzero(o.mask & (frame.depth > 0))
            z = np.median(frame.depth[v, u])
            out.append(T.TrackedObject(mask=o.mask, track_id=o.track_id + 50,
                                       centroid=cam.backproject(u.mean(), v.mean(), z)))
        return out

    def frames():
        for t in T.frame_indices(len(seq), 3):
            frame = seq[t]
            yield T.objects_from_panoptic(frame.panoptic, frame.segments), predict(frame)

    r = _run(frames())
    assert r["num_frames"] == 5 and r["num_gt"] > 0
    assert r["idf1"] == 1 and r["mota"] == 1 and r["id_switches"] == 0
    assert r["centroid_error_rel_median"] < 0.01 and r["centroid_missing"] == 0


SMALL_WORLD = ["world.width=192", "world.height=144", "world.min_size=28", "world.max_size=44",
               "sequences.focal=156.0", "clip.short_side=144", "proposals.regions.work_long_side=96"]


def test_eval_tracking_command_end_to_end(tmp_path):
    """The command on one tiny sequence: results.json has one entry per source with the summary keys, and the
    run went through depth (no depth problems) with ground-truth masks giving near-exact 3D centroids."""
    from maskclip_ros.cli import main

    out = tmp_path / "run"
    argv = ["eval-tracking", "--out", str(out), "--sequences", "1", "--frames", "9", "--frame-skip", "3",
            "--sources", "gt", "gt_things", "oracle", "regions", "--threads", "1", "--no-progress"]
    assert main([*argv, *(a for s in SMALL_WORLD for a in ("--set", s))]) == 0
    data = json.loads((out / "results.json").read_text())
    assert list(data) == ["gt", "gt_things", "oracle", "regions"]
    for source, entry in data.items():
        assert set(T.SUMMARY_KEYS) <= set(entry) and entry["num_frames"] == 3 and entry["frame_skip"] == 3
        assert entry["depth_problems"] == {} and entry["num_gt"] > 0
    things = data["gt_things"]
    assert things["num_false_positives"] == 0  # only ground-truth thing masks were proposed
    oracle = data["oracle"]  # perfect detections: every ground-truth thing is matched, with 3D
    assert oracle["num_misses"] == 0 and oracle["num_false_positives"] == 0 and oracle["mota"] > 0.8
    assert oracle["centroid_pairs"] == oracle["num_gt"] and oracle["centroid_error_rel_median"] < 0.01
    md = (out / "results.md").read_text()
    assert "| gt_things |" in md and "eval-tracking" in md


def test_runner_options_are_checked():
    from maskclip_ros.evaluation.tracking_runner import EvalTrackingConfig

    with pytest.raises(ValueError, match="sources"):
        EvalTrackingConfig(sources=("gt", "yolo"), num_sequences=1, frames=3, seed=0, frame_skip=3, matching=CFG)
    with pytest.raises(ValueError, match="frame_skip"):
        EvalTrackingConfig(sources=("gt",), num_sequences=1, frames=3, seed=0, frame_skip=0, matching=CFG)


def test_targets_report():
    from maskclip_ros.evaluation.tracking_runner import targets_report

    targets = {"gt_idf1": 0.95, "gt_switches_per_100": 1.0, "regions_idf1": 0.7, "centroid_rel_median": 0.02}
    gt = {"idf1": 0.97, "id_switches_per_100_frames": 2.0, "centroid_error_rel_median": float("nan")}
    lines = targets_report({"gt": gt}, targets)
    assert len(lines) == 3 and lines[0].startswith("[met] IDF1") and lines[1].startswith("[MISSED] ID switches")
    assert lines[2].startswith("[MISSED] median 3D")  # no 3D pairs is not a pass
