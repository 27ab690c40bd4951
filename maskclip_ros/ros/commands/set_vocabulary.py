"""`maskclip-ros set-vocabulary person chair floor:stuff wall:stuff [--templates ...]`: change the running
node's vocabulary. NAME or NAME:thing is a thing class, NAME:stuff a stuff class (the service's own rule).
Without --service it calls /set_vocabulary (the launch file's name) if that has a server, else the only
SetVocabulary server in the graph, and says which. Exit code 0 accepted, 1 refused, 2 no service / no answer."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from maskclip_ros.commands import set_defaults

    parser.add_argument("classes", nargs="+", metavar="NAME[:thing|:stuff]")
    parser.add_argument("--templates", nargs="+", default=[], metavar="TEMPLATE",
                        help='prompt templates with "{}" for the class name (default: keep the current ones)')
    parser.add_argument("--service", default=None, help="service name (default: found in the graph, see above)")
    parser.add_argument("--timeout", type=float, help="seconds to wait for the service and its answer")
    set_defaults(parser, "set_vocabulary")


def run(args) -> int:
    from maskclip_ros.ros.client import set_vocabulary

    return set_vocabulary(args.classes, args.templates, args.service, args.timeout)
