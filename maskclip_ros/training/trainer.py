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
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from maskclip_ros.config import to_dict
from maskclip_ros.pipeline import SegmenterConfig
from maskclip_ros.training.coarse import CoarseConfig
from maskclip_ros.training.losses import LossWeights, rma_loss

CONFIG_FILE = "train.yaml"


@dataclass(frozen=True)
class TrainConfig:
    """The ``train`` section of config/train.yaml (documented there)."""
    seed: int            # seeds sampling, coarse proposals and the RMA initialisation
    steps: int           # optimisation steps
    minutes: float       # wall-clock budget (0 = none)
    batch_size: int      # images per step and process
    lr: float            # AdamW learning rate
    weight_decay: float  # AdamW weight decay
    grad_clip: float     # gradient norm clip (0 = off)
    mask_stride: int     # ground truth and proposals at 1/mask_stride of the image size
    proposals: str       # coarse (degraded ground truth) or backend (proposals.backend)
    max_proposals: int   # most proposals per training image and proposal set
    proposal_sets: int   # coarse proposal sets per image, one forward pass
    save_every: int      # resumable checkpoint period (steps)
    log_every: int       # loss record period (steps)
    num_workers: int     # data loader worker processes
    threads: int         # torch CPU threads (0 = torch's default)

    def __post_init__(self) -> None:
        if self.proposals not in ("coarse", "backend"):
            raise ValueError(f"train.proposals must be coarse or backend, got {self.proposals!r}")
        if self.batch_size < 1 or self.steps < 0 or self.mask_stride < 1:
            raise ValueError("train.batch_size and train.mask_stride must be >= 1, train.steps >= 0")


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
    """Everything one run needs besides the data: the model (the params file's model part), the training
    sections of config/train.yaml, and where to write."""
    model: SegmenterConfig
    train: TrainConfig
    loss: LossWeights
    coarse: CoarseConfig
    out_dir: Path
    resume: Path | None = None
    progress: bool = True


def base_categories(categories: list[dict]) -> list[dict]:
    """The training vocabulary: categories tagged ``split: base`` (all of them when none is tagged)."""
    base = [c for c in categories if c.get("split", "base") == "base"]
    if not base:
        raise ValueError("the dataset has no base categories to train on")
    return base


def rma_model_config(model: SegmenterConfig, device: torch.device, checkpoint: Path | None) -> SegmenterConfig:
    """The model config with ``maskclip.mode: rma``, the RMA checkpoint to start from ("" = untrained) and
    the process's device."""
    maskclip = dataclasses.replace(model.maskclip, mode="rma", rma_checkpoint=str(checkpoint) if checkpoint else "")
    return dataclasses.replace(model, maskclip=maskclip, device=str(device))


@dataclass
class TrainState:
    """What the loop works with: the model (and its DDP wrapper), optimizer, data and the frozen text."""
    model: Any
    forward: Any
    optimizer: torch.optim.Optimizer
    train_set: Any
    sampler: Any
    text: torch.Tensor
    dist: DistInfo
    record: dict  # settings stored with every checkpoint
    step: int = 0


def setup(dataset, run: RunSettings) -> TrainState:
    """Segmenter, training vocabulary (base classes), dataset, optimizer, resume state and DDP."""
    from maskclip_ros.model.factory import load_rma_checkpoint_extra
    from maskclip_ros.pipeline import build_segmenter
    from maskclip_ros.training.data import TrainDataset

    cfg = run.train
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    dist_info = setup_distributed(run.model.device)
    torch.manual_seed(cfg.seed)
    segmenter = build_segmenter(rma_model_config(run.model, dist_info.device, run.resume),
                                with_proposer=cfg.proposals == "backend")
    model = segmenter.maskclip
    model.rma.train()
    base = base_categories(dataset.categories)
    vocabulary = segmenter.make_vocabulary([c["name"] for c in base], [bool(c["isthing"]) for c in base])
    coarse = cfg.proposals == "coarse"
    train_set = TrainDataset(dataset, class_index={c["id"]: i for i, c in enumerate(base)},
                             stride=cfg.mask_stride, max_proposals=cfg.max_proposals, seed=cfg.seed,
                             coarse=run.coarse if coarse else None, proposer=None if coarse else segmenter.proposer,
                             proposal_sets=cfg.proposal_sets)
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    step = 0
    if run.resume is not None:
        extra = load_rma_checkpoint_extra(run.resume)
        optimizer.load_state_dict(extra["optimizer"])
        step = int(extra["step"])
    forward = model
    if dist_info.world_size > 1:
        forward = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[dist_info.device.index] if dist_info.device.type == "cuda" else None)
    sampler = torch.utils.data.DistributedSampler(train_set, num_replicas=dist_info.world_size,
                                                  rank=dist_info.rank, shuffle=True, seed=cfg.seed, drop_last=True)
    record = {"train": to_dict(run.train), "loss": to_dict(run.loss), "coarse": to_dict(run.coarse),
              "vocabulary": [c["name"] for c in base]}
    return TrainState(model, forward, optimizer, train_set, sampler, vocabulary.text_embeddings.to(dist_info.device),
                      dist_info, record, step)


def train(dataset, run: RunSettings) -> dict:
    """Train RMA on ``dataset`` (a ``coco_panoptic.PanopticDataset``); returns a summary dict.

    Resumes from ``run.resume`` (a ``checkpoint.pt``) with its step and optimizer state. Only the main
    process writes the log and the checkpoints."""
    from maskclip_ros.model.factory import save_rma_checkpoint

    state, cfg = setup(dataset, run), run.train
    run.out_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    log = open(run.out_dir / "log.jsonl", "a", encoding="utf-8") if state.dist.main else None
    bar = _progress(cfg.steps, state.step, run.progress and state.dist.main)
    last: dict[str, float] = {}
    try:
        for batch in _batches(state, cfg, started):
            last = optimisation_step(state.model, state.forward, state.optimizer, batch, state.text, run.loss,
                                     cfg, state.dist, state.dist.world_size > 1)
            state.step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{last['loss']:.3f}", ce=f"{last['ce']:.3f}", dice=f"{last['dice']:.3f}")
            _log_and_save(state, cfg, log, last, started, run.out_dir)
    finally:
        bar.close()
        if log:
            log.close()
    if state.dist.main:
        save_training_checkpoint(state.model, state.optimizer, state.step, state.record, run.out_dir / "checkpoint.pt")
        save_rma_checkpoint(state.model.rma, run.out_dir / "rma.pt", extra={"step": state.step, **state.record})
    return {"step": state.step, "seconds": round(time.monotonic() - started, 1), "last": last,
            "out_dir": str(run.out_dir), "world_size": state.dist.world_size, "rank": state.dist.rank}


def _batches(state: TrainState, cfg: TrainConfig, started: float):
    """Batches from the current step until ``cfg.steps`` or the time budget; epochs reshuffle, a resumed
    run skips the batches of its epoch that are done."""
    from maskclip_ros.training.data import collate

    per_epoch = max(1, len(state.sampler) // cfg.batch_size)
    while state.step < cfg.steps and not _out_of_time(cfg, started):
        epoch = state.step // per_epoch
        state.sampler.set_epoch(epoch)
        state.train_set.set_epoch(epoch)
        indices = list(state.sampler)[(state.step % per_epoch) * cfg.batch_size:]
        loader = torch.utils.data.DataLoader(state.train_set, batch_size=cfg.batch_size, sampler=indices,
                                             num_workers=cfg.num_workers, collate_fn=collate, drop_last=True)
        for batch in loader:
            yield batch
            if state.step >= cfg.steps or _out_of_time(cfg, started):
                return


def _out_of_time(cfg: TrainConfig, started: float) -> bool:
    return cfg.minutes > 0 and time.monotonic() - started > 60 * cfg.minutes


def _log_and_save(state: TrainState, cfg: TrainConfig, log, last: dict, started: float, out_dir: Path) -> None:
    if log and (state.step % cfg.log_every == 0 or state.step == cfg.steps):
        log.write(json.dumps({"step": state.step, "time_s": round(time.monotonic() - started, 2), **last}) + "\n")
        log.flush()
    if state.dist.main and state.step % cfg.save_every == 0:
        save_training_checkpoint(state.model, state.optimizer, state.step, state.record, out_dir / "checkpoint.pt")


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
