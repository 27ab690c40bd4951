"""`maskclip-ros docs --write | --check`: regenerate or check the README's topic/service/message/parameter
reference (maskclip_ros.ros.reference), generated from the node's interface module, the .msg/.srv files and
config/default.yaml so it cannot drift. Needs no ROS."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--readme", type=Path, default=Path("README.md"), help="the README to write or check")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help="regenerate the section in place")
    mode.add_argument("--check", action="store_true", help="exit 1 when the section is out of date")


def run(args: argparse.Namespace) -> int:
    from maskclip_ros.ros.reference import generate, readme_section, write

    if args.write:
        write(args.readme)
        print(f"updated the reference in {args.readme}")
        return 0
    if readme_section(args.readme.read_text(encoding="utf-8")) != generate():
        print(f"{args.readme}: the reference is out of date; run `maskclip-ros docs --write`")
        return 1
    print("the README reference is up to date")
    return 0
