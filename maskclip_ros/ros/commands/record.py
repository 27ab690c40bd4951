"""`maskclip-ros record OUT --topics T ...`: record topics (e.g. the node's outputs) into a new rosbag2
directory until Ctrl-C, --duration or --max-messages. Topics are subscribed once they have a publisher (QoS
matched to it); the log says "recorder ready" once every subscription is matched, and what is published
from then on is recorded."""
from __future__ import annotations


def add_arguments(parser) -> None:
    from maskclip_ros.commands import set_defaults

    parser.add_argument("out", help="new rosbag2 directory (must not exist)")
    parser.add_argument("--topics", nargs="+", required=True, help="topics to record")
    parser.add_argument("--storage", choices=("mcap", "sqlite3"), help="bag storage")
    parser.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0 = never)")
    parser.add_argument("--max-messages", type=int, default=0, help="stop after this many messages (0 = never)")
    set_defaults(parser, "record")


def run(args) -> int:
    import time
    from pathlib import Path

    import rclpy
    from rclpy.executors import ExternalShutdownException

    from maskclip_ros.ros.bags import Recorder

    rclpy.init()
    node = rclpy.create_node("maskclip_record")
    recorder = Recorder(node, Path(args.out), args.topics, storage=args.storage)
    end = time.monotonic() + args.duration if args.duration > 0 else float("inf")
    try:
        while time.monotonic() < end and not (args.max_messages and recorder.total >= args.max_messages):
            rclpy.spin_once(node, timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        recorder.close()
        node.destroy_node()
        rclpy.try_shutdown()
    print(f"recorded {recorder.counts} into {args.out}")
    return 0
