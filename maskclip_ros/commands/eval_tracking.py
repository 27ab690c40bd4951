"""`maskclip-ros eval-tracking --out DIR`: track ids and 3D of the Segmenter + the per-frame stage on held-out
generated sequences with depth (maskclip_ros.evaluation.tracking_runner): MOTA, IDF1, ID switches (and per 100
processed frames), HOTA and the 3D centroid error (median, p90, relative to the depth), per proposal source.
Writes DIR/results.json ({source: metrics}) and DIR/results.md.

Model, tracking and depth settings from config/default.yaml (+ --params-file, --set tracking.high_score=0.6);
the sequences' motion and camera from config/world.yaml section ``sequences`` (+ --config, --set
sequences.fps=15); the run's defaults (sources, sequences, frames, seed, frame skip) from config/commands.yaml
section ``eval_tracking``. --quick runs the short variant (quick_sources, quick_sequences x quick_frames).
"""
from __future__ import annotations

import argparse

TARGETS = ("gt_idf1", "gt_switches_per_100", "regions_idf1", "centroid_rel_median")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from maskclip_ros.commands import add_config_arguments, add_progress_argument, set_defaults

    p.add_argument("--out", required=True, help="output directory (results.json, results.md)")
    p.add_argument("--quick", action="store_true", help="quick_sequences x quick_frames instead of sequences x frames")
    p.add_argument("--sources", nargs="+", help="proposal sources: gt (all ground-truth masks), gt_things, oracle, "
                                                "regions")
    p.add_argument("--quick-sources", nargs="+", help="proposal sources with --quick")
    p.add_argument("--sequences", type=int, help="held-out sequences per source")
    p.add_argument("--frames", type=int, help="camera frames per sequence")
    p.add_argument("--quick-sequences", type=int, help="sequences with --quick")
    p.add_argument("--quick-frames", type=int, help="camera frames per sequence with --quick")
    p.add_argument("--seed", type=int, help="world seed of the sequences")
    p.add_argument("--frame-skip", type=int, help="process every n-th camera frame (the node's newest-frame policy)")
    p.add_argument("--iou-threshold", type=float, help="least mask IoU of a prediction matched to ground truth")
    p.add_argument("--min-gt-area", type=int, help="ground-truth things with fewer visible pixels are ignored")
    p.add_argument("--threads", type=int, help="torch CPU threads (0 = torch's default)")
    for name in TARGETS:
        p.add_argument(f"--target-{name.replace('_', '-')}", dest=f"target_{name}", type=float, help=argparse.SUPPRESS)
    add_config_arguments(p, side="world.yaml")
    add_progress_argument(p)
    set_defaults(p, "eval_tracking")


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    import torch

    from maskclip_ros import config
    from maskclip_ros.data.sequences import SequenceConfig
    from maskclip_ros.data.world import CONFIG_FILE, WorldConfig
    from maskclip_ros.evaluation.tracking import TrackingEvalConfig, write_results
    from maskclip_ros.evaluation.tracking_runner import EvalTrackingConfig, eval_tracking, targets_report
    from maskclip_ros.pipeline import PARAMS_FILE, SegmenterConfig
    from maskclip_ros.tracking.stage import PerceptionConfig

    if args.threads:
        torch.set_num_threads(args.threads)
    params, side = tuple(args.params_files), tuple(args.side_files)
    cfg = config.load({"model": config.Source(SegmenterConfig, PARAMS_FILE, params, partial=True),
                       "perception": config.Source(PerceptionConfig, PARAMS_FILE, params, partial=True),
                       "sequences": config.Source(SequenceConfig, CONFIG_FILE, side, section="sequences"),
                       "world": config.Source(WorldConfig, CONFIG_FILE, side, section="world")}, args.sets)
    opts = EvalTrackingConfig(sources=tuple(args.quick_sources if args.quick else args.sources),
                              num_sequences=args.quick_sequences if args.quick else args.sequences,
                              frames=args.quick_frames if args.quick else args.frames, seed=args.seed,
                              frame_skip=args.frame_skip,
                              matching=TrackingEvalConfig(iou_threshold=args.iou_threshold,
                                                          min_gt_area=args.min_gt_area))
    results = eval_tracking(cfg["model"], cfg["perception"], cfg["sequences"], cfg["world"], opts,
                            progress=not args.no_progress)
    targets = targets_report(results, {k[len("target_"):]: v for k, v in vars(args).items()
                                       if k.startswith("target_")})
    notes = [f"{opts.num_sequences} sequences x {opts.frames} camera frames of world seed {opts.seed}, one frame in "
             f"{opts.frame_skip} processed; command: maskclip-ros {' '.join(args.argv)}", *targets]
    write_results(args.out, results, title="Tracking and 3D on generated sequences", notes=notes)
    summary = {s: {k: r[k] for k in ("idf1", "mota", "hota", "id_switches", "id_switches_per_100_frames",
                                     "centroid_error_rel_median")} for s, r in results.items()}
    print(json.dumps(summary, indent=1))
    print("\n".join(targets))
    print(f"wrote {Path(args.out) / 'results.json'} and results.md")
    return 0
