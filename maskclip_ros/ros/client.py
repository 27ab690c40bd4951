"""Client of the node's SetVocabulary service (the `maskclip-ros set-vocabulary` command).

Names carry the same optional ``:thing`` / ``:stuff`` suffixes the service takes (one rule:
``model.vocabulary.split_kind_suffixes``); they are sent as typed and the node applies the rule, so the CLI,
``ros2 service call`` and the parameters behave alike.
"""
from __future__ import annotations

import time
from collections.abc import Sequence

import rclpy
from rclpy.node import Node

from maskclip_ros.ros.interface import LAUNCH_SERVICE_NAME, SERVICE_TYPE
from maskclip_ros.ros.spin import SPIN_STEP_S
from maskclip_ros.srv import SetVocabulary


def servers(node: Node) -> list[str]:
    """SetVocabulary service names that have a server right now (a client alone does not count)."""
    names = [name for name, types in node.get_service_names_and_types() if SERVICE_TYPE in types]
    return sorted(name for name in names if node.count_services(name) > 0)


def choose_service(found: Sequence[str]) -> str | None:
    """The service to call among those with a server: the launch file's /set_vocabulary, else the only one;
    None when there is none or the choice is ambiguous."""
    if LAUNCH_SERVICE_NAME in found:
        return LAUNCH_SERVICE_NAME
    return found[0] if len(found) == 1 else None


def find_service(node: Node, timeout: float) -> tuple[str | None, list[str]]:
    """Wait up to ``timeout`` s for a SetVocabulary server to choose; (chosen or None, all servers seen)."""
    deadline = time.monotonic() + timeout
    while True:
        found = servers(node)
        chosen = choose_service(found)
        if chosen is not None or len(found) > 1 or time.monotonic() > deadline:
            return chosen, found
        rclpy.spin_once(node, timeout_sec=SPIN_STEP_S)


def call(node: Node, service: str, request: SetVocabulary.Request, timeout: float):
    """Send ``request`` to ``service``; the response, or None when the service does not answer in time."""
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
    """Call the service with ``tokens`` (names with optional suffixes), print the reply.
    Exit code: 0 accepted, 1 refused, 2 no service / no answer."""
    rclpy.init()
    node = rclpy.create_node("maskclip_set_vocabulary")
    try:
        target, found = (service, [service]) if service else find_service(node, timeout)
        if target is None:
            print(f"several SetVocabulary services {found}: choose one with --service" if found else
                  f"no SetVocabulary service found within {timeout:.0f} s (is the node active?)")
            return 2
        print(f"calling {target}")
        reply = call(node, target, SetVocabulary.Request(class_names=list(tokens), prompt_templates=list(templates)),
                     timeout)
        if reply is None:
            print(f"{target} did not answer within {timeout:.0f} s")
            return 2
        print(f"{'accepted' if reply.success else 'REFUSED'}: {reply.message}")
        print(f"active vocabulary v{reply.version}: {', '.join(reply.class_names)}")
        return 0 if reply.success else 1
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
