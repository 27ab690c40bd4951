"""The node's typed configuration: every parameter of config/default.yaml as one frozen tree (ROS-free).

``NodeConfig`` is a ``SegmenterConfig`` (the model part) plus the node's own settings; the node turns its
current ROS parameters into one with ``NodeConfig.from_parameters`` (the only place that does).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from maskclip_ros import config
from maskclip_ros.model.vocabulary import VocabularyConfig
from maskclip_ros.pipeline import PARAMS_FILE, SegmenterConfig
from maskclip_ros.tracking.geometry import GeometryConfig
from maskclip_ros.tracking.tracker import TrackerConfig


@dataclass(frozen=True)
class OverlayConfig:
    """The ``overlay`` section (~/overlay)."""
    alpha: float   # opacity of the class colours over the camera image
    labels: bool   # write each segment's class name


@dataclass(frozen=True)
class DiagnosticsConfig:
    """The ``diagnostics`` section (/diagnostics)."""
    period: float  # seconds between diagnostics messages
    window: float  # seconds over which rates and latencies are averaged


@dataclass(frozen=True)
class NodeConfig(SegmenterConfig):
    """Every parameter of config/default.yaml (documented there)."""
    autostart: bool            # walk the lifecycle to active at startup
    compressed_input: bool     # subscribe to image/compressed instead of image
    publish_embeddings: bool   # fill SegmentInstance.embedding
    output_depth: int          # history depth of the output publishers
    external_queue: int        # proposal label images kept to pair with frames by stamp
    num_threads: int           # torch CPU threads (0 = torch's default)
    tracking: TrackerConfig    # track ids of thing segments
    depth: GeometryConfig      # the depth input and per-segment 3D
    overlay: OverlayConfig
    diagnostics: DiagnosticsConfig

    def perception(self):
        """The tracking + depth part (``tracking.stage.PerceptionConfig``)."""
        from maskclip_ros.tracking.stage import PerceptionConfig

        return PerceptionConfig(tracking=self.tracking, depth=self.depth)

    @classmethod
    def from_parameters(cls, values: Mapping[str, Any]) -> "NodeConfig":
        """From dotted parameter names -> values (the node's current parameters)."""
        return config.from_dict(cls, config.nest(values))

    @classmethod
    def load(cls, *params_files, overrides=()) -> "NodeConfig":
        """config/default.yaml updated with params files and dotted overrides."""
        return config.load_one(cls, PARAMS_FILE, *params_files, overrides=overrides)


def vocabulary_config(values: Mapping[str, Any]) -> VocabularyConfig:
    """The ``vocabulary`` section alone from dotted parameter values (checks while unconfigured)."""
    return config.from_dict(VocabularyConfig, config.nest(values)["vocabulary"], "vocabulary")
