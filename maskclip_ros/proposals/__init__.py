"""Stage one of MaskCLIP: class-agnostic mask proposals.

Backends (``proposals.backend`` in config/default.yaml):
  regions   training-free graph segmentation + hierarchical grouping (regions.py); the default
  mmdet     a trained class-agnostic mmdet network, Mask R-CNN or Mask2Former (mmdet_backend.py)
  external  masks supplied by the caller (external.py)
  auto      mmdet when ``proposals.mmdet.checkpoint`` is set, else regions
"""
from __future__ import annotations

from typing import Any, Mapping

from maskclip_ros.config import ConfigError
from maskclip_ros.proposals.base import Proposals, Proposer

BACKENDS = ("auto", "regions", "mmdet", "external")

__all__ = ["BACKENDS", "Proposals", "Proposer", "build_proposer", "resolve_backend"]


def resolve_backend(params: Mapping[str, Any]) -> str:
    """The backend ``build_proposer`` uses for these params (``auto`` resolved)."""
    backend = params.get("backend")
    if backend not in BACKENDS:
        raise ConfigError(f"proposals.backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "mmdet" if params.get("mmdet", {}).get("checkpoint") else "regions"
    return backend


def build_proposer(params: Mapping[str, Any], *, device: str = "cpu") -> Proposer:
    """The proposer configured by the ``proposals`` params section (see config/default.yaml).

    Every backend returns Proposals sorted by descending score, at most ``max_proposals``, none smaller
    than ``min_area`` image pixels, deterministic for a given input. ``device`` is used by mmdet only.
    Raises ConfigError for bad parameters, FileNotFoundError / ValueError for missing or corrupt mmdet
    checkpoints, ImportError (saying how to install it) when mmdet is needed but missing.
    """
    for key in ("max_proposals", "min_area", "mask_long_side"):
        if key not in params:
            raise ConfigError(f"params section 'proposals' lacks {key!r} (see config/default.yaml)")
    if int(params["max_proposals"]) < 1:
        raise ConfigError(f"proposals.max_proposals must be >= 1, got {params['max_proposals']}")
    backend = resolve_backend(params)
    if backend == "regions":
        from maskclip_ros.proposals.regions import build_regions_proposer
        return build_regions_proposer(dict(params))
    if backend == "mmdet":
        from maskclip_ros.proposals.mmdet_backend import build_mmdet_proposer
        return build_mmdet_proposer(dict(params), device=device)
    from maskclip_ros.proposals.external import ExternalProposer
    return ExternalProposer(max_proposals=params["max_proposals"], min_area=params["min_area"])
