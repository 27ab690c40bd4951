"""RMA training (the paper's recipe): frozen CLIP and frozen proposals; only the added RMA parameters (and
the "no object" embedding) learn, on the training vocabulary (the dataset's base classes).

Single process on CPU or one GPU, or several GPUs with ``torchrun`` (DistributedDataParallel over the
MaskCLIP model, a DistributedSampler; gradients of a process's images are accumulated under ``no_sync``).
The image path of every block never depends on the RMA parameters, so autograd records only the
mask-token path.

Outputs in ``--out``: ``checkpoint.pt`` (resumable: the RMA parameters and their config via the model
factory, plus optimizer state, step and the run's settings), ``rma.pt`` (the final parameters without
optimizer state: what ``maskclip.rma_checkpoint`` points at) and ``log.jsonl`` (one loss record per
``log_every`` steps).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import yaml

from maskclip_ros.training.coarse import CoarseConfig
from maskclip_ros.training.losses import LossWeights, rma_loss

TRAIN_CONFIG_PATH = Path(__file__).resolve().parents[2] / "config" / "train.yaml"


@dataclass(frozen=True)
class TrainConfig:
    """The ``train`` section of config/train.yaml (documented there)."""
    seed: int
    steps: int
    minutes: float
    batch_size: int
    lr: float
    weight_decay: float
    grad_clip: float
    mask_stride: int
    proposals: str
    max_proposals: int
    proposal_sets: int
    save_every: int
    log_every: int
    num_workers: int
    threads: int

    def __post_init__(self) -> None:
        if self.proposals not in ("coarse", "backend"):
            raise ValueError(f"train.proposals must be coarse or backend, got {self.proposals!r}")
        if self.batch_size < 1 or self.steps < 0 or self.mask_stride < 1:
            raise ValueError("train.batch_size and train.mask_stride must be >= 1, train.steps >= 0")


def load_sections(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> dict:
    """config/train.yaml (or ``path``) as ``{section: {key: value}}`` with dotted ``overrides`` applied
    (e.g. ``{"train.steps": 10}``); unknown keys are errors."""
    with open(path or TRAIN_CONFIG_PATH, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    for key, value in (overrides or {}).items():
        section, _, name = key.partition(".")
        if section not in data or name not in data[section]:
            raise KeyError(f"unknown training setting {key!r}; known: "
                           f"{[f'{s}.{k}' for s, v in data.items() for k in v]}")
        data[section][name] = value
    return data


def section_config(cls, values: Mapping[str, Any]):
    """Dataclass ``cls`` from a section dict (every field required; numbers cast to the field's type, so
    ``--set train.lr=1e-3``, which YAML reads as a string, works)."""
    casts = {"float": float, "int": int}
    return cls(**{f.name: casts.get(f.type, lambda v: v)(values[f.name]) for f in dataclasses.fields(cls)})


# --------------------------------------------------------------------------------------- distributed
@dataclass(frozen=True)
class DistInfo:
    """Process placement: rank / world size (1 when not launched by torchrun) and the torch device."""
    rank: int
    world_size: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str) -> DistInfo:
    """Join the torchrun process group when launched by it (NCCL on CUDA, Gloo on CPU); else one process.

    With several processes on CUDA each uses ``cuda:LOCAL_RANK``. Raises RuntimeError when CUDA is asked
    for but unavailable."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available; use device: cpu")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return DistInfo(0, 1, torch.device(device))
    import torch.distributed as dist
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda"):
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), dev)


def _all_mean(value: float, dist_info: DistInfo) -> float:
    """Mean of a float over processes (the value itself in a single process)."""
    if dist_info.world_size == 1:
        return value
    import torch.distributed as dist
    t = torch.tensor([value], dtype=torch.float64, device=dist_info.device)
    dist.all_reduce(t)
    return float(t.item()) / dist_info.world_size


# --------------------------------------------------------------------------------------------- steps
def class_logits(model, embeddings: torch.Tensor, text_embeddings: torch.Tensor):
    """(M, E) embeddings -> ((M, C) class logits, (M,) "no object" logits or None), CLIP's logit scale."""
    scale = model.tower.logit_scale
    logits = scale * embeddings @ text_embeddings.T
    no_object = model.no_object_embedding
    return logits, (scale * embeddings @ no_object if no_object is not None else None)


def sample_loss(model, forward, sample, text_embeddings: torch.Tensor, weights: LossWeights,
                device: torch.device) -> dict[str, torch.Tensor]:
    """Forward one TrainSample (``forward`` = the model or its DDP wrapper) and return ``rma_loss``,
    averaged over the sample's proposal sets (each matched to the ground truth on its own).

    Every trainable parameter takes part in the graph (times 0 where unused) so DDP always sees a full
    set of gradients."""
    out = forward(sample.image, sample.proposals, with_aux=True)
    logits, no_object = class_logits(model, out.embeddings, text_embeddings)
    proposals = torch.from_numpy(sample.proposals).to(device)
    targets, classes = torch.from_numpy(sample.targets).to(device), torch.from_numpy(sample.classes).to(device)
    groups = torch.from_numpy(sample.groups).to(device)
    per_set = []
    for g in torch.unique(groups).tolist():
        rows = groups == g
        per_set.append(rma_loss(logits[rows], no_object[rows] if no_object is not None else None,
                                [a[rows] for a in out.aux_mask_logits], proposals[rows], targets, classes, weights))
    touch = sum(p.sum() for p in model.trainable_parameters()) * 0.0
    if not per_set:  # no proposal at all
        return {"loss": touch, **{k: touch.detach() for k in ("ce", "dice", "bce", "matched")}}
    losses = {k: sum(d[k] for d in per_set) / len(per_set) for k in per_set[0]}
    return {**losses, "loss": losses["loss"] + touch}


def optimisation_step(model, forward, optimizer, batch, text_embeddings, weights: LossWeights,
                      cfg: TrainConfig, dist_info: DistInfo, ddp: bool) -> dict[str, float]:
    """One step over a process's batch: per-image backward (accumulated; DDP syncs on the last image),
    gradient clipping, AdamW. Returns the batch-mean losses (averaged over processes)."""
    optimizer.zero_grad(set_to_none=True)
    totals: dict[str, float] = {}
    for i, sample in enumerate(batch):
        sync = (not ddp) or i == len(batch) - 1
        with (contextlib.nullcontext() if sync else forward.no_sync()):
            losses = sample_loss(model, forward, sample, text_embeddings, weights, dist_info.device)
            (losses["loss"] / len(batch)).backward()
        for k, v in losses.items():
            totals[k] = totals.get(k, 0.0) + float(v.detach()) / len(batch)
    params = model.trainable_parameters()
    if cfg.grad_clip > 0:
        totals["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip))
    optimizer.step()
    return {k: _all_mean(v, dist_info) for k, v in totals.items()}


# ------------------------------------------------------------------------------------------ the run
@dataclass(frozen=True)
class RunSettings:
    """Everything one run needs besides the data: the model params (clip/maskclip/... sections), the
    training sections of config/train.yaml, and where to write."""
    params: dict
    sections: dict
    out_dir: Path
    resume: Path | None = None
    progress: bool = True


def base_categories(categories: list[dict]) -> list[dict]:
    """The training vocabulary: categories tagged ``split: base`` (all of them when none is tagged)."""
    base = [c for c in categories if c.get("split", "base") == "base"]
    if not base:
        raise ValueError("the dataset has no base categories to train on")
    return base


def model_params(params: Mapping[str, Any], checkpoint: Path | None) -> dict:
    """The params with ``maskclip.mode: rma`` and the RMA checkpoint to start from ("" = untrained)."""
    out = json.loads(json.dumps(params))  # a deep copy of plain data
    out["maskclip"]["mode"] = "rma"
    out["maskclip"]["rma_checkpoint"] = str(checkpoint) if checkpoint else ""
    return out


def train(dataset, run: RunSettings) -> dict:
    """Train RMA on ``dataset`` (a ``coco_panoptic.PanopticDataset``); returns a summary dict.

    Resumes from ``run.resume`` (a ``checkpoint.pt``) with its step and optimizer state."""
    from maskclip_ros.model.factory import load_rma_checkpoint_extra, save_rma_checkpoint
    from maskclip_ros.pipeline import build_segmenter
    from maskclip_ros.training.data import TrainDataset, collate

    cfg = section_config(TrainConfig, run.sections["train"])
    weights = section_config(LossWeights, run.sections["loss"])
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    dist_info = setup_distributed(str(run.params.get("device", "cpu")))
    torch.manual_seed(cfg.seed)
    params = model_params(run.params, run.resume)
    if cfg.proposals == "coarse":
        params.pop("proposals", None)  # no proposer needed
    segmenter = build_segmenter(params, device=str(dist_info.device))
    model = segmenter.maskclip
    model.rma.train()
    base = base_categories(dataset.categories)
    vocabulary = segmenter.make_vocabulary([c["name"] for c in base], [bool(c["isthing"]) for c in base])
    text = vocabulary.text_embeddings.to(dist_info.device)  # (C, E), frozen
    train_set = TrainDataset(dataset, class_index={c["id"]: i for i, c in enumerate(base)},
                             stride=cfg.mask_stride, max_proposals=cfg.max_proposals, seed=cfg.seed,
                             coarse=section_config(CoarseConfig, run.sections["coarse"]) if cfg.proposals == "coarse" else None,
                             proposer=segmenter.proposer if cfg.proposals == "backend" else None,
                             proposal_sets=cfg.proposal_sets)
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    step = 0
    if run.resume is not None:
        extra = load_rma_checkpoint_extra(run.resume)
        optimizer.load_state_dict(extra["optimizer"])
        step = int(extra["step"])
    forward, ddp = model, dist_info.world_size > 1
    if ddp:
        forward = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[dist_info.device.index] if dist_info.device.type == "cuda" else None)
    sampler = torch.utils.data.DistributedSampler(train_set, num_replicas=dist_info.world_size,
                                                  rank=dist_info.rank, shuffle=True, seed=cfg.seed, drop_last=True)
    run.out_dir.mkdir(parents=True, exist_ok=True)
    state = {"train": dict(run.sections["train"]), "loss": dict(run.sections["loss"]),
             "coarse": dict(run.sections["coarse"]), "vocabulary": [c["name"] for c in base]}
    started = time.monotonic()
    per_epoch = max(1, len(sampler) // cfg.batch_size)
    log = open(run.out_dir / "log.jsonl", "a", encoding="utf-8") if dist_info.main else None
    bar = _progress(cfg.steps, step, run.progress and dist_info.main)
    last: dict[str, float] = {}
    try:
        while step < cfg.steps:
            epoch = step // per_epoch
            sampler.set_epoch(epoch)
            train_set.set_epoch(epoch)
            indices = list(sampler)[(step % per_epoch) * cfg.batch_size:]  # resuming mid-epoch: skip done batches
            loader = torch.utils.data.DataLoader(train_set, batch_size=cfg.batch_size, sampler=indices,
                                                 num_workers=cfg.num_workers, collate_fn=collate, drop_last=True)
            for batch in loader:
                last = optimisation_step(model, forward, optimizer, batch, text, weights, cfg, dist_info, ddp)
                step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{last['loss']:.3f}", ce=f"{last['ce']:.3f}", dice=f"{last['dice']:.3f}")
                if log and (step % cfg.log_every == 0 or step == cfg.steps):
                    log.write(json.dumps({"step": step, "time_s": round(time.monotonic() - started, 2), **last}) + "\n")
                    log.flush()
                if dist_info.main and step % cfg.save_every == 0:
                    save_training_checkpoint(model, optimizer, step, state, run.out_dir / "checkpoint.pt")
                if step >= cfg.steps or (cfg.minutes > 0 and time.monotonic() - started > 60 * cfg.minutes):
                    break
            if cfg.minutes > 0 and time.monotonic() - started > 60 * cfg.minutes:
                break
    finally:
        bar.close()
        if log:
            log.close()
    elapsed = time.monotonic() - started
    if dist_info.main:
        save_training_checkpoint(model, optimizer, step, state, run.out_dir / "checkpoint.pt")
        save_rma_checkpoint(model.rma, run.out_dir / "rma.pt", extra={"step": step, **state})
    return {"step": step, "seconds": round(elapsed, 1), "last": last, "out_dir": str(run.out_dir),
            "world_size": dist_info.world_size}


def save_training_checkpoint(model, optimizer, step: int, state: Mapping[str, Any], path: Path) -> None:
    """The resumable checkpoint: RMA parameters + config (model factory format) + optimizer state + step."""
    from maskclip_ros.model.factory import save_rma_checkpoint
    tmp = path.with_suffix(".tmp")
    save_rma_checkpoint(model.rma, tmp, extra={"step": step, "optimizer": optimizer.state_dict(), **state})
    tmp.replace(path)


def _progress(total: int, initial: int, enabled: bool):
    from tqdm import tqdm
    return tqdm(total=total, initial=initial, disable=not enabled, desc="train rma", unit="step",
                dynamic_ncols=True)
