"""Evaluate a Segmenter on a COCO-panoptic-format dataset: PQ/SQ/RQ, mIoU and mask AP, JSON + markdown.

The vocabulary is every category of the dataset (base and novel together, as an open-vocabulary
benchmark asks); results are also averaged per split tag (``base`` / ``novel``) when categories carry one.
Masks come from the Segmenter's proposal backend or, as in the paper's ablation, from the ground-truth
segments (``proposals="gt"``: every non-crowd segment becomes one proposal, so only classification and,
in ``rma`` mode, refinement are measured). Mask AP scores the panoptic output's thing segments by their
class probability.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from maskclip_ros.data.coco_panoptic import PanopticDataset, PanopticSample, segment_masks
from maskclip_ros.evaluation.metrics import (InstanceEvaluator, PanopticEvaluator, SemanticEvaluator,
                                             categories_from_coco)

PROPOSAL_SOURCES = ("backend", "gt")


@dataclass(frozen=True)
class EvalConfig:
    """The ``eval`` section of config/train.yaml (documented there)."""
    proposals: str      # backend (proposals.backend) or gt (ground-truth masks)
    max_images: int     # evaluate at most this many images (0 = all)
    instance: bool      # also compute mask AP on thing classes
    threads: int        # torch CPU threads (0 = torch's default)

    def __post_init__(self) -> None:
        if self.proposals not in PROPOSAL_SOURCES:
            raise ValueError(f"eval.proposals must be one of {PROPOSAL_SOURCES}, got {self.proposals!r}")


def gt_proposals(sample: PanopticSample) -> np.ndarray:
    """(G, H, W) float32 masks of the sample's non-crowd segments (the paper's GT-mask ablation)."""
    ids = [s["id"] for s in sample.segments if not s.get("iscrowd", 0)]
    return segment_masks(sample.panoptic, ids).astype(np.float32)


def evaluate(dataset: PanopticDataset, segmenter, *, proposals: str = "backend", max_images: int = 0,
             instance: bool = True, progress: bool = True) -> dict[str, Any]:
    """Run ``segmenter`` over (the first ``max_images`` of) ``dataset`` and compute every metric.

    Returns {"panoptic": PanopticEvaluator.compute(), "semantic": ..., "instance": ... or None,
    "images": n, "seconds_per_image": float, "timings_ms": mean per stage}."""
    from tqdm import tqdm
    if proposals not in PROPOSAL_SOURCES:
        raise ValueError(f"proposals must be one of {PROPOSAL_SOURCES}, got {proposals!r}")
    cats = categories_from_coco(dataset.categories)
    vocabulary = segmenter.make_vocabulary([c.name for c in cats], [c.isthing for c in cats])
    pan, sem = PanopticEvaluator(cats), SemanticEvaluator(cats)
    inst = InstanceEvaluator(cats) if instance else None
    n = len(dataset) if max_images <= 0 else min(max_images, len(dataset))
    timings: dict[str, float] = {}
    started = time.perf_counter()
    for i in tqdm(range(n), desc="eval", unit="img", disable=not progress, dynamic_ncols=True):
        sample = dataset[i]
        external = gt_proposals(sample) if proposals == "gt" else None
        result = segmenter.segment(sample.image, vocabulary, external_masks=external)
        pred_segments = {s.id: cats[s.class_index].id for s in result.segments}
        gt_segments = {s["id"]: s["category_id"] for s in sample.segments if not s.get("iscrowd", 0)}
        pan.update(result.panoptic, pred_segments, sample.panoptic, gt_segments)
        sem.update(result.panoptic, pred_segments, sample.panoptic, gt_segments)
        if inst is not None:
            things = [s for s in result.segments if s.is_thing]
            masks = segment_masks(result.panoptic, [s.id for s in things])
            inst.update(masks, [cats[s.class_index].id for s in things], [s.score for s in things],
                        sample.panoptic, sample.segments)
        for k, v in result.timings_ms.items():
            timings[k] = timings.get(k, 0.0) + v / n
    return {"panoptic": pan.compute(), "semantic": sem.compute(),
            "instance": inst.compute() if inst is not None else None, "images": n,
            "seconds_per_image": (time.perf_counter() - started) / max(n, 1), "timings_ms": timings}


def evaluate_variants(data: str, split: str, layout: str, variants: list[tuple[str, list[str]]], *,
                      params_files=(), side_files=(), sets=(), progress: bool = True) -> dict[str, dict]:
    """Evaluate each named variant (a list of dotted overrides on top of ``sets``) on one dataset:
    ``{name: evaluate(...) + settings}``. Settings come from config/default.yaml (+ params files) and
    the eval section of config/train.yaml (+ side files)."""
    import json

    import torch

    from maskclip_ros import config
    from maskclip_ros.config import to_dict
    from maskclip_ros.pipeline import PARAMS_FILE, SegmenterConfig, build_segmenter

    dataset = PanopticDataset.from_layout(data, split, layout)
    results = {}
    for name, extra in variants:
        cfg = config.load({"model": config.Source(SegmenterConfig, PARAMS_FILE, tuple(params_files), partial=True),
                           "eval": config.Source(EvalConfig, "train.yaml", tuple(side_files), section="eval")},
                          [*sets, *extra])
        ev = cfg["eval"]
        if ev.threads > 0:
            torch.set_num_threads(ev.threads)
        segmenter = build_segmenter(cfg["model"], with_proposer=ev.proposals == "backend")
        results[name] = evaluate(dataset, segmenter, proposals=ev.proposals, max_images=ev.max_images,
                                 instance=ev.instance, progress=progress)
        results[name]["settings"] = {"sets": [*sets, *extra], "maskclip": to_dict(cfg["model"].maskclip)}
        print(f"{name}: " + json.dumps(results[name]["panoptic"]["all"]), flush=True)
    return results


def write_results(results: dict[str, dict], out: Path) -> None:
    """``results.json`` and ``results.md`` (a comparison table and per-variant details) in ``out``."""
    import json

    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    markdown = "## Summary\n\n" + comparison_markdown(results) + "\n" + \
        "\n".join(detail_markdown(name, r) for name, r in results.items())
    (out / "results.md").write_text(markdown)
    print(comparison_markdown(results))


# ------------------------------------------------------------------------------------------- markdown
def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def summary_row(result: dict[str, Any]) -> dict[str, float | None]:
    """The headline numbers of one evaluation (PQ all/things/stuff/base/novel, SQ, RQ, mIoU, AP)."""
    pan, sem, inst = result["panoptic"], result["semantic"], result.get("instance") or {}
    row = {"PQ": pan["all"]["pq"], "PQ-th": pan["things"]["pq"], "PQ-st": pan["stuff"]["pq"],
           "SQ": pan["all"]["sq"], "RQ": pan["all"]["rq"]}
    for split in ("base", "novel"):
        if split in pan:
            row[f"PQ-{split}"] = pan[split]["pq"]
    row["mIoU"] = sem["miou"]
    for split in ("base", "novel"):
        if split in sem:
            row[f"mIoU-{split}"] = sem[split]
    row["AP"] = inst.get("ap")
    row["AP50"] = inst.get("ap50")
    row["s/img"] = result["seconds_per_image"]
    return row


def comparison_markdown(results: dict[str, dict[str, Any]]) -> str:
    """One table row per named evaluation: the summary numbers side by side."""
    rows = {name: summary_row(r) for name, r in results.items()}
    columns = list(dict.fromkeys(k for row in rows.values() for k in row))
    lines = ["| run | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, row in rows.items():
        cells = [f"{row.get(c):.2f}" if c == "s/img" and row.get(c) is not None else _fmt(row.get(c))
                 for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def detail_markdown(name: str, result: dict[str, Any]) -> str:
    """Per-group and per-class tables of one evaluation."""
    pan, sem, inst = result["panoptic"], result["semantic"], result.get("instance") or {}
    lines = [f"### {name}", "", f"{result['images']} images, {result['seconds_per_image']:.2f} s/image", "",
             "| group | PQ | SQ | RQ | classes |", "|---|---|---|---|---|"]
    for group, v in pan.items():
        if group != "per_class":
            lines.append(f"| {group} | {_fmt(v['pq'])} | {_fmt(v['sq'])} | {_fmt(v['rq'])} | {v['n']} |")
    lines += ["", "| class | thing | split | PQ | SQ | RQ | TP | FP | FN | IoU | AP |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    ap = (inst.get("per_class") or {})
    for cname, v in pan["per_class"].items():
        lines.append(f"| {cname} | {'yes' if v['isthing'] else 'no'} | {v['split'] or '-'} | {_fmt(v['pq'])} | "
                     f"{_fmt(v['sq'])} | {_fmt(v['rq'])} | {v['tp']} | {v['fp']} | {v['fn']} | "
                     f"{_fmt(sem['per_class'].get(cname))} | {_fmt(ap.get(cname))} |")
    if inst:
        lines += ["", f"Mask AP (things): AP {_fmt(inst.get('ap'))}, AP50 {_fmt(inst.get('ap50'))}, "
                      f"AP75 {_fmt(inst.get('ap75'))}"]
    return "\n".join(lines) + "\n"
