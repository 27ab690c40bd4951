"""Segmenter / build_segmenter: the contract the node, evaluation and demo use (tiny random CLIP, CPU)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from maskclip_ros.pipeline import PanopticResult, SegmentInfo, Segmenter, build_segmenter, load_segmenter_config
from maskclip_ros.proposals.base import Proposals
from maskclip_ros.model.vocabulary import Vocabulary, VocabularyError
from model_helpers import scene

TINY = ["clip.model_name=maskclip-ros-test-tiny", "clip.pretrained=", "clip.checkpoint=", "clip.random_init=true",
        "clip.short_side=64", "merge.object_mask_threshold=0.0", "merge.min_area=0"]


def tiny_config(*overrides: str):
    """The package defaults with a tiny random CLIP (and dotted overrides)."""
    return load_segmenter_config(overrides=[*TINY, *overrides])


def tiny_segmenter(*overrides: str) -> Segmenter:
    """A Segmenter without a proposer (external masks)."""
    return build_segmenter(tiny_config(*overrides), with_proposer=False)


@pytest.fixture(scope="module")
def segmenter() -> Segmenter:
    torch.manual_seed(0)
    return tiny_segmenter()


def check_consistent(result: PanopticResult, image: np.ndarray) -> None:
    """ids match the label image; areas, boxes and classes match the pixels."""
    assert result.panoptic.dtype == np.int32 and result.panoptic.shape == image.shape[:2]
    assert result.semantic.dtype == np.int32 and result.semantic.shape == image.shape[:2]
    assert sorted(np.unique(result.panoptic[result.panoptic > 0]).tolist()) == [s.id for s in result.segments]
    for seg in result.segments:
        ys, xs = np.nonzero(result.panoptic == seg.id)
        assert seg.area == len(ys)
        assert seg.bbox == (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
        assert (result.semantic[ys, xs] == seg.class_index).all()
        assert seg.is_thing == result.vocabulary.is_thing[seg.class_index]
    assert (result.semantic[result.panoptic == 0] == -1).all()
    assert set(result.timings_ms) == {"proposals", "clip", "merge"}


def test_segment_with_external_masks(segmenter):
    image, masks = scene(48, 80, seed=0)
    vocabulary = segmenter.make_vocabulary(["red ring", "blue star", "sky"], [True, True, False])
    result = segmenter.segment(image, vocabulary, external_masks=masks[:3], with_embeddings=True)
    assert isinstance(result, PanopticResult) and result.vocabulary is vocabulary
    assert len(result.segments) >= 1 and all(isinstance(s, SegmentInfo) for s in result.segments)
    check_consistent(result, image)
    assert result.embeddings.shape == (len(result.segments), 32) and result.embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(result.embeddings, axis=1), 1.0, atol=1e-5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.segments = []


def test_segment_without_embeddings_and_without_masks(segmenter):
    image, masks = scene(48, 80, seed=1)
    vocabulary = segmenter.make_vocabulary(["a", "b"])
    result = segmenter.segment(image, vocabulary, external_masks=masks[:0])
    assert result.segments == [] and result.embeddings is None and (result.panoptic == 0).all()
    with pytest.raises(ValueError, match="external_masks"):
        segmenter.segment(image, vocabulary)  # no proposer configured and no masks
    with pytest.raises(ValueError, match="uint8"):
        segmenter.segment(image.astype(np.float32), vocabulary, external_masks=masks)


def test_segmenter_uses_its_proposer(segmenter):
    calls = []

    def proposer(image):
        calls.append(image.shape)
        _, masks = scene(image.shape[0], image.shape[1], seed=3)
        low = masks[:, ::2, ::2].copy()  # proposals at half resolution
        return Proposals(masks=low, scores=np.linspace(1, 0.5, 4, dtype=np.float32), boxes=None,
                         image_size=image.shape[:2])

    with_proposer = Segmenter(maskclip=segmenter.maskclip, proposer=proposer, embedder=segmenter.embedder,
                              vocabulary_config=segmenter.vocabulary_config,
                              merge_config=segmenter.merge_config, precision="fp32")
    image, _ = scene(48, 80, seed=3)
    result = with_proposer.segment(image, with_proposer.make_vocabulary(["x", "y"]))
    assert calls == [(48, 80, 3)] and result.segments
    check_consistent(result, image)


def test_merge_config_changes_at_runtime(segmenter):
    image, masks = scene(48, 80, seed=0)
    vocabulary = segmenter.make_vocabulary(["a", "b", "c"])
    before = segmenter.merge_config
    try:
        assert segmenter.segment(image, vocabulary, external_masks=masks).segments
        new = segmenter.set_merge_config(object_mask_threshold=1.0)
        assert new.object_mask_threshold == 1.0 and segmenter.merge_config is new
        assert segmenter.segment(image, vocabulary, external_masks=masks).segments == []
        with pytest.raises(ValueError):
            segmenter.set_merge_config(overlap_threshold=1.5)
        assert segmenter.merge_config is new
    finally:
        segmenter.set_merge_config(before)


def test_vocabularies_are_validated_versioned_and_swapped_whole(segmenter):
    first = segmenter.make_vocabulary(["cat", "floor"], [True, False])
    second = segmenter.make_vocabulary(["cat", "dog"])
    assert isinstance(first, Vocabulary) and second.version > first.version
    assert second.is_thing == (True, True) and first.is_thing == (True, False)
    assert segmenter.make_vocabulary(["cat"], version=42).version == 42
    torch.testing.assert_close(first.text_embeddings[0], second.text_embeddings[0])  # cached, same class
    for bad in ([], ["cat", ""], ["cat", "Cat"], ["x" * 101]):
        with pytest.raises(VocabularyError):
            segmenter.make_vocabulary(bad)
    with pytest.raises(VocabularyError, match="flags"):
        segmenter.make_vocabulary(["a", "b"], [True])


def test_build_segmenter_checks_device_and_precision():
    with pytest.raises(ValueError, match="CUDA"):
        tiny_segmenter("precision=fp16")
    with pytest.raises(ValueError, match="precision"):
        tiny_segmenter("precision=int8")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            tiny_segmenter("device=cuda")
    with pytest.raises(ValueError, match="device"):
        tiny_segmenter("device=tpu")


def test_build_segmenter_reports_missing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        tiny_segmenter("clip.random_init=false", f"clip.checkpoint={tmp_path / 'nope.pt'}")
    with pytest.raises(FileNotFoundError, match="rma.pt"):
        tiny_segmenter("maskclip.mode=rma", f"maskclip.rma_checkpoint={tmp_path / 'rma.pt'}")


@pytest.mark.parametrize("mode", ["crop", "tokens", "rma"])
def test_every_mode_segments(mode):
    torch.manual_seed(0)
    seg = tiny_segmenter(f"maskclip.mode={mode}", "maskclip.rma_no_object=false")
    image, masks = scene(40, 56, seed=4)
    result = seg.segment(image, seg.make_vocabulary(["a", "b", "c"], [True, False, False]), external_masks=masks)
    check_consistent(result, image)
    assert result.segments


def test_build_segmenter_with_configured_proposers():
    torch.manual_seed(0)
    image, masks = scene(60, 80, seed=5)
    regions = build_segmenter(tiny_config("proposals.backend=regions", "proposals.max_proposals=8",
                                          "proposals.min_area=20"))
    vocabulary = regions.make_vocabulary(["a", "b"], [True, False])
    result = regions.segment(image, vocabulary)
    check_consistent(result, image)
    assert result.timings_ms["proposals"] > 0
    external = build_segmenter(tiny_config("proposals.backend=external", "proposals.max_proposals=1",
                                           "proposals.min_area=0"))
    with pytest.raises(ValueError, match="external"):
        external.segment(image, vocabulary)
    one = external.segment(image, vocabulary, external_masks=masks)  # max_proposals applies: first mask only
    check_consistent(one, image)
    assert [s.area for s in one.segments] == [60 * 40]
