"""Stage one of MaskCLIP: class-agnostic mask proposals.

Backends (``proposals.backend`` in config/default.yaml):
  regions   training-free graph segmentation + hierarchical grouping (regions.py); the default
  mmdet     a trained class-agnostic mmdet network, Mask R-CNN or Mask2Former (mmdet_backend.py)
  external  masks supplied by the caller (external.py)
  auto      mmdet when ``proposals.mmdet.checkpoint`` is set, else regions
"""
from __future__ import annotations

from dataclasses import dataclass

from maskclip_ros.proposals.base import Proposals, Proposer
from maskclip_ros.proposals.mmdet_backend import MMDetConfig
from maskclip_ros.proposals.regions import RegionsConfig

BACKENDS = ("auto", "regions", "mmdet", "external")

__all__ = ["BACKENDS", "Proposals", "ProposalsConfig", "Proposer", "build_proposer"]


@dataclass(frozen=True)
class ProposalsConfig:
    """The ``proposals`` section of config/default.yaml (documented there)."""

    backend: str          # auto | regions | mmdet | external
    max_proposals: int    # most proposals per frame, best objectness first
    min_area: int         # drop proposals smaller than this many image pixels
    mask_long_side: int   # long side of the returned masks (0 = the image's size)
    regions: RegionsConfig
    mmdet: MMDetConfig

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"proposals.backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.max_proposals < 1:
            raise ValueError(f"proposals.max_proposals must be >= 1, got {self.max_proposals}")

    @property
    def resolved_backend(self) -> str:
        """The backend ``build_proposer`` uses (``auto`` resolved)."""
        if self.backend == "auto":
            return "mmdet" if self.mmdet.checkpoint else "regions"
        return self.backend


def build_proposer(cfg: ProposalsConfig, *, device: str = "cpu") -> Proposer:
    """The proposer ``cfg`` describes.

    Every backend returns Proposals sorted by descending score, at most ``max_proposals``, none smaller
    than ``min_area`` image pixels, deterministic for a given input. ``device`` is used by mmdet only.
    Raises FileNotFoundError / ValueError for missing or corrupt mmdet checkpoints, ImportError (saying how
    to install it) when mmdet is needed but missing.
    """
    backend = cfg.resolved_backend
    limits = dict(max_proposals=cfg.max_proposals, min_area=cfg.min_area)
    if backend == "regions":
        from maskclip_ros.proposals.regions import RegionProposer
        return RegionProposer(config=cfg.regions, mask_long_side=cfg.mask_long_side, **limits)
    if backend == "mmdet":
        from maskclip_ros.proposals.mmdet_backend import MMDetProposer, load_mmdet_model
        return MMDetProposer(model=load_mmdet_model(cfg.mmdet, device), mask_long_side=cfg.mask_long_side,
                             score_threshold=cfg.mmdet.score_threshold, **limits)
    from maskclip_ros.proposals.external import ExternalProposer
    return ExternalProposer(**limits)
