"""`maskclip-ros train-proposals`: train a class-agnostic proposal network (Mask R-CNN / Mask2Former,
mmdet 3.x configs in config/proposals/) with mmdet's own Runner (maskclip_ros.training.proposals).

Several GPUs: ``--gpus N`` re-launches itself under torchrun (mmdet's ``pytorch`` launcher), or run
``torchrun --nproc_per_node N -m maskclip_ros.cli train-proposals ... --launcher pytorch`` yourself.
``--cfg-options`` overrides entries of the mmdet config itself (mmengine's syntax); the project's own
settings are not involved.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

LAUNCHER_FLAGS = ("func", "command", "argv", "gpus", "launcher")  # not passed on when re-launching


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True,
                   help="mmdet config; relative names resolve against config/proposals/ "
                        "(mask-rcnn_r50_fpn_1x_agnostic.py, mask2former_r50_agnostic.py)")
    p.add_argument("--data", required=True,
                   help="COCO instances JSON (with --images), or a COCO-panoptic dataset root (--layout, --split)")
    p.add_argument("--images", help="image folder of a COCO instances JSON")
    p.add_argument("--layout", choices=("world", "coco", "ade20k"), default="world",
                   help="panoptic dataset layout under --data (a folder)")
    p.add_argument("--split", default="train", help="panoptic dataset split")
    p.add_argument("--with-stuff", action="store_true",
                   help="panoptic data: also train on stuff segments as objects (proposals for stuff too)")
    p.add_argument("--work-dir", required=True, help="output folder (logs, checkpoints)")
    p.add_argument("--max-iters", type=int, default=0,
                   help="train this many iterations instead of the config's schedule (0 = the config's)")
    p.add_argument("--batch-size", type=int, default=0, help="images per GPU (0 = the config's)")
    p.add_argument("--workers", type=int, default=-1, help="data loader workers per GPU (-1 = the config's)")
    p.add_argument("--gpus", type=int, default=1, help="GPUs on this machine; >1 re-launches under torchrun")
    p.add_argument("--launcher", choices=("none", "pytorch"), default="none",
                   help="distributed launcher (pytorch = started by torchrun)")
    p.add_argument("--resume", action="store_true", help="resume from the work dir's last checkpoint")
    p.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE",
                   help="override mmdet config entries, mmengine style, e.g. train_pipeline.2.scale=(320,240)")


def run(args: argparse.Namespace) -> int:
    if args.gpus > 1 and args.launcher == "none":
        return _relaunch_with_torchrun(args)
    from maskclip_ros.proposals.mmdet_backend import import_mmdet, resolve_config
    from maskclip_ros.training.proposals import (ProposalTraining, build_train_config, prepare_annotations,
                                                 train_proposal_network)

    import_mmdet()
    work_dir = Path(args.work_dir).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    try:
        ann_file, image_dir = prepare_annotations(Path(args.data), work_dir, images=args.images, split=args.split,
                                                  layout=args.layout, with_stuff=args.with_stuff)
    except ValueError as error:
        print(f"train-proposals: {error}", file=sys.stderr)
        return 2
    how = ProposalTraining(launcher=args.launcher, resume=args.resume, batch_size=args.batch_size,
                           workers=args.workers, max_iters=args.max_iters, cfg_options=tuple(args.cfg_options))
    checkpoint = train_proposal_network(build_train_config(resolve_config(args.config), ann_file, image_dir,
                                                           work_dir, how))
    if checkpoint is not None:
        print(f"trained weights: {checkpoint}\nuse them with proposals.backend: mmdet, "
              f"proposals.mmdet.config: {args.config}, proposals.mmdet.checkpoint: {checkpoint}")
    return 0


def _relaunch_with_torchrun(args: argparse.Namespace) -> int:
    """Run this command once per GPU under torchrun, with the pytorch launcher."""
    argv = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={args.gpus}",
            "-m", "maskclip_ros.cli", "train-proposals", "--launcher", "pytorch"]
    for key, value in vars(args).items():
        if key in LAUNCHER_FLAGS or value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif isinstance(value, list):
            if value:
                argv += [flag, *map(str, value)]
        else:
            argv += [flag, str(value)]
    return subprocess.call(argv)
