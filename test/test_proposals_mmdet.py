"""The mmdet proposal backend (random-init class-agnostic Mask R-CNN and Mask2Former on small inputs),
checkpoint errors, and the train-proposals smoke test (2 iterations on a tiny COCO dataset written here,
whose checkpoint the backend then loads). Needs `make setup-mmdet` (part of `make test`)."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from maskclip_ros.cli import main as cli_main
from maskclip_ros.proposals import build_proposer
from maskclip_ros.proposals.common import scaled_size
from maskclip_ros.proposals.mmdet_backend import MMDetProposer, load_state_dict
from test_proposals import DEGENERATE, check_well_formed, proposal_params

pytestmark = pytest.mark.mmdet

CONFIGS = {"mask-rcnn": "mask-rcnn_r50_fpn_1x_agnostic.py", "mask2former": "mask2former_r50_agnostic.py"}
SMALL = {"test_width": 160, "test_height": 128}  # network input for tests (the configs use 1333x800)


def mmdet_params(config: str, **mmdet) -> dict:
    section = dict(SMALL, config=config, checkpoint="", random_init=True)
    section.update(mmdet)
    return proposal_params(backend="mmdet", max_proposals=20, min_area=0, mmdet=section)


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def proposer(request) -> MMDetProposer:
    torch.manual_seed(0)
    built = build_proposer(mmdet_params(CONFIGS[request.param]))
    assert isinstance(built, MMDetProposer)
    return built


@pytest.fixture(scope="module")
def small_scene() -> np.ndarray:
    from maskclip_ros.data.world import generate_scene
    return cv2.resize(generate_scene(7, 0).image, (160, 120), interpolation=cv2.INTER_AREA)


def test_random_init_proposals_well_formed(proposer, small_scene):
    image = small_scene.copy()
    props = proposer(image)
    check_well_formed(props, image, proposer.max_proposals, proposer.min_area)
    assert len(props) >= 1  # random weights still score their queries / boxes
    assert np.array_equal(image, small_scene)
    again = proposer(image)
    assert np.array_equal(props.masks, again.masks) and np.array_equal(props.scores, again.scores)


# the 2000x3000 frame takes 25-70 s through the mmdet networks on 2 cores: slow
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n.startswith("large") else n
                                  for n in sorted(DEGENERATE)])
def test_degenerate_images(proposer, name):
    image = DEGENERATE[name]()
    props = proposer(image)
    check_well_formed(props, image, proposer.max_proposals, proposer.min_area)
    assert props.masks.shape[1:] == scaled_size(*image.shape[:2], proposer.mask_long_side)


def test_random_weights_are_reproducible():
    a = build_proposer(mmdet_params(CONFIGS["mask-rcnn"])).model.state_dict()
    torch.manual_seed(123)  # the caller's RNG state does not matter
    b = build_proposer(mmdet_params(CONFIGS["mask-rcnn"])).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-proposals"):
        build_proposer(mmdet_params(CONFIGS["mask-rcnn"], checkpoint=str(tmp_path / "missing.pth")))
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a checkpoint" * 10)
    with pytest.raises(ValueError, match="corrupt"):
        build_proposer(mmdet_params(CONFIGS["mask-rcnn"], checkpoint=str(corrupt)))
    foreign = tmp_path / "foreign.pth"
    torch.save({"state_dict": {"layer.weight": torch.zeros(3)}}, foreign)
    with pytest.raises(ValueError, match="does not fit"):
        build_proposer(mmdet_params(CONFIGS["mask-rcnn"], checkpoint=str(foreign)))
    with pytest.raises(ValueError, match="checkpoint is empty"):
        build_proposer(mmdet_params(CONFIGS["mask-rcnn"], random_init=False))
    with pytest.raises(FileNotFoundError, match="shipped configs"):
        build_proposer(mmdet_params("no-such-config.py"))


def write_tiny_coco(root) -> tuple:
    """4 images (96x128) with 1-2 filled rectangles/discs each, as a COCO instances JSON with polygons."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir()
    images, annotations = [], []
    for i in range(4):
        image = rng.integers(90, 140, (96, 128, 3)).astype(np.uint8)
        images.append({"id": i + 1, "file_name": f"{i}.png", "height": 96, "width": 128})
        for k in range(1 + i % 2):
            x, y = int(rng.integers(5, 70)), int(rng.integers(5, 45))
            w, h = int(rng.integers(20, 50)), int(rng.integers(20, 45))
            image[y:y + h, x:x + w] = rng.integers(0, 255, 3)
            poly = [x, y, x + w, y, x + w, y + h, x, y + h]
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": 7 + k,
                                "segmentation": [poly], "area": w * h, "bbox": [x, y, w, h], "iscrowd": 0})
        cv2.imwrite(str(root / "images" / f"{i}.png"), image)
    categories = [{"id": 7, "name": "box"}, {"id": 8, "name": "crate"}]  # made class-agnostic by training
    path = root / "instances.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path, root / "images"


@pytest.mark.slow
def test_train_proposals_smoke(tmp_path, small_scene):
    """2 iterations of Mask R-CNN on a tiny COCO dataset; the saved checkpoint loads in the mmdet backend."""
    ann, images = write_tiny_coco(tmp_path)
    work = tmp_path / "work"
    code = cli_main(["train-proposals", "--config", CONFIGS["mask-rcnn"], "--data", str(ann), "--images",
                     str(images), "--work-dir", str(work), "--max-iters", "2", "--batch-size", "2",
                     "--workers", "0", "--cfg-options", "train_pipeline.2.scale=(160,128)",
                     "train_dataloader.dataset.pipeline.2.scale=(160,128)"])
    assert code == 0
    agnostic = json.loads((work / "annotations_agnostic.json").read_text())
    assert {a["category_id"] for a in agnostic["annotations"]} == {1}
    assert agnostic["categories"] == [{"id": 1, "name": "object", "supercategory": "object"}]
    checkpoint = work / "proposals_final.pth"
    assert torch.load(checkpoint, weights_only=True)["meta"]["iter"] == 2
    assert (work / "iter_2.pth").is_file()  # mmengine's own checkpoint (optimizer state etc.)
    state = load_state_dict(checkpoint)
    assert state.keys() == build_proposer(mmdet_params(CONFIGS["mask-rcnn"])).model.state_dict().keys()
    trained = build_proposer(mmdet_params(CONFIGS["mask-rcnn"], checkpoint=str(checkpoint), random_init=False))
    props = trained(small_scene)
    check_well_formed(props, small_scene, trained.max_proposals, trained.min_area)
