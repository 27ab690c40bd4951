"""The node's public names, in one ROS-free module: its name, topics, service, when each parameter applies,
and the /diagnostics keys with the one parser of them (used by the demo, bench-node and the tests).

Nothing here imports rclpy, so the README reference (`maskclip-ros docs`) and the tests can read the
interface without starting ROS.
"""
from __future__ import annotations

from typing import Any

NODE_NAME = "maskclip"
# Inputs are relative (remappable, e.g. image:=/camera/color/image_raw); outputs are private (~/x).
IMAGE_TOPIC = "image"
COMPRESSED_TOPIC = "image/compressed"
PROPOSALS_TOPIC = "proposals"
DEPTH_TOPIC = "depth"              # registered to the colour camera (16UC1 mm or 32FC1 m)
CAMERA_INFO_TOPIC = "camera_info"  # of the colour camera
OUTPUT_TOPICS = {"panoptic": "~/panoptic", "semantic": "~/semantic", "segments": "~/segments",
                 "overlay": "~/overlay", "vocabulary": "~/vocabulary"}
# vision_msgs outputs (published when vision_msgs is installed)
VISION_TOPICS = {"detections": "~/detections", "detections_3d": "~/detections_3d", "label_info": "~/label_info"}
# 3D outputs (published when depth arrives): RViz boxes, and the labelled cloud when depth.publish_cloud
DEPTH_OUTPUT_TOPICS = {"markers": "~/markers", "cloud": "~/cloud"}
DIAGNOSTICS_TOPIC = "/diagnostics"
SERVICE_NAME = "~/set_vocabulary"
SERVICE_TYPE = "maskclip_ros/srv/SetVocabulary"
LAUNCH_SERVICE_NAME = "/set_vocabulary"  # what launch/segment.launch.py remaps ~/set_vocabulary to

# When a parameter of config/default.yaml applies. Runtime: from the next frame (names or section prefixes
# ending in "."); startup: read once (read_only); everything else: read by configure/activate.
RUNTIME_PARAMETERS = ("merge.", "vocabulary.class_names", "vocabulary.is_thing", "vocabulary.prompt_templates",
                      "publish_embeddings", "overlay.", "tracking.", "depth.stamp_tolerance_s", "depth.wait_s",
                      "depth.min_valid_pixels", "depth.min_depth_m", "depth.max_depth_m", "depth.outlier_mads",
                      "depth.min_spread_rel", "depth.histogram_resolution", "depth.min_box_size_m",
                      "depth.oriented_boxes", "depth.cloud_stride")
STARTUP_PARAMETERS = ("autostart",)


def parameter_kind(name: str) -> str:
    """"runtime", "startup" or "configure" for a dotted parameter name of config/default.yaml."""
    if any(name == p or (p.endswith(".") and name.startswith(p)) for p in RUNTIME_PARAMETERS):
        return "runtime"
    return "startup" if name in STARTUP_PARAMETERS else "configure"


# ---------------------------------------------------------------------------------------- diagnostics
DIAGNOSTICS_SUFFIX = ": segmentation"  # status name = the node's fully qualified name + this
COUNTERS = {  # key -> the RollingStats event it totals
    "frames_received": "received", "frames_published": "published", "dropped_frames": "dropped",
    "dropped_bad_frames": "bad", "failed_frames": "failed", "overlays_published": "overlay",
    "depth_bad": "depth_bad", "depth_unpaired": "depth_unpaired", "depth_all_invalid": "depth_all_invalid",
    "camera_info_bad": "camera_info_bad", "camera_info_missing": "camera_info_missing",
    "frames_with_depth": "with_depth"}
RATES = {"input_rate_hz": "received", "output_rate_hz": "published"}
INFO_KEYS = ("device", "precision", "model", "image_backend", "vocabulary_version", "vocabulary_size")
FINISHED = ("frames_published", "dropped_frames", "dropped_bad_frames", "failed_frames")  # where frames end


def status_name(fully_qualified_name: str) -> str:
    """The DiagnosticStatus name of the node ``/ns/maskclip``."""
    return fully_qualified_name + DIAGNOSTICS_SUFFIX


def latency_key(stage: str, worst: bool = False) -> str:
    """Diagnostics key of a stage's mean (or max) latency in milliseconds."""
    return f"latency_{stage}_max_ms" if worst else f"latency_{stage}_ms"


def parse_diagnostics(msg: Any, node: str = f"/{NODE_NAME}") -> dict[str, Any] | None:
    """The node's values from a diagnostic_msgs/DiagnosticArray (rclpy or rosbags message), or None when it
    holds no status of ``node`` (a fully qualified name). Counters become ints, rates and latencies floats,
    latencies are gathered under "latency_ms" {stage: mean} and "latency_max_ms" {stage: max}; the status
    level and message are kept as "level" and "message"."""
    for status in msg.status:
        if status.name != status_name(node):
            continue
        raw = {kv.key: kv.value for kv in status.values}
        out: dict[str, Any] = {"level": int.from_bytes(status.level, "little") if isinstance(status.level, bytes)
                               else int(status.level), "message": status.message,
                               "latency_ms": {}, "latency_max_ms": {}}
        for key, value in raw.items():
            if key in COUNTERS:
                out[key] = int(value)
            elif key in RATES:
                out[key] = float(value)
            elif key.startswith("latency_") and key.endswith("_max_ms"):
                out["latency_max_ms"][key[len("latency_"):-len("_max_ms")]] = float(value)
            elif key.startswith("latency_") and key.endswith("_ms"):
                out["latency_ms"][key[len("latency_"):-len("_ms")]] = float(value)
            else:
                out[key] = value
        return out
    return None


def frames_accounted(values: dict[str, Any]) -> bool:
    """True when every frame the node received has ended somewhere (published, dropped, bad or failed)."""
    received = values.get("frames_received", 0)
    return received > 0 and sum(values.get(k, 0) for k in FINISHED) >= received
