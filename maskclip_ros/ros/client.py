"""Client of the node's SetVocabulary service (the `maskclip-ros set-vocabulary` command)."""
from __future__ import annotations

import time
from collections.abc import Sequence

import rclpy
from rclpy.node import Node

from maskclip_ros.srv import SetVocabulary

SERVICE_TYPE = "maskclip_ros/srv/SetVocabulary"
DEFAULT_SERVICE = "/set_vocabulary"  # what launch/segment.launch.py exposes


def parse_classes(tokens: Sequence[str]) -> tuple[list[str], list[bool]]:
    """['person', 'floor:stuff', 'cup:thing'] -> (['person', 'floor', 'cup'], [True, False, True]).

    A name without a suffix is a thing. Raises ValueError for another suffix."""
    names, flags = [], []
    for token in tokens:
        name, sep, kind = token.rpartition(":")
        if not sep:
            name, kind = token, "thing"
        if kind not in ("thing", "stuff"):
            raise ValueError(f"{token!r}: the suffix must be :thing or :stuff")
        names.append(name)
        flags.append(kind == "thing")
    return names, flags


def find_service(node: Node, timeout: float) -> str | None:
    """The SetVocabulary service to call: /set_vocabulary if it exists, else the only one in the graph.
    Waits up to `timeout` s for one to appear; None if none (or several, none of them /set_vocabulary)."""
    deadline = time.monotonic() + timeout
    while True:
        found = sorted(name for name, types in node.get_service_names_and_types() if SERVICE_TYPE in types)
        if DEFAULT_SERVICE in found:
            return DEFAULT_SERVICE
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            node.get_logger().error(f"several SetVocabulary services {found}: choose one with --service")
            return None
        if time.monotonic() > deadline:
            return None
        rclpy.spin_once(node, timeout_sec=0.1)


def call(node: Node, service: str, request: SetVocabulary.Request, timeout: float):
    """Send `request` to `service`; the response, or None when the service does not answer in time."""
    client = node.create_client(SetVocabulary, service)
    try:
        if not client.wait_for_service(timeout_sec=timeout):
            return None
        future = client.call_async(request)
        rclpy.spin_until_future_complete(node, future, timeout_sec=timeout)
        return future.result() if future.done() else None
    finally:
        node.destroy_client(client)


def set_vocabulary(tokens: Sequence[str], templates: Sequence[str] = (), service: str | None = None,
                   timeout: float = 10.0) -> int:
    """Parse `tokens`, call the service, print the reply. Exit code: 0 accepted, 1 refused, 2 no answer."""
    names, flags = parse_classes(tokens)
    rclpy.init()
    node = rclpy.create_node("maskclip_set_vocabulary")
    try:
        target = service or find_service(node, timeout)
        if target is None:
            print(f"no SetVocabulary service found within {timeout:.0f} s (is the node active?)")
            return 2
        reply = call(node, target, SetVocabulary.Request(class_names=names, is_thing=flags,
                                                         prompt_templates=list(templates)), timeout)
        if reply is None:
            print(f"{target} did not answer within {timeout:.0f} s")
            return 2
        print(f"{'accepted' if reply.success else 'REFUSED'}: {reply.message}")
        print(f"active vocabulary v{reply.version}: {', '.join(reply.class_names)}")
        return 0 if reply.success else 1
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
