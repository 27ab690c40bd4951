"""QoS of the node's inputs and outputs, and the warning that names the fix when a peer's QoS does not match."""
from __future__ import annotations

from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

SENSOR = qos_profile_sensor_data  # camera-style inputs (best effort, small depth); qos_overrides change it
DIAGNOSTICS_DEPTH = 10


def reliable(depth: int) -> QoSProfile:
    """Outputs: reliable, keep last ``depth``."""
    return QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE)


def latched() -> QoSProfile:
    """State topics (vocabulary, label info): reliable, transient local, the last message kept."""
    return QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


def incompatible_qos_warning(node, topic: str, side: str):
    """An event callback that logs which policy did not match on ``topic`` and the parameter to set."""
    def warn(info) -> None:
        name = node.resolve_topic_name(topic)
        node.get_logger().warning(
            f"incompatible QoS on {name} (policy {info.last_policy_kind.name}, {info.total_count} so far): no "
            f"messages will flow. Match the other side or set the qos_overrides.{name}.{side}.* parameters "
            "(e.g. reliability) in the params file.")
    return warn
