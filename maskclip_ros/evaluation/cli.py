"""`maskclip-ros eval`: PQ/SQ/RQ (all, things, stuff, base, novel), mIoU and mask AP of any mode and
proposal source on a COCO-panoptic-format dataset; writes ``results.json`` and ``results.md``.

Several configurations side by side (one table): repeat ``--variant "NAME:KEY=VALUE,KEY=VALUE"``, e.g.
``--variant "tokens/gt:maskclip.mode=tokens,eval.proposals=gt"``; each variant starts from the --set values.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers) -> None:
    from maskclip_ros.training.cli import add_data_arguments

    parser = subparsers.add_parser("eval", help="panoptic / semantic / instance metrics on a dataset",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arguments(parser, split="val")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME:KEY=VALUE,...",
                        help="evaluate a named configuration (repeatable); default: one run named 'eval'")
    parser.add_argument("--out", required=True, help="output directory (results.json, results.md)")
    parser.set_defaults(func=_run)


def parse_variant(text: str) -> tuple[str, list[str]]:
    """``"name:a=1,b=2"`` -> ``("name", ["a=1", "b=2"])``."""
    name, _, rest = text.partition(":")
    if not name.strip():
        raise ValueError(f"--variant needs a name before ':', got {text!r}")
    return name.strip(), [item for item in rest.split(",") if item.strip()]


def _run(args: argparse.Namespace) -> int:
    import torch

    from maskclip_ros.data.coco_panoptic import PanopticDataset
    from maskclip_ros.evaluation.runner import comparison_markdown, detail_markdown, evaluate
    from maskclip_ros.pipeline import build_segmenter
    from maskclip_ros.training.settings import load_settings, parse_sets

    dataset = PanopticDataset.from_layout(args.data, args.split, args.layout)
    variants = [parse_variant(v) for v in args.variant] or [("eval", [])]
    results = {}
    for name, sets in variants:
        params, sections = load_settings(args.params, args.config, parse_sets(args.sets + sets))
        ev = sections["eval"]
        if int(ev["threads"]) > 0:
            torch.set_num_threads(int(ev["threads"]))
        if ev["proposals"] == "gt":
            params.pop("proposals", None)  # no proposer needed
        segmenter = build_segmenter(params, device=str(params.get("device", "cpu")),
                                    precision=str(params.get("precision", "fp32")))
        results[name] = evaluate(dataset, segmenter, proposals=ev["proposals"], max_images=int(ev["max_images"]),
                                 instance=bool(ev["instance"]), progress=not args.no_progress)
        results[name]["settings"] = {"sets": args.sets + sets, "maskclip": params["maskclip"]}
        print(f"{name}: " + json.dumps({k: v for k, v in results[name]["panoptic"]["all"].items()}), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    markdown = "## Summary\n\n" + comparison_markdown(results) + "\n" + \
        "\n".join(detail_markdown(name, r) for name, r in results.items())
    (out / "results.md").write_text(markdown)
    print(comparison_markdown(results))
    return 0
