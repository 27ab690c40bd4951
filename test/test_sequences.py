"""Generated sequences: determinism, stable track ids, motion in and out of view, occlusion by depth, depth
and intrinsics that back-project to the stored centroids, and the COCO-panoptic layout on disk."""
from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
import pytest

from maskclip_ros.data import sequences as S
from maskclip_ros.data import world
from maskclip_ros.data.coco_panoptic import PanopticDataset

FRAMES, FPS = 12, 10.0


def _cfg(**changes) -> S.SequenceConfig:
    values = dict(frames=FRAMES, fps=FPS, min_things=4, max_things=6, context_things=1, min_speed=40.0,
                  max_speed=100.0, curved_prob=0.5, max_turn=40.0, max_spin=30.0, enter_prob=0.3, leave_prob=0.3,
                  pan_prob=0.5, max_pan=30.0, focal=260.0, min_depth=1.0, max_depth=4.0, ground_near=4.5,
                  horizon=-0.25, wall_depth=6.0, far_depth=20.0, depth_noise=0.0, depth_dropout=0.0)
    values.update(changes)
    return S.SequenceConfig(**values)


@pytest.fixture(scope="module")
def world_cfg():
    # Half the node's frame size keeps the tests fast; the generator does not depend on the size.
    return dataclasses.replace(world.default_world_config(), width=320, height=240, min_size=28, max_size=56)


@pytest.fixture(scope="module")
def seqs(world_cfg):
    return [S.generate_sequence(3, i, _cfg(), world_cfg) for i in range(3)]


def _things(frame: S.Frame) -> dict[int, dict]:
    return {s["track_id"]: s for s in frame.segments if s["isthing"]}


def _digest(root) -> dict:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_any_order(world_cfg, tmp_path):
    cfg = _cfg(frames=4, depth_noise=0.01, depth_dropout=0.05)
    a, b = tmp_path / "a", tmp_path / "b"
    S.write_sequences(a, 2, seed=5, cfg=cfg, world_cfg=world_cfg)
    S.write_sequences(b, 2, seed=5, cfg=cfg, world_cfg=world_cfg)
    assert _digest(a) == _digest(b)
    seq = S.generate_sequence(5, 1, cfg, world_cfg)
    late_first = seq[3]
    for t in range(4):
        seq[t]
    again = S.generate_sequence(5, 1, cfg, world_cfg)[3]
    assert np.array_equal(late_first.image, again.image) and np.array_equal(late_first.depth, again.depth)
    assert late_first.segments == again.segments
    other = S.generate_sequence(6, 1, cfg, world_cfg)[3]
    assert not np.array_equal(other.image, late_first.image)


def test_frame_format(seqs, world_cfg):
    cats = {c["id"]: c for c in world.categories()}
    for seq in seqs:
        for frame in seq:
            assert frame.image.shape == (world_cfg.height, world_cfg.width, 3) and frame.image.dtype == np.uint8
            assert frame.panoptic.dtype == np.int32 and frame.depth.dtype == np.float32
            ids = [s["id"] for s in frame.segments]
            assert set(np.unique(frame.panoptic)) == set(ids) and 0 not in ids  # no void
            for seg in frame.segments:
                mask = frame.panoptic == seg["id"]
                ys, xs = np.nonzero(mask)
                assert seg["area"] == mask.sum()
                assert seg["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
                assert seg["isthing"] == cats[seg["category_id"]]["isthing"]
                assert (seg["track_id"] is None) == (not seg["isthing"])


def test_track_ids_stable_across_frames(seqs):
    for seq in seqs:
        seen = {}
        for frame in seq:
            for tid, seg in _things(frame).items():
                assert seg["id"] == S.THING_ID_OFFSET + tid
                identity = (seg["category_id"], seg["colour"], seg["depth_m"])
                assert seen.setdefault(tid, identity) == identity
        assert set(seen) <= {tr.track_id for tr in seq.tracks}
        assert len(seen) >= 2


def test_things_move_at_constant_speed(world_cfg):
    cfg = _cfg(enter_prob=0.0, leave_prob=0.0, curved_prob=0.0, max_spin=0.0, pan_prob=0.0, context_things=0)
    seq = S.generate_sequence(4, 0, cfg, world_cfg)
    for track in seq.tracks:
        xy = np.array([S.track_pose(seq, track, t / FPS)[:2] for t in range(FRAMES)])
        half = (track.size + S.MASK_MARGIN) / 2
        assert (xy >= half - 1e-9).all() and (xy[:, 0] <= world_cfg.width - half + 1e-9).all()
        steps = np.linalg.norm(np.diff(xy, axis=0), axis=1)
        bounced = steps < track.speed / FPS - 1e-6  # a step that folds at a border is shorter
        assert np.allclose(steps[~bounced], track.speed / FPS) and (~bounced).sum() >= FRAMES // 2


def _visible_tracks(frame) -> set[int]:
    return set(_things(frame))


def test_things_enter(world_cfg):
    cfg = _cfg(frames=30, enter_prob=1.0, leave_prob=0.0, curved_prob=0.0, context_things=0)
    entered = 0
    for i in range(3):
        seq = S.generate_sequence(8, i, cfg, world_cfg)
        frames = list(seq)
        later = set().union(*(_visible_tracks(f) for f in frames[1:]))
        for track in seq.tracks:
            assert track.enters and track.track_id not in _visible_tracks(frames[0])
            entered += track.track_id in later
    assert entered >= 3


def test_things_leave(world_cfg):
    cfg = _cfg(frames=30, enter_prob=0.0, leave_prob=1.0, curved_prob=0.0, context_things=0)
    left = 0
    for i in range(3):
        frames = list(S.generate_sequence(9, i, cfg, world_cfg))
        for track_id in _visible_tracks(frames[0]):
            left += 1
            assert track_id not in _visible_tracks(frames[-1])
    assert left >= 3


def test_occlusion_follows_depth(world_cfg):
    cfg = _cfg(min_things=8, max_things=8, enter_prob=0.0, leave_prob=0.0)
    big = dataclasses.replace(world_cfg, min_size=60, max_size=90)
    overlaps = 0
    for i in range(2):
        seq = S.generate_sequence(11, i, cfg, big)
        for t in (0, FRAMES // 2, FRAMES - 1):
            frame = seq[t]
            covers = np.stack([S.thing_mask(seq, tr, t / FPS) for tr in seq.tracks])  # (N, H, W)
            depths = np.asarray([tr.depth_m for tr in seq.tracks])
            nearest = np.where(covers, depths[:, None, None], np.inf).argmin(0)
            expected = np.where(covers.any(0), S.THING_ID_OFFSET + np.asarray(
                [tr.track_id for tr in seq.tracks])[nearest], -1)
            things = frame.panoptic >= S.THING_ID_OFFSET
            assert np.array_equal(np.where(things, frame.panoptic, -1), expected)
            # things stand in front of the stuff they cover; the depth image is theirs where they are seen
            x0 = seq.window_offset(t / FPS)
            stuff = seq.stuff_depth[:, x0:x0 + big.width]
            assert (frame.depth[things] < stuff[things]).all()
            assert np.allclose(frame.depth[things], depths[nearest][things])
            overlaps += int((covers.sum(0) >= 2).sum())
    assert overlaps > 0, "the test world must contain occlusions"


def test_backprojected_centroid_matches(seqs):
    for seq in seqs:
        cam = seq.camera
        frame = seq[FRAMES // 2]
        for seg in frame.segments:
            v, u = np.nonzero(frame.panoptic == seg["id"])
            points = cam.backproject(u, v, frame.depth[v, u])
            assert np.allclose(points.mean(0), seg["centroid_xyz"], atol=1e-6)
            if seg["isthing"]:
                assert np.allclose(points[:, 2], seg["depth_m"])


def test_depth_noise_and_dropout(world_cfg):
    cfg = _cfg(depth_noise=0.01, depth_dropout=0.1)
    frame = S.generate_sequence(3, 0, cfg, world_cfg)[0]
    invalid = frame.depth == 0
    assert 0.05 < invalid.mean() < 0.15
    for seg in frame.segments:
        if seg["isthing"] and seg["area"] > 200:
            values = frame.depth[(frame.panoptic == seg["id"]) & ~invalid]
            assert abs(np.median(values) / seg["depth_m"] - 1) < 0.005


def test_stuff_depth_planes(seqs):
    cfg = seqs[0].cfg
    for seq in seqs:
        for r, name in enumerate(seq.stuff_names):
            d = seq.stuff_depth[seq.regions == r]
            if name in S.WALL_STUFF:
                assert np.allclose(d, cfg.wall_depth)
            elif name not in S.GROUND_STUFF:
                assert np.allclose(d, cfg.far_depth)
    ground = S.stuff_planes(np.zeros((240, 4), np.int32), ["grass"], cfg)[:, 0]
    assert np.isclose(ground[-1], cfg.ground_near) and (np.diff(ground) <= 0).all()  # recedes upwards
    # a plane: the back-projected y of the rows is an affine function of the depth
    cam = seqs[0].camera
    rows = np.arange(240)
    y = (rows - cam.cy) * ground / cam.fy
    valid = ground < cfg.far_depth
    fit = np.polyfit(ground[valid], y[valid], 1)
    assert np.allclose(np.polyval(fit, ground[valid]), y[valid], atol=1e-6)


def test_pan_moves_background_and_context_things(world_cfg):
    cfg = _cfg(pan_prob=1.0, max_pan=30.0, context_things=2)
    for i in range(6):
        seq = S.generate_sequence(12, i, cfg, world_cfg)
        if abs(seq.pan) > 10 and any(tr.mode == "static" for tr in seq.tracks):
            break
    else:
        pytest.fail("no panning sequence with a context thing")
    first, last = seq.window_offset(0.0), seq.window_offset((FRAMES - 1) / FPS)
    assert abs(last - first) >= 10
    static = next(tr for tr in seq.tracks if tr.mode == "static")
    x0 = S.track_pose(seq, static, 0.0)[0]
    x1 = S.track_pose(seq, static, (FRAMES - 1) / FPS)[0]
    assert np.isclose(x0 - x1, last - first)
    stuff_last = np.where(seq[FRAMES - 1].panoptic < S.THING_ID_OFFSET, seq[FRAMES - 1].panoptic, 0)
    crop = seq.regions[:, last:last + world_cfg.width] + 1
    assert np.array_equal(stuff_last[stuff_last > 0], crop[stuff_last > 0])


def test_config_checks_depth_order():
    with pytest.raises(ValueError):
        _cfg(max_depth=5.0)  # behind the ground plane's nearest row
    with pytest.raises(ValueError):
        _cfg(far_depth=70.0)  # beyond 16-bit millimetres


def test_written_layout_readable(world_cfg, tmp_path):
    cfg = _cfg(frames=3)
    json_path = S.write_sequences(tmp_path, 2, seed=2, split="val", cfg=cfg, world_cfg=world_cfg)
    dataset = PanopticDataset.from_layout(tmp_path, "val", "world")
    assert len(dataset) == 6
    data = json.loads(json_path.read_text())
    assert [s["id"] for s in data["sequences"]] == [0, 1] and data["info"]["sequence_config"]["frames"] == 3
    recorded = S.read_sequences(tmp_path, "val")
    assert sorted(recorded) == [0, 1]
    for seq_id, frames in recorded.items():
        seq = S.generate_sequence(2, seq_id, cfg, world_cfg)
        for rec in frames:
            frame = seq[rec.frame_index]
            assert np.array_equal(rec.sample.image, frame.image)
            assert np.array_equal(rec.sample.panoptic, frame.panoptic)
            assert np.abs(rec.depth - frame.depth).max() <= 0.5 / S.MM_PER_M + 1e-6
            assert rec.camera["fx"] == seq.camera.fx and rec.camera["k"][2] == seq.camera.cx
            assert np.isclose(rec.stamp_s, frame.stamp_s)
            for seg in rec.sample.segments:
                mask = rec.sample.panoptic == seg["id"]
                assert seg["area"] == mask.sum()
                if seg["isthing"]:
                    v, u = np.nonzero(mask)
                    z = rec.depth[v, u]
                    xyz = np.stack([(u - rec.camera["cx"]) * z / rec.camera["fx"],
                                    (v - rec.camera["cy"]) * z / rec.camera["fy"], z], -1).mean(0)
                    assert np.allclose(xyz, seg["centroid_xyz"], atol=2e-3) and seg["track_id"] >= 1


def test_default_config_is_the_world_yaml_section():
    cfg = S.default_sequence_config()
    assert cfg.frames >= 1 and cfg.max_depth < cfg.ground_near
    assert S.camera_for(cfg, world.default_world_config()).width == world.default_world_config().width


def test_sensor_frames_are_what_a_depth_camera_publishes(world_cfg):
    cfg = _cfg(frames=3, depth_noise=0.01, depth_dropout=0.05)
    frames = list(S.sensor_frames(7, 5, cfg, world_cfg))
    assert [(f.sequence_id, f.frame_index) for f in frames] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]
    assert np.allclose([f.stamp_s for f in frames], np.arange(5) / FPS)  # continuous across the cut
    seq = S.generate_sequence(7, 1, cfg, world_cfg)
    last, truth = frames[-1], seq[1]
    assert last.depth_mm.dtype == np.uint16 and last.depth_mm.shape == (world_cfg.height, world_cfg.width)
    np.testing.assert_array_equal(last.depth_mm, S.depth_to_mm(truth.depth))
    assert (last.depth_mm == 0).any()  # dropout = invalid pixels
    np.testing.assert_array_equal(last.image, truth.image)
    np.testing.assert_array_equal(last.panoptic, truth.panoptic)
    assert last.segments == truth.segments
    fx, _, cx, _, fy, cy, *_ = last.k
    assert (fx, fy, cx, cy) == (seq.camera.fx, seq.camera.fy, seq.camera.cx, seq.camera.cy)
    assert (last.width, last.height) == (world_cfg.width, world_cfg.height) and last.k[8] == 1.0
    info = last.camera_info
    assert info["k"] == list(last.k) and info["p"][:3] == [fx, 0.0, cx] and info["d"] == [0.0] * 5
    assert (info["width"], info["height"]) == (last.width, last.height)


def test_make_world_writes_sequences_when_asked(tmp_path):
    """`maskclip-ros make-world --set make_world.num_sequences=N`: the sequence layout (depth, camera info)."""
    from maskclip_ros.cli import main
    sets = ["make_world.num_sequences=2", "make_world.seed=7", "sequences.frames=2", "world.width=192",
            "world.height=144", "world.min_size=28", "world.max_size=44", "sequences.focal=156.0"]
    assert main(["make-world", str(tmp_path), *(a for s in sets for a in ("--set", s))]) == 0
    recorded = S.read_sequences(tmp_path, "val")
    assert sorted(recorded) == [0, 1] and all(len(frames) == 2 for frames in recorded.values())
    rec = recorded[0][1]
    assert rec.depth.shape == (144, 192) and rec.camera["fx"] == 156.0 and rec.frame_index == 1
