"""`maskclip-ros demo` (what `make demo` runs): rosbag in, labelled bag + overlays + summary out.

Writes a rosbag2 of held-out generated scenes (unless --bag), runs the node (config/demo.yaml unless
--params-file) on it in real time with a recorder of its outputs, switches the vocabulary mid-stream via
/set_vocabulary, then writes OUT/output_bag, OUT/overlays/*.png, OUT/demo.gif and OUT/summary.{json,md}
(PQ before and after the switch when the bag has ground truth). Defaults: config/commands.yaml (demo).
"""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    from maskclip_ros.commands import set_defaults

    p.add_argument("--bag", default=None, help="replay this rosbag2 instead of a generated one")
    p.add_argument("--topic", help="camera image topic in the bag")
    p.add_argument("--depth-topic", help="registered depth image topic in the bag")
    p.add_argument("--camera-info-topic", help="camera_info topic in the bag")
    p.add_argument("--frames", type=int, help="frames of the generated bag")
    p.add_argument("--hz", type=float, help="frame rate of the generated bag")
    p.add_argument("--seed", type=int, help="world seed of the generated (held-out) scenes")
    p.add_argument("--params-file", dest="params_files", action="append", default=[], metavar="FILE",
                   help="node params file (repeatable; default: config/demo.yaml)")
    p.add_argument("--switch-to", nargs="+", help="vocabulary set mid-stream (name or name:stuff)")
    p.add_argument("--timeout", type=float, help="seconds to wait for the node to start and for each stage")
    p.add_argument("--service-timeout", type=float, help="seconds to wait for the vocabulary change's answer")
    p.add_argument("--gif-frame-ms", type=int, help="display time of one GIF frame (ms)")
    p.add_argument("--gif-scale", type=float, help="GIF frames are the overlays scaled by this factor")
    p.add_argument("--out", help="output directory (replaced)")
    set_defaults(p, "demo")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from maskclip_ros.ros.demo import DemoSettings, run_demo

    summary = run_demo(DemoSettings(
        bag=Path(args.bag) if args.bag else None, topic=args.topic, depth_topic=args.depth_topic,
        camera_info_topic=args.camera_info_topic, frames=args.frames, hz=args.hz, seed=args.seed,
        params_files=tuple(args.params_files), switch_to=tuple(args.switch_to), timeout=args.timeout,
        service_timeout=args.service_timeout, gif_frame_ms=args.gif_frame_ms, gif_scale=args.gif_scale,
        out=Path(args.out)))
    return 0 if summary["frames_out"] > 0 else 1
