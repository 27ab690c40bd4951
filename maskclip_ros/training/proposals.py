"""Training of a class-agnostic proposal network (Mask R-CNN / Mask2Former, mmdet 3.x configs in
config/proposals/) with mmdet's own Runner (`maskclip-ros train-proposals`).

Data: a COCO instances JSON plus its image folder, or a COCO-panoptic dataset root (the generated world,
COCO, ADE20K layouts) whose segments are converted to instances. Every category becomes the one class
"object" (class-agnostic, as in the paper). Writes mmengine's checkpoints to the work dir and, at the end,
``proposals_final.pth``: a plain state dict (loadable with ``torch.load(weights_only=True)``) for
``proposals.mmdet.checkpoint``.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FINAL_CHECKPOINT = "proposals_final.pth"
AGNOSTIC_CATEGORY = {"id": 1, "name": "object", "supercategory": "object"}
# The short schedule of --max-iters (mmdet's 1x shape): linear warm-up from this factor over these
# iterations, then steps at 2/3 and 11/12; a log line every LOG_INTERVAL iterations.
WARMUP_START_FACTOR = 0.001
WARMUP_ITERS = 500
LOG_INTERVAL = 50


def prepare_annotations(data: Path, work_dir: Path, *, images: str | None, split: str, layout: str,
                        with_stuff: bool) -> tuple[Path, Path]:
    """Write a class-agnostic COCO instances JSON into the work dir; returns (json, image folder).

    ``data``: a COCO instances JSON (its images in ``images``) or a COCO-panoptic dataset root."""
    out = work_dir / "annotations_agnostic.json"
    if data.is_file():
        if not images:
            raise ValueError("a COCO instances JSON needs its image folder (--images)")
        coco = json.loads(data.read_text(encoding="utf-8"))
        _write_atomic(out, agnostic_instances(coco))
        return out, Path(images).resolve()
    if data.is_dir():
        from maskclip_ros.data.coco_panoptic import PanopticDataset

        dataset = PanopticDataset.from_layout(data, split, layout)
        _write_atomic(out, panoptic_to_instances(dataset, with_stuff))
        return out, dataset.image_dir.resolve()
    raise ValueError(f"--data {data} is neither a JSON file nor a dataset folder")


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
@dataclass(frozen=True)
class ProposalTraining:
    """How to train (the `train-proposals` options): launcher (none | pytorch), resume, and overrides of
    the mmdet config's schedule (0 / -1 = the config's own)."""
    launcher: str
    resume: bool
    batch_size: int
    workers: int
    max_iters: int
    cfg_options: tuple[str, ...]  # mmengine-style KEY=VALUE overrides of the mmdet config itself


def build_train_config(config_path: Path, ann_file: Path, image_dir: Path, work_dir: Path, how: ProposalTraining):
    """The mmengine Config to train: dataset paths, work dir, launcher, optional schedule/batch overrides."""
    from mmengine.config import Config, DictAction

    cfg = Config.fromfile(str(config_path))
    dataset = cfg.train_dataloader.dataset
    dataset.data_root = ""
    dataset.ann_file = str(ann_file)
    dataset.data_prefix = dict(img=str(image_dir) + os.sep)
    cfg.work_dir = str(work_dir)
    cfg.launcher = how.launcher
    cfg.resume = how.resume
    if how.batch_size > 0:
        cfg.train_dataloader.batch_size = how.batch_size
    if how.workers >= 0:
        cfg.train_dataloader.num_workers = how.workers
        cfg.train_dataloader.persistent_workers = how.workers > 0
    if how.max_iters > 0:
        _iteration_schedule(cfg, how.max_iters)
    options = {}
    for item in how.cfg_options:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--cfg-options entries are KEY=VALUE, got {item!r}")
        options[key] = DictAction._parse_iterable(value)
    if options:
        cfg.merge_from_dict(options)
    return cfg


def _iteration_schedule(cfg, max_iters: int) -> None:
    """Replace the schedule by ``max_iters`` iterations: warm-up, then steps at 2/3 and 11/12 (as in 1x)."""
    cfg.train_cfg = dict(type="IterBasedTrainLoop", max_iters=max_iters, val_interval=max_iters)
    cfg.param_scheduler = [
        dict(type="LinearLR", start_factor=WARMUP_START_FACTOR, by_epoch=False, begin=0,
             end=min(WARMUP_ITERS, max_iters)),
        dict(type="MultiStepLR", begin=0, end=max_iters, by_epoch=False,
             milestones=[max(1, max_iters * 2 // 3), max(1, max_iters * 11 // 12)], gamma=0.1)]
    cfg.default_hooks.checkpoint = dict(type="CheckpointHook", interval=max_iters, by_epoch=False,
                                        save_last=True, max_keep_ckpts=1)
    cfg.default_hooks.logger = dict(type="LoggerHook", interval=min(LOG_INTERVAL, max_iters))


def train_proposal_network(cfg) -> Path | None:
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
