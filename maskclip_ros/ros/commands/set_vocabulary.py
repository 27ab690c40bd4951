"""`maskclip-ros set-vocabulary person chair floor:stuff wall:stuff [--templates ...]`: change the node's
vocabulary at runtime. Exit code 0 accepted, 1 refused, 2 no service / no answer."""
from __future__ import annotations


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "set-vocabulary", help="replace the running node's vocabulary (SetVocabulary service)",
        description="Call the node's SetVocabulary service and print the reply. NAME or NAME:thing is a "
                    "thing class, NAME:stuff a stuff class.")
    parser.add_argument("classes", nargs="+", metavar="NAME[:thing|:stuff]")
    parser.add_argument("--templates", nargs="+", default=[], metavar="TEMPLATE",
                        help='prompt templates with "{}" for the class name (default: keep the current ones)')
    parser.add_argument("--service", default=None,
                        help="service name (default: /set_vocabulary, else the only SetVocabulary service)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the service")
    parser.set_defaults(func=run)


def run(args) -> int:
    from maskclip_ros.ros.client import parse_classes, set_vocabulary

    try:
        parse_classes(args.classes)
    except ValueError as error:
        print(f"error: {error}")
        return 2
    return set_vocabulary(args.classes, args.templates, args.service, args.timeout)
