"""The `maskclip-ros` command.

Every subcommand is one module with ``add_arguments(parser)`` and ``run(args) -> exit code``, listed once in
``COMMANDS`` below. Only the module of the command being run is imported, so `maskclip-ros --help` imports
nothing heavy and the commands that need no ROS (training, evaluation, benchmarks of the model, the world,
the small CLIP) run on a machine without rclpy. ROS commands import rclpy inside ``run``.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help). Library commands live in maskclip_ros.commands, ROS ones in
# maskclip_ros.ros.commands.
COMMANDS = {
    "demo": ("maskclip_ros.ros.commands.demo", "rosbag in, labelled bag + overlays + summary out (make demo)"),
    "node": ("maskclip_ros.ros.commands.node", "run the MaskCLIP segmentation node (lifecycle node 'maskclip')"),
    "set-vocabulary": ("maskclip_ros.ros.commands.set_vocabulary",
                       "replace the running node's vocabulary (SetVocabulary service)"),
    "replay": ("maskclip_ros.ros.commands.replay", "publish a rosbag2 (sqlite3 or mcap) in real time, with /clock"),
    "record": ("maskclip_ros.ros.commands.record", "record topics to a rosbag2 (mcap or sqlite3)"),
    "bench-node": ("maskclip_ros.ros.commands.bench_node",
                   "benchmark: node overhead (publish -> outputs) over the model's own time"),
    "docs": ("maskclip_ros.ros.commands.docs",
             "write or check the README's topic/service/message/parameter reference"),
    "train": ("maskclip_ros.commands.train", "train RMA (frozen CLIP and proposals) on base classes"),
    "eval": ("maskclip_ros.commands.evaluate", "panoptic / semantic / instance metrics on a dataset"),
    "train-proposals": ("maskclip_ros.commands.train_proposals",
                        "train a class-agnostic mmdet proposal network (Mask R-CNN, Mask2Former)"),
    "make-world": ("maskclip_ros.commands.make_world", "write generated scenes as a COCO panoptic dataset"),
    "train-clip": ("maskclip_ros.commands.train_clip", "train the small CLIP on the generated world"),
    "eval-clip": ("maskclip_ros.commands.eval_clip", "zero-shot region accuracy of a CLIP on held-out scenes"),
    "eval-tracking": ("maskclip_ros.commands.eval_tracking", "MOTA / IDF1 / HOTA and 3D error on generated sequences"),
    "bench": ("maskclip_ros.commands.bench", "all benchmarks: model, proposals, node, matmul peak; JSON + plot"),
    "bench-model": ("maskclip_ros.commands.bench_model", "latency of crop / tokens / rma modes"),
    "bench-backends": ("maskclip_ros.commands.bench_backends", "torch / openvino / onnxruntime x fp32 / bf16 side by side"),
    "bench-tracking": ("maskclip_ros.commands.bench_tracking", "frame time with and without tracking + 3D, side by side"),
    "bench-proposals": ("maskclip_ros.commands.bench_proposals",
                        "ms per 640x480 frame and recall of each proposal backend"),
}


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Module docstrings as written, option defaults shown."""


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    """The parser, with the full options of the command named in ``argv`` (the others are listed only)."""
    parser = argparse.ArgumentParser(prog="maskclip-ros",
                                     description="Open-vocabulary panoptic segmentation (MaskCLIP) for ROS 2.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (module_name, help_text) in COMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, formatter_class=_Formatter)
        if name == chosen:
            module = importlib.import_module(module_name)
            sub.description = module.__doc__
            module.add_arguments(sub)
            sub.set_defaults(func=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    args.argv = argv  # the command line as given (a command may record it, e.g. beside a checkpoint)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        return int(args.func(args) or 0)
    except ModuleNotFoundError as error:
        if error.name and error.name.split(".")[0] in ("rclpy", "rcl_interfaces", "sensor_msgs", "std_msgs"):
            print(f"maskclip-ros {args.command} needs ROS 2 ({error.name} is not importable): source your ROS 2 "
                  "setup (e.g. /opt/ros/kilted/setup.bash) or use the project's venv (make setup)", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
