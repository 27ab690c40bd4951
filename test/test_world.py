"""The generated world: determinism (same bytes) and COCO panoptic validity."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from maskclip_ros.data import world
from maskclip_ros.data.coco_panoptic import PanopticDataset, rgb_to_id, segment_masks


def _digest(root) -> dict:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    json_path = world.write_world(root, num_images=3, seed=7, split="val")
    return root, json_path


def test_same_seed_same_bytes(written, tmp_path):
    root, _ = written
    world.write_world(tmp_path, num_images=3, seed=7, split="val")
    assert _digest(root) == _digest(tmp_path)


def test_other_seed_other_scene():
    a, b = world.generate_scene(1, 0), world.generate_scene(2, 0)
    assert not np.array_equal(a.image, b.image)
    c = world.generate_scene(1, 0)
    assert np.array_equal(a.image, c.image) and np.array_equal(a.panoptic, c.panoptic)
    assert a.segments == c.segments and a.description == c.description


def test_coco_panoptic_valid(written):
    root, json_path = written
    data = json.loads(json_path.read_text())
    cats = {c["id"]: c for c in data["categories"]}
    dataset = PanopticDataset.from_layout(root, "val", layout="world")
    assert len(dataset) == 3
    for sample in dataset:
        assert sample.image.shape == (480, 640, 3) and sample.image.dtype == np.uint8
        ids = [s["id"] for s in sample.segments]
        assert len(ids) == len(set(ids)) and 0 not in ids
        # every pixel belongs to a listed segment: stuff regions fully labelled, no void
        assert set(np.unique(sample.panoptic)) == set(ids)
        stuff_cats = [s["category_id"] for s in sample.segments if not s["isthing"]]
        assert len(stuff_cats) == len(set(stuff_cats)), "one segment per stuff class"
        assert sum(1 for s in sample.segments if s["isthing"]) >= 1
        for seg, mask in zip(sample.segments, segment_masks(sample.panoptic, ids)):
            assert seg["area"] == int(mask.sum()) > 0
            ys, xs = np.nonzero(mask)
            assert seg["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            assert seg["isthing"] == cats[seg["category_id"]]["isthing"]


def test_panoptic_png_encoding_round_trip():
    ids = np.array([[0, 1, 255], [256, 65535, 70000]], np.int32)
    assert np.array_equal(rgb_to_id(world.id_to_rgb(ids)), ids)


def test_categories_and_split_metadata(written):
    _, json_path = written
    data = json.loads(json_path.read_text())
    cats = world.categories()
    assert data["categories"] == cats
    things = [c for c in cats if c["isthing"]]
    stuff = [c for c in cats if not c["isthing"]]
    assert len(things) >= 6 + len(world.CONTEXT_CLASSES) and len(stuff) >= 6
    assert len(world.SHAPES) >= 6 and len(world.COLOURS) >= 8
    assert {c["split"] for c in cats} == {"base", "novel"}
    assert data["info"]["novel_classes"] == [c["name"] for c in cats if c["split"] == "novel"]
    assert set(data["info"]["base_classes"]) | set(data["info"]["novel_classes"]) == {c["name"] for c in cats}


def test_context_classes_stand_on_their_stuff():
    names = {c["id"]: c["name"] for c in world.categories()}
    seen = 0
    for index in range(6):
        scene = world.generate_scene(3, index)
        stuff_ids = {names[s["category_id"]]: s["id"] for s in scene.segments if not s["isthing"]}
        for seg in scene.segments:
            name = names[seg["category_id"]]
            if name in world.CONTEXT_CLASSES:
                seen += 1
                assert seg["stuff"] == world.CONTEXT_CLASSES[name]
                assert world.CONTEXT_CLASSES[name] in stuff_ids
    assert seen > 0


def test_things_are_large_enough_and_varied():
    cfg = world.default_world_config()
    scene = world.generate_scene(5, 0, cfg)
    things = [s for s in scene.segments if s["isthing"]]
    assert len(things) >= cfg.min_things
    for seg in things:
        assert max(seg["bbox"][2:]) <= cfg.max_size + 4
        assert seg["colour"] in world.COLOURS and seg["description"].startswith(f"a {seg['colour']} ")
    assert all(name in scene.description for name in {s["colour"] for s in things})
