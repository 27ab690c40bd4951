"""The small CLIP's training loop: a multi-positive contrastive loss on balanced native-scale window batches
(+ a dense patch loss on them), + mask-token and dense losses on whole scenes, + whole-scene captions;
AdamW with linear warmup and a cosine decay bounded by steps and a wall-clock budget; on the CPU or a CUDA
GPU (``train_clip.device``); bf16 autocast where the device has it; resumable (``<out>.state.pt``), with a
progress bar and a loss/accuracy plot (``<out>.png``)."""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import time
from pathlib import Path

import numpy as np

from maskclip_ros.data import world
from maskclip_ros.small_clip import losses
from maskclip_ros.small_clip.config import SmallClipTrainConfig
from maskclip_ros.small_clip.monitor import Monitor, plot_training
from maskclip_ros.small_clip.samples import ScenePool, crop_batch
from maskclip_ros.small_clip.windows import encode_samples, normalise

LOG = logging.getLogger(__name__)
MAX_LOGIT_SCALE = 100.0  # CLIP clamps its learned logit scale (the inverse temperature) to at most 100


def save_checkpoint(model, path: str | Path, meta: dict) -> None:
    """State dict in fp16 (torch.save; loadable with weights_only=True) and ``<path>.json`` metadata."""
    import torch
    state = {k: (v.half() if v.is_floating_point() else v).cpu().clone() for k, v in model.state_dict().items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)
    path.with_suffix(".json").write_text(json.dumps(meta, indent=1))


def lr_at(step: int, tc: SmallClipTrainConfig, elapsed: float = 0.0) -> float:
    """Linear warmup, then cosine decay to 0 at tc.steps or at the wall-clock budget tc.minutes, whichever
    comes first (so a run cut short by a slow machine still ends with a decayed learning rate; with a
    generous budget the schedule depends on the step alone)."""
    if step < tc.warmup_steps:
        return tc.lr * (step + 1) / tc.warmup_steps
    by_steps = (step - tc.warmup_steps) / max(1, tc.steps - tc.warmup_steps)
    progress = min(1.0, max(by_steps, elapsed / (tc.minutes * 60)))
    return 0.5 * tc.lr * (1 + math.cos(math.pi * progress))


def init_run_summary(init: str) -> dict | None:
    """The run a warm start continues (from the metadata json beside its checkpoint), without its loss log
    and monitor, so a checkpoint's metadata holds its whole chain of reproduce commands."""
    meta_path = Path(init).with_suffix(".json") if init else None
    if meta_path is None or not meta_path.is_file():
        return None
    meta = json.loads(meta_path.read_text())
    return {k: v for k, v in meta.items() if k not in ("losses", "monitor")}


def create_training_model(tc: SmallClipTrainConfig, device="cpu"):
    """The open_clip model of tc.config_name, from tc.init or randomly initialised (seeded by the caller), in
    fp32 and train mode, on ``device``."""
    from maskclip_ros.model.factory import create_clip_model, load_clip_state_dict
    model = create_clip_model(tc.config_name)
    if tc.init:
        load_clip_state_dict(model, Path(tc.init))
    return model.float().to(device).train()


def training_tower(model, config_name: str):
    """A ClipTower over the model being trained, sharing its parameters with gradients on: the mask-token
    loss and the monitor run MaskCLIP's own ``tokens`` code on it (native frames, no resize)."""
    import open_clip

    from maskclip_ros.model.tower import ClipTower
    tower = ClipTower(clip=model, tokenizer=open_clip.get_tokenizer(config_name), model_name=config_name,
                      short_side=int(model.visual.image_size[0]))
    model.requires_grad_(True).train()  # ClipTower freezes the CLIP it wraps
    return tower


def build_optimizer(model, tc: SmallClipTrainConfig):
    """AdamW (fused, on the CPU and on CUDA) with weight decay on matrices except embeddings."""
    import torch
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    return torch.optim.AdamW([{"params": decay, "weight_decay": tc.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=tc.lr, betas=(tc.beta1, tc.beta2),
                             fused=True)


def save_train_state(path: Path, model, opt, rng, pool, meta: dict) -> None:
    """Everything a resumed run needs: fp32 weights, optimizer, RNG states, pool slots, metadata."""
    import torch
    state = {"model": model.state_dict(), "opt": opt.state_dict(), "rng": rng.bit_generator.state,
             "torch_rng": torch.get_rng_state(), "pool": pool.state(), "meta": meta}
    tmp = path.with_suffix(".state.tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def load_train_state(path: Path, model, opt, rng, pool) -> tuple[int, float, dict]:
    """Restore save_train_state's file into model, opt, rng and pool; returns (next step, seconds, meta)."""
    import torch
    state = torch.load(path, map_location="cpu", weights_only=False)  # our own file: RNG states, dicts
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["opt"])
    rng.bit_generator.state = state["rng"]
    torch.set_rng_state(state["torch_rng"])
    pool.restore(state["pool"])
    meta = state["meta"]
    return int(meta["steps"]), float(meta["seconds"]), meta


@dataclasses.dataclass
class _Run:
    """What the steps of one training run share."""
    tc: SmallClipTrainConfig
    model: object
    tower: object
    tokenizer: object
    pool: ScenePool
    opt: object
    rng: np.random.Generator
    templates: tuple
    bf16: bool
    device: object  # torch.device of the model and of every batch


def train(tc: SmallClipTrainConfig, out: Path, log_path: Path | None, wcfg: world.WorldConfig,
          templates, command: str, progress: bool = True) -> dict:
    """Train the small CLIP; every tc.save_every steps and at the end saves ``out`` (fp16) with ``out.json``
    (metadata: command, configs, losses, monitor, the chain of runs it continues), the resume state
    ``out.state.pt`` and the plot ``out.png``. With tc.resume, continues from ``out.state.pt`` when it
    exists. Returns the metadata dict (losses, monitor, steps, seconds)."""
    run = _start(tc, wcfg, templates, progress)
    meta = {"config_name": tc.config_name, "command": command, "train_config": dataclasses.asdict(tc),
            "world_config": dataclasses.asdict(wcfg), "templates": list(templates), "bf16": run.bf16,
            "losses": [], "monitor": [], "init_run": init_run_summary(tc.init)}
    first, offset = 0, 0.0
    state_path = Path(out).with_suffix(".state.pt")
    if tc.resume and state_path.is_file():
        first, offset, meta = load_train_state(state_path, run.model, run.opt, run.rng, run.pool)
        meta["command"] = command
    monitor = Monitor(run.tower, tc, templates)
    log = _open_log(log_path)
    start = time.time() - offset
    from tqdm import tqdm
    bar = tqdm(range(first, tc.steps), desc="train-clip", disable=not progress, initial=first, total=tc.steps)
    for step in bar:
        record = _optimise(run, step, time.time() - start)
        record["seconds"] = round(time.time() - start, 1)
        if tc.monitor_every and ((step + 1) % tc.monitor_every == 0 or step + 1 == tc.steps):
            record["monitor"] = monitor(run.model)
            meta["monitor"].append({"step": step + 1, **record["monitor"]})
        meta["losses"].append(record)
        bar.set_postfix(loss=f"{record['loss']:.3f}")
        if log:
            log.write(json.dumps(record) + "\n")
            log.flush()
        done = step + 1 == tc.steps or record["seconds"] > tc.minutes * 60
        if (step + 1) % tc.save_every == 0 or done:
            meta.update(steps=step + 1, seconds=record["seconds"])
            save_checkpoint(run.model, out, meta)
            save_train_state(state_path, run.model, run.opt, run.rng, run.pool, meta)
            plot_training(meta, Path(out).with_suffix(".png"))
        if done:
            break
    return meta


def _open_log(log_path: Path | None):
    if not log_path:
        return None
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    return open(log_path, "a")


def _start(tc: SmallClipTrainConfig, wcfg: world.WorldConfig, templates, progress: bool) -> _Run:
    """Seeds, model, tower, optimizer and scene pool of a run."""
    import open_clip
    import torch

    device = torch_device(tc.device)
    torch.manual_seed(tc.seed)  # seeds CUDA too
    torch.set_num_threads(tc.threads)
    bf16 = bool(tc.bf16) and device_supports_bf16(device)
    if tc.bf16 and not bf16:
        LOG.warning("train_clip.bf16: %s has no native bf16 (AVX512-BF16/AMX on a CPU, Ampere or newer on "
                    "CUDA): training in fp32", device)
    model = create_training_model(tc, device)
    tower = training_tower(model, tc.config_name)
    return _Run(tc=tc, model=model, tower=tower, tokenizer=open_clip.get_tokenizer(tc.config_name),
                pool=ScenePool(tc.seed, tc.pool_scenes, wcfg, progress), opt=build_optimizer(model, tc),
                rng=np.random.default_rng(tc.seed), templates=tuple(templates), bf16=bf16, device=device)


def torch_device(name: str):
    """train_clip.device as a torch.device; ValueError saying what to do where there is no such device."""
    from maskclip_ros.model.runtimes import torch_device as resolve
    try:
        return resolve(name)
    except ValueError as err:
        raise ValueError(f"train_clip.device: {err}") from None


def device_supports_bf16(device) -> bool:
    """Native bf16 on ``device``: the CPU's flags (AVX512-BF16 / AMX / Arm BF16), or the CUDA GPU's support."""
    import torch

    from maskclip_ros.model.runtimes import cpu_supports_bf16
    return torch.cuda.is_bf16_supported() if device.type == "cuda" else cpu_supports_bf16()


def _optimise(run: _Run, step: int, elapsed: float) -> dict:
    """One optimisation step (learning rate, loss, AdamW, logit-scale clamp, pool refresh); its record."""
    import torch
    lr = lr_at(step, run.tc, elapsed)
    for group in run.opt.param_groups:
        group["lr"] = lr
    loss, parts = train_step(run, step)
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    run.opt.step()
    with torch.no_grad():
        run.model.logit_scale.clamp_(0, math.log(MAX_LOGIT_SCALE))
    run.pool.refresh(run.tc.refresh_per_step, run.rng)
    return {"step": step + 1, "loss": round(loss.item(), 4), "lr": lr,
            **{k: round(v.item(), 4) for k, v in parts.items()}}


def train_step(run: _Run, step: int):
    """Loss of one step: the balanced window batch's contrastive loss (+ its dense loss), + the mask-token
    and dense losses of tc.token_scenes scenes, + whole-scene captions every tc.scene_every steps.
    Returns (loss, {part: detached scalar tensor}) (no .item() here: on CUDA each one waits for the GPU)."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    tc, model = run.tc, run.model
    batch = crop_batch(run.pool, tc, run.templates, run.rng, tuple(model.visual.grid_size), model.visual.patch_size[0])
    parts = {}
    # windows are short: on the CPU the math kernel's backward is faster; CUDA picks its own kernel
    kernels = sdpa_kernel([SDPBackend.MATH]) if run.device.type == "cpu" else contextlib.nullcontext()
    with torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=run.bf16):
        txt = model.encode_text(run.tokenizer(batch.texts).to(run.device))
        with kernels:
            encoded = encode_samples(model, batch.samples, tc.max_window, with_patches=bool(tc.window_dense_weight))
        img = encoded[0] if tc.window_dense_weight else encoded
        loss = losses.contrastive(img, txt, batch, run.pool.names, model.logit_scale.exp(), tc.multi_positive)
        parts["window_loss"] = loss.detach()
        if tc.window_dense_weight:
            dense = losses.window_dense_loss(model, run.tokenizer, run.templates, run.rng, *encoded[1:])
            parts["window_dense_loss"] = dense.detach()
            loss = loss + tc.window_dense_weight * dense
        if tc.token_scenes:
            tokens, dense = losses.token_loss(run.tower, run.tokenizer, run.pool, tc, run.templates, run.rng)
            parts.update(token_loss=tokens.detach(), dense_loss=dense.detach())
            loss = loss + tc.token_weight * tokens + tc.dense_weight * dense
        if tc.scene_every and step % tc.scene_every == 0:
            loss = loss + scene_loss(run)
    return loss, parts


def scene_loss(run: _Run):
    """open_clip's ClipLoss of tc.scene_batch whole 640x480 scenes and their descriptions (plain forward)."""
    import open_clip
    model, pool = run.model, run.pool
    picks = run.rng.choice(len(pool.scenes), size=run.tc.scene_batch, replace=False)
    images = np.stack([pool.scenes[i].image for i in picks])
    img = model.encode_image(normalise(images, model), normalize=True)
    txt = model.encode_text(run.tokenizer([pool.scenes[i].description for i in picks]).to(run.device),
                            normalize=True)
    return open_clip.loss.ClipLoss()(img.float(), txt.float(), model.logit_scale.exp())
