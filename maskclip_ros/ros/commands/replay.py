"""`maskclip-ros replay BAG [--rate R] [--loop] [--topic-map FROM:=TO ...]`: publish every message of a
rosbag2 (sqlite3 or mcap) at its recorded pace (raw CDR). Waits until the camera topics have subscribers;
publishes the bag time on /clock (for nodes with use_sim_time)."""
from __future__ import annotations


def add_arguments(parser) -> None:
    from maskclip_ros.commands import set_defaults

    parser.add_argument("bag", help="rosbag2 directory (sqlite3 or mcap storage)")
    parser.add_argument("--rate", type=float, help="playback speed factor")
    parser.add_argument("--loop", action="store_true", help="start again at the end (until Ctrl-C)")
    parser.add_argument("--topic-map", nargs="+", default=[], metavar="FROM:=TO",
                        help="publish topic FROM of the bag as TO")
    parser.add_argument("--no-clock", action="store_true", help="do not publish /clock")
    parser.add_argument("--wait-for", nargs="*", default=None, metavar="TOPIC",
                        help="bag topics (or /clock) that need a subscriber before playback (default: image topics)")
    parser.add_argument("--min-subscribers", type=int, help="subscribers each --wait-for topic needs before playback")
    parser.add_argument("--wait-timeout", type=float, help="seconds to wait for subscribers before publishing anyway")
    set_defaults(parser, "replay")


def run(args) -> int:
    from pathlib import Path

    import rclpy
    from rclpy.executors import ExternalShutdownException

    from maskclip_ros.ros.bags import Replayer, parse_topic_map

    rclpy.init()
    node = rclpy.create_node("maskclip_replay")
    try:
        replayer = Replayer(node, Path(args.bag), rate=args.rate, loop=args.loop,
                            topic_map=parse_topic_map(args.topic_map), clock=not args.no_clock,
                            wait_for=args.wait_for, wait_timeout=args.wait_timeout,
                            min_subscribers=args.min_subscribers)
        count = replayer.run()
        print(f"published {count} messages from {args.bag}")
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0
