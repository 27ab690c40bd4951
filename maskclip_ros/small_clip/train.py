"""The small CLIP's training loop: open_clip's ClipLoss on balanced window batches (+ whole scenes),
AdamW with linear warmup and a cosine decay bounded by steps and a wall-clock budget."""
from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np

from maskclip_ros.data import world
from maskclip_ros.small_clip.config import SmallClipTrainConfig
from maskclip_ros.small_clip.samples import ScenePool, crop_batch
from maskclip_ros.small_clip.windows import encode_samples, normalise

MAX_LOGIT_SCALE = 100.0  # CLIP clamps its learned logit scale (the inverse temperature) to at most 100


def save_checkpoint(model, path: str | Path, meta: dict) -> None:
    """State dict in fp16 (torch.save; loadable with weights_only=True) and ``<path>.json`` metadata."""
    import torch
    state = {k: (v.half() if v.is_floating_point() else v).clone() for k, v in model.state_dict().items()}
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


def train(tc: SmallClipTrainConfig, out: Path, log_path: Path | None, wcfg: world.WorldConfig,
          templates, command: str, progress: bool = True) -> dict:
    """Train the small CLIP; saves ``out`` (+ ``out.json``) every tc.save_every steps and at the end.
    Returns the metadata dict (losses, steps, seconds)."""
    import open_clip
    import torch
    from tqdm import tqdm

    from maskclip_ros.model.factory import create_clip_model, load_clip_state_dict
    torch.manual_seed(tc.seed)
    torch.set_num_threads(tc.threads)
    rng = np.random.default_rng(tc.seed)
    model = create_clip_model(tc.config_name)
    if tc.init:
        load_clip_state_dict(model, Path(tc.init))
    model.train()
    tokenizer = open_clip.get_tokenizer(tc.config_name)
    grid = tuple(model.visual.grid_size)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": tc.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=tc.lr, betas=(tc.beta1, tc.beta2))
    loss_fn = open_clip.loss.ClipLoss()
    pool = ScenePool(tc.seed, tc.pool_scenes, wcfg, progress)
    meta = {"config_name": tc.config_name, "command": command, "train_config": dataclasses.asdict(tc),
            "world_config": dataclasses.asdict(wcfg), "templates": list(templates), "losses": [],
            "init_run": init_run_summary(tc.init)}
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "a") if log_path else None
    start = time.time()
    bar = tqdm(range(tc.steps), desc="train-clip", disable=not progress)
    for step in bar:
        lr = lr_at(step, tc, time.time() - start)
        for group in opt.param_groups:
            group["lr"] = lr
        loss = train_step(model, tokenizer, loss_fn, pool, tc, templates, rng, grid, step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss = loss.detach()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(MAX_LOGIT_SCALE))
        pool.refresh(tc.refresh_per_step, rng)
        elapsed = time.time() - start
        record = {"step": step + 1, "loss": round(loss.item(), 4), "lr": lr, "seconds": round(elapsed, 1)}
        meta["losses"].append(record)
        bar.set_postfix(loss=f"{record['loss']:.3f}")
        if log:
            log.write(json.dumps(record) + "\n")
            log.flush()
        done = step + 1 == tc.steps or elapsed > tc.minutes * 60
        if (step + 1) % tc.save_every == 0 or done:
            meta.update(steps=step + 1, seconds=round(elapsed, 1))
            save_checkpoint(model, out, meta)
        if done:
            break
    return meta


def init_run_summary(init: str) -> dict | None:
    """The run a warm start continues (from the metadata json beside its checkpoint), without its loss log,
    so a checkpoint's metadata holds its whole chain of reproduce commands."""
    meta_path = Path(init).with_suffix(".json") if init else None
    if meta_path is None or not meta_path.is_file():
        return None
    meta = json.loads(meta_path.read_text())
    return {k: v for k, v in meta.items() if k != "losses"}


def train_step(model, tokenizer, loss_fn, pool, tc, templates, rng, grid, step):
    """Contrastive loss of one balanced crop batch (+ a whole-scene batch every tc.scene_every steps)."""
    import torch
    samples, texts = crop_batch(pool, tc, templates, rng, grid, model.visual.patch_size[0])
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=tc.bf16):
        img = encode_samples(model, samples, tc.max_window)
        txt = model.encode_text(tokenizer(texts))
        loss = loss_fn(torch.nn.functional.normalize(img.float(), dim=-1),
                       torch.nn.functional.normalize(txt.float(), dim=-1), model.logit_scale.exp())
        if tc.scene_every and step % tc.scene_every == 0:
            picks = rng.choice(len(pool.scenes), size=tc.scene_batch, replace=False)
            images = np.stack([pool.scenes[i].image for i in picks])
            img = model.encode_image(normalise(images, model), normalize=True)
            txt = model.encode_text(tokenizer([pool.scenes[i].description for i in picks]), normalize=True)
            loss = loss + loss_fn(img.float(), txt.float(), model.logit_scale.exp())
    return loss
