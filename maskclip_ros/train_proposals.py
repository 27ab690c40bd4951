"""`maskclip-ros train-proposals`: train a class-agnostic proposal network (Mask R-CNN / Mask2Former,
mmdet 3.x configs in config/proposals/) with mmdet's own Runner.

Data: a COCO instances JSON plus its image folder, or a COCO-panoptic dataset root (the generated world,
COCO, ADE20K layouts) whose segments are converted to instances. Every category becomes the one class
"object" (class-agnostic, as in the paper). Several GPUs: ``--gpus N`` re-launches itself under torchrun
(mmdet's ``pytorch`` launcher), or run ``torchrun --nproc_per_node N -m maskclip_ros.cli train-proposals
... --launcher pytorch`` yourself.

Writes mmengine's checkpoints to ``--work-dir`` and, at the end, ``proposals_final.pth``: a plain state dict
(loadable with ``torch.load(weights_only=True)``) for ``proposals.mmdet.checkpoint``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

FINAL_CHECKPOINT = "proposals_final.pth"
AGNOSTIC_CATEGORY = {"id": 1, "name": "object", "supercategory": "object"}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train-proposals", help="train a class-agnostic mmdet proposal network (Mask R-CNN, Mask2Former)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
                   help="override config entries, mmengine style, e.g. train_pipeline.2.scale=(320,240)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.gpus > 1 and args.launcher == "none":
        return _relaunch_with_torchrun(args)
    from maskclip_ros.proposals.mmdet_backend import import_mmdet, resolve_config

    import_mmdet()
    work_dir = Path(args.work_dir).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    ann_file, image_dir = prepare_annotations(args, work_dir)
    cfg = build_train_config(str(resolve_config(args.config)), args, ann_file, image_dir, work_dir)
    checkpoint = train(cfg)
    if checkpoint is not None:
        print(f"trained weights: {checkpoint}\nuse them with proposals.backend: mmdet, "
              f"proposals.mmdet.config: {args.config}, proposals.mmdet.checkpoint: {checkpoint}")
    return 0


def _relaunch_with_torchrun(args: argparse.Namespace) -> int:
    """Run this command once per GPU under torchrun, with the pytorch launcher."""
    argv = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={args.gpus}",
            "-m", "maskclip_ros.cli", "train-proposals", "--launcher", "pytorch"]
    for key, value in vars(args).items():
        if key in ("func", "command", "gpus", "launcher") or value is None or value is False:
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


# --------------------------------------------------------------------------------------------- annotations
def prepare_annotations(args: argparse.Namespace, work_dir: Path) -> tuple[Path, Path]:
    """Write a class-agnostic COCO instances JSON into the work dir; returns (json, image folder)."""
    data = Path(args.data)
    out = work_dir / "annotations_agnostic.json"
    if data.is_file():
        if not args.images:
            raise SystemExit("train-proposals: --images is required with a COCO instances JSON")
        coco = json.loads(data.read_text(encoding="utf-8"))
        _write_atomic(out, agnostic_instances(coco))
        return out, Path(args.images).resolve()
    if data.is_dir():
        from maskclip_ros.data.coco_panoptic import PanopticDataset

        dataset = PanopticDataset.from_layout(data, args.split, args.layout)
        _write_atomic(out, panoptic_to_instances(dataset, args.with_stuff))
        return out, dataset.image_dir.resolve()
    raise SystemExit(f"train-proposals: --data {data} is neither a JSON file nor a dataset folder")


def agnostic_instances(coco: dict) -> dict:
    """A COCO instances dict with every annotation relabelled to the single category "object" (new dict)."""
    annotations = [dict(a, category_id=AGNOSTIC_CATEGORY["id"]) for a in coco["annotations"]]
    return {"info": coco.get("info", {}), "images": coco["images"], "annotations": annotations,
            "categories": [AGNOSTIC_CATEGORY]}


def panoptic_to_instances(dataset, with_stuff: bool) -> dict:
    """COCO instances dict (RLE masks, one "object" category) from a PanopticDataset's segments."""
    from pycocotools import mask as mask_utils

    images, annotations = [], []
    for index in range(len(dataset)):
        sample = dataset[index]
        h, w = sample.panoptic.shape
        image_id = len(images) + 1
        images.append({"id": image_id, "file_name": sample.file_name, "height": h, "width": w})
        for seg in sample.segments:
            if not (seg["isthing"] or with_stuff):
                continue
            mask = np.asfortranarray((sample.panoptic == seg["id"]).astype(np.uint8))
            rle = mask_utils.encode(mask)
            area = int(mask_utils.area(rle))
            if area == 0:
                continue
            rle["counts"] = rle["counts"].decode("ascii")
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": 1,
                                "segmentation": rle, "area": area,
                                "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                                "iscrowd": int(seg.get("iscrowd", 0))})
    return {"info": {"description": "class-agnostic instances from a panoptic dataset"}, "images": images,
            "annotations": annotations, "categories": [AGNOSTIC_CATEGORY]}


def _write_atomic(path: Path, data: dict) -> None:
    # Every rank of a distributed run writes the same content; replace atomically so none reads half a file.
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------------ training
def build_train_config(config_path: str, args: argparse.Namespace, ann_file: Path, image_dir: Path,
                       work_dir: Path):
    """The mmengine Config to train: dataset paths, work dir, launcher, optional schedule/batch overrides."""
    from mmengine.config import Config, DictAction

    cfg = Config.fromfile(config_path)
    dataset = cfg.train_dataloader.dataset
    dataset.data_root = ""
    dataset.ann_file = str(ann_file)
    dataset.data_prefix = dict(img=str(image_dir) + os.sep)
    cfg.work_dir = str(work_dir)
    cfg.launcher = args.launcher
    cfg.resume = bool(args.resume)
    if args.batch_size > 0:
        cfg.train_dataloader.batch_size = args.batch_size
    if args.workers >= 0:
        cfg.train_dataloader.num_workers = args.workers
        cfg.train_dataloader.persistent_workers = args.workers > 0
    if args.max_iters > 0:
        _iteration_schedule(cfg, args.max_iters)
    if args.cfg_options:
        options = {}
        for item in args.cfg_options:
            key, sep, value = item.partition("=")
            if not sep:
                raise SystemExit(f"train-proposals: --cfg-options entries are KEY=VALUE, got {item!r}")
            options[key] = DictAction._parse_iterable(value)
        cfg.merge_from_dict(options)
    return cfg


def _iteration_schedule(cfg, max_iters: int) -> None:
    """Replace the schedule by ``max_iters`` iterations: warm-up, then steps at 2/3 and 11/12 (as in 1x)."""
    cfg.train_cfg = dict(type="IterBasedTrainLoop", max_iters=max_iters, val_interval=max_iters)
    cfg.param_scheduler = [
        dict(type="LinearLR", start_factor=0.001, by_epoch=False, begin=0, end=min(500, max_iters)),
        dict(type="MultiStepLR", begin=0, end=max_iters, by_epoch=False,
             milestones=[max(1, max_iters * 2 // 3), max(1, max_iters * 11 // 12)], gamma=0.1)]
    cfg.default_hooks.checkpoint = dict(type="CheckpointHook", interval=max_iters, by_epoch=False,
                                        save_last=True, max_keep_ckpts=1)
    cfg.default_hooks.logger = dict(type="LoggerHook", interval=min(50, max_iters))


def train(cfg) -> Path | None:
    """Train with mmdet's Runner; rank 0 then writes the plain state dict FINAL_CHECKPOINT (returned)."""
    import torch
    from mmengine.dist import get_rank
    from mmengine.model import is_model_wrapper
    from mmengine.runner import Runner

    runner = Runner.from_cfg(cfg)
    runner.train()
    if get_rank() != 0:
        return None
    model = runner.model.module if is_model_wrapper(runner.model) else runner.model
    path = Path(cfg.work_dir) / FINAL_CHECKPOINT
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "meta": {"classes": ["object"], "iter": int(runner.iter)}}, path)
    return path
