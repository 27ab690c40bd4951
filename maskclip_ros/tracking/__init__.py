"""Objects across frames and in 3D (no ROS): a ByteTrack-style mask tracker for thing segments, per-segment 3D
geometry from a registered depth image, and ``stage.SegmentTracker``, the per-frame stage after the panoptic
merge that the node and `maskclip-ros eval-tracking` run.

Modules: ``observations`` (thing segments as tracker observations, mask helpers), ``tracker`` (the Tracker),
``geometry`` (depth decoding, intrinsics, Segment3D), ``stage`` (PerceptionConfig, SegmentTracker,
TrackedFrame, DepthProblem), ``cloud`` (the labelled point cloud).
"""
from maskclip_ros.tracking.cloud import LabelledCloud, labelled_cloud
from maskclip_ros.tracking.geometry import (Box3D, CameraIntrinsics, DepthError, GeometryConfig, Segment3D,
                                            depth_to_metres, resize_nearest, segment_geometry)
from maskclip_ros.tracking.observations import Observation, grid_shape, mask_iou, thing_observations
from maskclip_ros.tracking.stage import (DepthProblem, PerceptionConfig, SegmentTracker, TrackedFrame,
                                         camera_intrinsics, decode_depth, load_perception_config)
from maskclip_ros.tracking.tracker import TrackInfo, Tracker, TrackerConfig, TrackState

__all__ = ["Box3D", "CameraIntrinsics", "DepthError", "DepthProblem", "GeometryConfig", "LabelledCloud",
           "Observation", "PerceptionConfig", "Segment3D", "SegmentTracker", "TrackInfo", "TrackState",
           "TrackedFrame", "Tracker", "TrackerConfig", "camera_intrinsics", "decode_depth", "depth_to_metres",
           "grid_shape", "labelled_cloud", "load_perception_config", "mask_iou", "resize_nearest",
           "segment_geometry", "thing_observations"]
