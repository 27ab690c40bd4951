"""Image in, panoptic segmentation out: proposals -> MaskCLIP -> classification -> panoptic merge.

``build_segmenter(cfg)`` is the one entry point the node, training, evaluation and the benchmarks use; it
loads everything through ``model.factory`` from a typed ``SegmenterConfig`` (the model part of
config/default.yaml: ``load_segmenter_config`` reads it). A ``Segmenter`` holds no vocabulary: callers pass one with every frame, so a
frame never mixes two vocabularies, and ``make_vocabulary`` builds new ones (validated, text embeddings
cached) for callers to swap in whole. Merge thresholds change at runtime with ``set_merge_config``.
No ROS here: this module is pure torch/numpy.
"""
from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from maskclip_ros import config
from maskclip_ros.model.factory import ClipConfig, build_clip, build_maskclip
from maskclip_ros.model.maskclip import MaskCLIP, MaskCLIPConfig
from maskclip_ros.model.panoptic import MergeConfig, SegmentInfo, panoptic_merge
from maskclip_ros.model.vocabulary import (TextEmbedder, Vocabulary, VocabularyConfig, VocabularyError,
                                           build_vocabulary)
from maskclip_ros.proposals import ProposalsConfig
from maskclip_ros.proposals.base import Proposer

__all__ = ["PanopticResult", "SegmentInfo", "Segmenter", "SegmenterConfig", "Vocabulary", "VocabularyError",
           "build_segmenter", "load_segmenter_config"]

LOG = logging.getLogger(__name__)
PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
PARAMS_FILE = "default.yaml"


@dataclass(frozen=True)
class SegmenterConfig:
    """The model part of config/default.yaml (documented there): what ``build_segmenter`` builds."""

    device: str                   # torch device: cpu, cuda or cuda:N
    precision: str                # fp32, fp16 or bf16
    clip: ClipConfig              # the frozen CLIP and its weights
    maskclip: MaskCLIPConfig      # the MaskCLIP visual encoder (mode, RMA)
    merge: MergeConfig            # panoptic merge thresholds
    proposals: ProposalsConfig    # stage one: class-agnostic mask proposals
    vocabulary: VocabularyConfig  # the initial vocabulary, prompt templates and limits


def load_segmenter_config(*params_files, overrides=()) -> SegmenterConfig:
    """The model part of config/default.yaml updated with node params files (later ones win) and dotted
    overrides (``maskclip.mode=rma``); the node-only keys of those files are left to the node."""
    return config.load_one(SegmenterConfig, PARAMS_FILE, *params_files, overrides=overrides, partial=True)


@dataclass(frozen=True)
class PanopticResult:
    """One frame's panoptic segmentation.

    panoptic:   (H, W) int32 segment ids, 0 = unlabeled; ids match ``segments[i].id``.
    semantic:   (H, W) int32 vocabulary class index, -1 = unlabeled.
    segments:   one SegmentInfo per segment (id, class_index, score, is_thing, area, bbox (x, y, w, h)).
    embeddings: (S, E) float32 L2-normalised segment embeddings (row i <-> segments[i]; a merged stuff
                segment gets the normalised mean of its masks' embeddings), or None if not requested.
    vocabulary: the vocabulary used for this frame.
    timings_ms: wall time per stage: "proposals", "clip" (MaskCLIP + classification), "merge".
    """

    panoptic: np.ndarray
    semantic: np.ndarray
    segments: list[SegmentInfo]
    embeddings: np.ndarray | None
    vocabulary: Vocabulary
    timings_ms: dict[str, float]


class Segmenter:
    """Proposals -> MaskCLIP -> panoptic merge for single RGB frames (thread-safe for one caller of
    ``segment`` plus concurrent ``make_vocabulary`` / ``set_merge_config`` calls)."""

    def __init__(self, *, maskclip: MaskCLIP, proposer: Proposer | None, embedder: TextEmbedder,
                 vocabulary_config: VocabularyConfig, merge_config: MergeConfig, precision: str):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
        self.maskclip = maskclip.eval()
        self.proposer = proposer
        self.embedder = embedder
        self.vocabulary_config = vocabulary_config
        self.precision = precision
        self._merge_config = merge_config
        self._versions = itertools.count(1)
        self._lock = threading.Lock()

    @property
    def device(self) -> torch.device:
        return self.maskclip.tower.device

    @property
    def merge_config(self) -> MergeConfig:
        return self._merge_config

    def set_merge_config(self, config: MergeConfig | None = None, **changes: Any) -> MergeConfig:
        """Replace the merge thresholds (a whole config and/or field changes); applies from the next frame.
        Returns the new config; invalid values raise ValueError and leave the old one active."""
        new = dataclasses.replace(config or self._merge_config, **changes)
        self._merge_config = new
        return new

    def make_vocabulary(self, class_names: Iterable[str], is_thing: Iterable[bool] | None = None,
                        templates: Sequence[str] | None = None, version: int | None = None) -> Vocabulary:
        """A validated vocabulary with text embeddings (raises VocabularyError(reason) when refused).

        ``is_thing`` defaults to all things, ``templates`` to ``vocabulary.prompt_templates``, ``version`` to
        the next number of this Segmenter."""
        with self._lock:
            version = next(self._versions) if version is None else int(version)
        with torch.no_grad(), self._autocast():
            return build_vocabulary(class_names, is_thing, embedder=self.embedder, config=self.vocabulary_config,
                                    templates=templates, version=version)

    @torch.no_grad()
    def segment(self, image: np.ndarray, vocabulary: Vocabulary, *, external_masks: np.ndarray | None = None,
                with_embeddings: bool = False) -> PanopticResult:
        """Segment one frame.

        Args:
            image: (H, W, 3) uint8 RGB.
            vocabulary: the classes to label with (from ``make_vocabulary``).
            external_masks: (M, H', W') float/bool proposals to use instead of the proposer (H' <= H, W' <= W;
                filtered by max_proposals / min_area when proposals.backend is external, else used as given).
            with_embeddings: also return each segment's CLIP embedding.
        """
        if not (isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3
                and image.dtype == np.uint8 and image.shape[0] > 0 and image.shape[1] > 0):
            raise ValueError(f"image must be a non-empty (H, W, 3) uint8 RGB array, got "
                             f"{getattr(image, 'shape', None)} {getattr(image, 'dtype', None)}")
        merge_config = self._merge_config  # one config for the whole frame
        timings: dict[str, float] = {}
        with _timer(timings, "proposals", self.device):
            masks = self._proposals(image, external_masks)
        with _timer(timings, "clip", self.device), self._autocast():
            out = self.maskclip(image, masks)
            scores = self.maskclip.classify(out.embeddings, vocabulary.text_embeddings.to(self.device))
        with _timer(timings, "merge", self.device):
            merged = panoptic_merge(out.masks.float(), scores.probs, vocabulary.thing_mask.to(self.device),
                                    merge_config, no_object=scores.no_object, output_size=image.shape[:2])
            embeddings = (_segment_embeddings(out.embeddings, merged.members) if with_embeddings else None)
        return PanopticResult(panoptic=merged.panoptic, semantic=merged.semantic, segments=merged.segments,
                              embeddings=embeddings, vocabulary=vocabulary, timings_ms=timings)

    def _proposals(self, image: np.ndarray, external_masks: np.ndarray | None) -> np.ndarray | torch.Tensor:
        """(M, h, w) proposal masks: the caller's (through the ``external`` backend's count/area/value
        checks when that backend is configured, else as given) or the proposer's."""
        from maskclip_ros.proposals.external import ExternalProposer

        if external_masks is not None:
            if isinstance(self.proposer, ExternalProposer):
                return self.proposer(image, masks=external_masks).masks
            masks = np.asarray(external_masks)
            if masks.ndim != 3:
                raise ValueError(f"external_masks must be (M, H, W), got shape {masks.shape}")
            return masks
        if self.proposer is None:
            raise ValueError("this Segmenter was built without a proposer (with_proposer=False): pass external_masks")
        return self.proposer(image).masks

    def _autocast(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=PRECISIONS[self.precision])


def build_segmenter(cfg: SegmenterConfig, *, with_proposer: bool = True) -> Segmenter:
    """The one factory entry point: CLIP, MaskCLIP (+ RMA checkpoint), proposer, merge and vocabulary
    settings from ``cfg``. Raises FileNotFoundError / ValueError saying what to do for missing or corrupt
    checkpoints and impossible device/precision combinations.

    ``with_proposer=False`` builds no proposer (training on coarse ground truth, evaluation on ground-truth
    masks): ``segment`` then needs ``external_masks``.
    """
    torch_device = _check_device(cfg.device, cfg.precision, cfg.maskclip.backend)
    tower = build_clip(cfg.clip, torch_device)
    proposer = None
    if with_proposer:
        from maskclip_ros.proposals import build_proposer  # imports the configured backend only

        proposer = build_proposer(cfg.proposals, device=str(torch_device))
    return Segmenter(maskclip=build_encoder(cfg, build_maskclip(cfg.maskclip, tower)), proposer=proposer,
                     embedder=TextEmbedder(tower=tower, cache_size=cfg.vocabulary.embedding_cache_size),
                     vocabulary_config=cfg.vocabulary, merge_config=cfg.merge, precision=cfg.precision)


def build_encoder(cfg: SegmenterConfig, maskclip: MaskCLIP):
    """The encoder ``segment`` runs: the MaskCLIP model itself (backend torch, or crop mode), or its
    exported encoder under openvino / onnxruntime (``model.export``, exported and cached on first use)."""
    mcfg = cfg.maskclip
    if mcfg.backend == "torch":
        return maskclip
    if mcfg.mode == "crop":
        LOG.info("maskclip.backend %s: crop mode runs one CLIP pass per mask and is not exported; using torch",
                 mcfg.backend)
        return maskclip
    from maskclip_ros.model.export import build_exported_maskclip
    from maskclip_ros.proposals.common import scaled_size

    frame = tuple(mcfg.export_frame_size) if min(mcfg.export_frame_size) > 0 else None
    mask_size = scaled_size(*frame, cfg.proposals.mask_long_side) if frame and cfg.proposals.mask_long_side else frame
    return build_exported_maskclip(maskclip, backend=mcfg.backend, precision=cfg.precision,
                                   cache_dir=mcfg.export_cache_dir, max_masks=cfg.proposals.max_proposals,
                                   image_size=frame, mask_size=mask_size, threads=mcfg.export_threads)


def _check_device(device: str, precision: str, backend: str) -> torch.device:
    from maskclip_ros.model.runtimes import check_precision, torch_device

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    resolved = torch_device(device)
    check_precision(backend, precision, resolved)  # bf16 on CPUs with native bf16, fp16 on CUDA only
    return resolved


@contextlib.contextmanager
def _timer(timings: dict[str, float], name: str, device: torch.device):
    """Wall time of the block in ms (CUDA work is synchronised at both ends)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    yield
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    timings[name] = (time.perf_counter() - start) * 1000.0


def _segment_embeddings(embeddings: torch.Tensor, members: list[tuple[int, ...]]) -> np.ndarray:
    """(M, E) mask embeddings -> (S, E) float32 segment embeddings (normalised mean over members)."""
    if not members:
        return np.zeros((0, embeddings.shape[1]), np.float32)
    membership = torch.zeros(len(members), embeddings.shape[0], device=embeddings.device)
    rows = torch.tensor([s for s, m in enumerate(members) for _ in m], device=embeddings.device)
    cols = torch.tensor([i for m in members for i in m], device=embeddings.device)
    membership[rows, cols] = 1.0
    return F.normalize(membership @ embeddings.float(), dim=-1).cpu().numpy().astype(np.float32)
