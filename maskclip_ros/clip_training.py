"""`maskclip-ros make-world | train-clip | eval-clip`: the project's own small CLIP on its generated world.

No pretrained CLIP exists here, so a tiny open_clip model (assets/clip_configs/) is trained contrastively
(open_clip's ClipLoss) on region crops and whole scenes of the generated world with their descriptions; this
plays the part of CLIP's web-scale pretraining.

Scale: the node sees objects in full 640x480 frames, and a small ViT loses shape when objects appear at
another scale. So the model's native input is the whole frame (image_size 480x640, a 30x40 patch grid) and
training crops are cut from full-resolution scenes *without rescaling*: each crop is a window of the frame's
patch grid, and its patches get the positional embeddings of exactly those grid cells. A batch of windows
of different sizes is padded to ``max_window`` patches per side; padding patches are masked out of the
attention (additive -inf key mask), so every crop is encoded as if it were alone. Stuff is also shown as
whole regions (its bbox window at any size, with only the patches the region covers by half kept: a
region-shaped patch dropout), because a model that only saw small windows called every large region a
thing. Whole scenes use the plain open_clip forward, exactly as the node runs the model.

Batches are balanced: one sample per label (colour x shape for things, the class for stuff) per batch, so
no duplicate caption acts as a false negative.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from maskclip_ros.data import world

ASSETS = Path(__file__).resolve().parent / "assets"
CLIP_CONFIGS = ASSETS / "clip_configs"


@dataclass(frozen=True)
class TrainConfig:
    """train-clip parameters; defaults live in config/world.yaml (section ``train_clip``)."""
    config_name: str        # open_clip config in assets/clip_configs/
    seed: int               # world, init and sampling seed
    pool_scenes: int        # scenes held in memory
    refresh_per_step: int   # pool scenes replaced after each step
    max_window: int         # largest crop window (patches per side)
    stuff_min_window: int   # smallest stuff window (patches per side)
    stuff_purity: float     # least fraction of a stuff window that is that stuff
    region_prob: float      # probability that a stuff sample is its whole region
    init: str               # checkpoint to start from ("" = random init)
    scene_every: int        # whole-scene batch every n steps (0 = never)
    scene_batch: int        # whole scenes per scene step
    lr: float               # peak learning rate
    weight_decay: float     # AdamW weight decay
    beta1: float            # AdamW beta1
    beta2: float            # AdamW beta2
    warmup_steps: int       # linear warmup steps
    steps: int              # total steps (cosine length)
    minutes: float          # wall-clock budget (minutes)
    save_every: int         # checkpoint period (steps)
    threads: int            # torch CPU threads
    bf16: bool              # bf16 autocast

    @classmethod
    def load(cls, path=None, **overrides) -> "TrainConfig":
        """The ``train_clip`` section of config/world.yaml, with non-None overrides applied."""
        values = world.load_yaml_section("train_clip", path)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**{f.name: values[f.name] for f in dataclasses.fields(cls)})


# ------------------------------------------------------------------------------------------------- model
def create_clip(config_name: str):
    """A randomly initialised open_clip model from a config in assets/clip_configs/ (no download)."""
    import open_clip
    open_clip.add_model_config(CLIP_CONFIGS)
    return open_clip.create_model(config_name, pretrained=None)


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


def load_checkpoint(config_name: str, path: str | Path):
    """Model from config + fp16/fp32 state dict (weights_only). Used until/besides model.factory."""
    import torch
    model = create_clip(config_name)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.float().eval()


def encode_windows(visual, crops, windows, keep=None):
    """Encode crops that are windows of the model's native patch grid, without rescaling.

    visual: open_clip VisionTransformer (pool 'tok'); crops: (B, 3, Gh*p, Gw*p) normalised pixels, each
    crop's content in the top-left (gh*p, gw*p) corner; windows: (B, 4) long (row0, col0, gh, gw) in
    patches of the full frame; keep: optional (B, Gh, Gw) bool, the patches the class token and the
    patches may attend to (default: the window's gh x gw rectangle; padding is always dropped).
    Returns (B, E) image embeddings (not normalised).
    """
    import torch
    b, p = crops.shape[0], visual.patch_size[0]
    gh_c, gw_c = crops.shape[-2] // p, crops.shape[-1] // p
    grid_h, grid_w = visual.grid_size
    x = visual.conv1(crops).flatten(2).transpose(1, 2)  # (B, Gh*Gw, D)
    ar_h = torch.arange(gh_c, device=crops.device)
    ar_w = torch.arange(gw_c, device=crops.device)
    rows = (windows[:, :1] + ar_h).clamp(max=grid_h - 1)  # (B, Gh)
    cols = (windows[:, 1:2] + ar_w).clamp(max=grid_w - 1)  # (B, Gw)
    idx = (rows[:, :, None] * grid_w + cols[:, None, :]).flatten(1)  # (B, Gh*Gw)
    pos = visual.positional_embedding.to(x.dtype)
    x = x + pos[1:][idx]
    cls = (visual.class_embedding + pos[0]).to(x.dtype).expand(b, 1, -1)
    x = visual.ln_pre(torch.cat([cls, x], dim=1))  # (B, 1+Gh*Gw, D)
    inside = (ar_h[None, :, None] < windows[:, 2, None, None]) & (ar_w[None, None, :] < windows[:, 3, None, None])
    if keep is not None:
        inside = inside & keep.to(inside.device)
    valid = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=x.device), inside.flatten(1)], 1)  # (B, L)
    heads = visual.transformer.resblocks[0].attn.num_heads
    length = valid.shape[1]
    mask = torch.zeros(valid.shape, dtype=x.dtype, device=x.device).masked_fill(~valid, float("-inf"))
    mask = mask[:, None, None, :].expand(b, heads, length, length)  # (B, heads, L, L)
    x = visual.transformer(x, attn_mask=mask.reshape(b * heads, length, length))
    pooled, _ = visual._pool(x)
    return pooled @ visual.proj if visual.proj is not None else pooled


# --------------------------------------------------------------------------------------------------- data
def thing_label(seg: dict, names: dict) -> str:
    """Balancing label of a segment: '<colour> <class>' for things, the class for stuff."""
    name = names[seg["category_id"]]
    return f"{seg['colour']} {name}" if seg["isthing"] else name


class ScenePool:
    """Scenes of the world ``seed`` held in memory, refreshed as a stream (scene k replaced by the next)."""

    def __init__(self, seed: int, size: int, cfg: world.WorldConfig, progress: bool = True):
        from tqdm import tqdm
        self.seed, self.cfg, self.next_index = seed, cfg, size
        self.scenes = [world.generate_scene(seed, i, cfg)
                       for i in tqdm(range(size), desc="world", disable=not progress)]
        self.names = {c["id"]: c["name"] for c in world.categories(cfg)}

    def refresh(self, count: int, rng: np.random.Generator) -> None:
        """Replace ``count`` random scenes by new ones (next indices of the stream)."""
        for slot in rng.choice(len(self.scenes), size=min(count, len(self.scenes)), replace=False):
            self.scenes[slot] = world.generate_scene(self.seed, self.next_index, self.cfg)
            self.next_index += 1

    def by_label(self) -> dict[str, list[tuple[int, int]]]:
        """label -> [(scene slot, segment index)] over the pool."""
        index: dict[str, list] = {}
        for s, scene in enumerate(self.scenes):
            for k, seg in enumerate(scene.segments):
                index.setdefault(thing_label(seg, self.names), []).append((s, k))
        return index


def thing_window(seg: dict, g: int, grid: tuple[int, int], p: int, margins=(0, 0, 0, 0)):
    """Patch window (row0, col0, gh, gw) around a thing's bbox plus ``margins`` patches (top, left,
    bottom, right), at most g x g patches of p pixels, inside the frame's grid (rows, cols)."""
    x, y, w, h = seg["bbox"]
    r0, c0 = y // p - int(margins[0]), x // p - int(margins[1])
    r1, c1 = -(-(y + h) // p) + int(margins[2]), -(-(x + w) // p) + int(margins[3])
    return _clip_window(r0, c0, r1, c1, g, grid)


def _clip_window(r0, c0, r1, c1, g, grid):
    r0, c0 = max(r0, 0), max(c0, 0)
    r1, c1 = min(r1, grid[0]), min(c1, grid[1])
    if r1 - r0 > g:  # too large: keep the central g rows
        r0 = (r0 + r1 - g) // 2
        r1 = r0 + g
    if c1 - c0 > g:
        c0 = (c0 + c1 - g) // 2
        c1 = c0 + g
    return r0, c0, r1 - r0, c1 - c0


def stuff_window(panoptic, seg_id, tc: TrainConfig, grid, p: int, rng, tries: int = 20):
    """A random window of mostly one stuff segment (purity >= tc.stuff_purity, else the purest tried)."""
    best, best_purity = None, -1.0
    for t in range(tries):
        g = max(tc.stuff_min_window, tc.max_window - t // 4)
        gh, gw = int(rng.integers(tc.stuff_min_window, g + 1)), int(rng.integers(tc.stuff_min_window, g + 1))
        r0, c0 = int(rng.integers(0, grid[0] - gh + 1)), int(rng.integers(0, grid[1] - gw + 1))
        purity = (panoptic[r0 * p:(r0 + gh) * p, c0 * p:(c0 + gw) * p] == seg_id).mean()
        if purity >= tc.stuff_purity:
            return r0, c0, gh, gw
        if purity > best_purity:
            best, best_purity = (r0, c0, gh, gw), purity
    return best


def _region(scene, seg, grid, p):
    window, keep = region_window(scene.panoptic, seg["id"], grid, p)
    return window, p, keep


def region_window(panoptic, seg_id, grid, p: int):
    """A stuff segment as a whole: the window of its bbox snapped to the patch grid (any size) and the
    patches it covers at least half of, (gh, gw) bool (its whole region if it covers none by half)."""
    ys, xs = np.nonzero(panoptic == seg_id)
    r0, c0 = ys.min() // p, xs.min() // p
    r1, c1 = min(grid[0], ys.max() // p + 1), min(grid[1], xs.max() // p + 1)
    frac = (panoptic[r0 * p:r1 * p, c0 * p:c1 * p] == seg_id).reshape(r1 - r0, p, c1 - c0, p).mean((1, 3))
    keep = frac >= 0.5
    return (int(r0), int(c0), int(r1 - r0), int(c1 - c0)), (keep if keep.any() else frac > 0)


def caption(seg: dict, names: dict, templates, rng) -> str:
    """A random description of a region: a prompt template over '<colour> <class>' or the bare class, or
    the region's own description (which names the stuff it stands on)."""
    name = names[seg["category_id"]]
    if seg["isthing"] and rng.random() < 0.35:
        return seg["description"]
    if seg["isthing"] and rng.random() < 0.7:
        name = f"{seg['colour']} {name}"
    return templates[int(rng.integers(len(templates)))].format(name)


def normalise(images: np.ndarray, model):
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float32 normalised with the model's mean/std."""
    import torch
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255)
    mean = torch.tensor(model.visual.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(model.visual.image_std).view(1, 3, 1, 1)
    return (x - mean) / std


@dataclass(frozen=True)
class WindowSample:
    """One training/eval image: pixels (gh*p, gw*p, 3) uint8 cut from a frame at native scale, its
    window (row0, col0, gh, gw) in the frame's patch grid, keep (gh, gw) bool patches that are seen."""
    pixels: np.ndarray
    window: tuple
    keep: np.ndarray


def cut(image: np.ndarray, window, p: int, keep=None) -> WindowSample:
    """The window's pixels of a frame (a copy) as a WindowSample (keep defaults to all patches)."""
    r0, c0, gh, gw = (int(v) for v in window)
    pixels = image[r0 * p:(r0 + gh) * p, c0 * p:(c0 + gw) * p].copy()
    return WindowSample(pixels, (r0, c0, gh, gw), np.ones((gh, gw), bool) if keep is None else keep)


def crop_batch(pool: ScenePool, tc: TrainConfig, templates, rng, grid, p: int):
    """One balanced batch: per label one random region of the pool, cut as a window at native scale
    (patches of p pixels). A stuff label is, with probability tc.region_prob, its whole region (any size,
    only the region's patches seen), else a mostly-pure window of at most tc.max_window patches.
    Returns (list of WindowSample, captions)."""
    index = pool.by_label()
    samples, texts = [], []
    for label in sorted(index):
        s, k = index[label][int(rng.integers(len(index[label])))]
        scene = pool.scenes[s]
        seg = scene.segments[k]
        if seg["isthing"]:
            win = thing_window(seg, tc.max_window, grid, p, [int(rng.integers(0, 2)) for _ in range(4)])
            samples.append(cut(scene.image, win, p))
        elif tc.region_prob > 0 and rng.random() < tc.region_prob:
            window, keep = region_window(scene.panoptic, seg["id"], grid, p)
            samples.append(cut(scene.image, window, p, keep))
        else:
            samples.append(cut(scene.image, stuff_window(scene.panoptic, seg["id"], tc, grid, p, rng), p))
        texts.append(caption(seg, pool.names, templates, rng))
    return samples, texts


def encode_samples(model, samples: list[WindowSample], bucket_max: int):
    """Embeddings (B, E) of window samples, in order (not normalised). Samples are grouped by size (even
    square buckets for sides up to ``bucket_max`` patches, one group for larger ones) and padded within a
    group; padding is masked out, so grouping changes only the cost (up to float rounding)."""
    import torch
    p = model.visual.patch_size[0]
    groups: dict = {}
    for i, sample in enumerate(samples):
        side = max(sample.window[2:])
        key = side + side % 2 if side <= bucket_max else -1
        groups.setdefault(key, []).append(i)
    out = [None] * len(samples)
    for key, idx in groups.items():
        gh = max(samples[i].window[2] for i in idx) if key < 0 else key
        gw = max(samples[i].window[3] for i in idx) if key < 0 else key
        canvas = np.zeros((len(idx), gh * p, gw * p, 3), np.uint8)
        keep = np.zeros((len(idx), gh, gw), bool)
        for j, i in enumerate(idx):
            h, w = samples[i].window[2:]
            canvas[j, :h * p, :w * p] = samples[i].pixels
            keep[j, :h, :w] = samples[i].keep
        windows = torch.tensor([samples[i].window for i in idx], dtype=torch.long)
        emb = encode_windows(model.visual, normalise(canvas, model), windows, torch.from_numpy(keep))
        for i, e in zip(idx, emb):
            out[i] = e
    return torch.stack(out)


# ---------------------------------------------------------------------------------------------- training
def lr_at(step: int, tc: TrainConfig, elapsed: float = 0.0) -> float:
    """Linear warmup, then cosine decay to 0 at tc.steps or at the wall-clock budget tc.minutes, whichever
    comes first (so a run cut short by a slow machine still ends with a decayed learning rate; with a
    generous budget the schedule depends on the step alone)."""
    if step < tc.warmup_steps:
        return tc.lr * (step + 1) / tc.warmup_steps
    by_steps = (step - tc.warmup_steps) / max(1, tc.steps - tc.warmup_steps)
    progress = min(1.0, max(by_steps, elapsed / (tc.minutes * 60)))
    return 0.5 * tc.lr * (1 + math.cos(math.pi * progress))


def train(tc: TrainConfig, out: Path, log_path: Path | None, wcfg: world.WorldConfig,
          templates, command: str, progress: bool = True) -> dict:
    """Train the small CLIP; saves ``out`` (+ ``out.json``) every tc.save_every steps and at the end.
    Returns the metadata dict (losses, steps, seconds)."""
    import open_clip
    import torch
    from tqdm import tqdm
    torch.manual_seed(tc.seed)
    torch.set_num_threads(tc.threads)
    rng = np.random.default_rng(tc.seed)
    model = create_clip(tc.config_name)
    if tc.init:
        model.load_state_dict({k: v.float() for k, v in torch.load(tc.init, map_location="cpu",
                                                                  weights_only=True).items()})
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
            model.logit_scale.clamp_(0, math.log(100))
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


# ------------------------------------------------------------------------------------------------- CLI
def register(subparsers) -> None:
    """Add make-world, train-clip and eval-clip."""
    p = subparsers.add_parser("make-world", help="write generated scenes as a COCO panoptic dataset")
    p.add_argument("out_dir", type=Path)
    p.add_argument("--num-images", type=int, default=None, help="default: config/world.yaml make_world")
    p.add_argument("--seed", type=int, default=None, help="default: config/world.yaml make_world")
    p.add_argument("--split", default=None, help="default: config/world.yaml make_world")
    p.set_defaults(func=_make_world)

    p = subparsers.add_parser("train-clip", help="train the small CLIP on the generated world (CPU)")
    p.add_argument("--out", type=Path, required=True, help="checkpoint path (.pt); metadata goes to .json")
    p.add_argument("--log", type=Path, default=None, help="JSON-lines loss log")
    for field in dataclasses.fields(TrainConfig):
        kind = {"int": int, "float": float, "str": str, "bool": _bool}[field.type]
        p.add_argument("--" + field.name.replace("_", "-"), type=kind, default=None,
                       help="default: config/world.yaml train_clip." + field.name)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_train_clip)

    p = subparsers.add_parser("eval-clip", help="zero-shot region accuracy of a CLIP on held-out scenes")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="CLIP state dict (default: clip.checkpoint of config/default.yaml)")
    p.add_argument("--num-scenes", type=int, default=None, help="default: config/world.yaml eval_clip")
    p.add_argument("--seed", type=int, default=None, help="default: config/world.yaml eval_clip")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    p.add_argument("--modes", default="window,tokens",
                   help="comma list of window, tokens, tokens_core (diagnostic), crop (slow: one CLIP pass per region)")
    p.set_defaults(func=_eval_clip)


def prompt_templates() -> list[str]:
    """The vocabulary's prompt templates (config/default.yaml vocabulary.prompt_templates): training
    captions use them too, so zero-shot prompts read like the captions CLIP saw."""
    from maskclip_ros.config import load_params
    return list(load_params()["vocabulary"]["prompt_templates"])


def reproduce_command(args, overrides: dict) -> str:
    """The train-clip command line that reproduces this run (only options that were given)."""
    parts = ["maskclip-ros", "train-clip", "--out", str(args.out)]
    parts += ["--log", str(args.log)] if args.log else []
    for name, value in overrides.items():
        if value is not None:
            parts += ["--" + name.replace("_", "-"), str(value)]
    return " ".join(shlex.quote(p) for p in parts)


def _bool(text: str) -> bool:
    return text.lower() in ("1", "true", "yes", "on")


def _make_world(args) -> int:
    mw = world.load_yaml_section("make_world")
    path = world.write_world(args.out_dir, mw["num_images"] if args.num_images is None else args.num_images,
                             mw["seed"] if args.seed is None else args.seed, split=args.split or mw["split"])
    print(path)
    return 0


def _train_clip(args) -> int:
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)}
    tc = TrainConfig.load(**overrides)
    templates = prompt_templates()
    command = reproduce_command(args, overrides)
    meta = train(tc, args.out, args.log, world.WorldConfig.load(), templates, command,
                 progress=not args.no_progress)
    print(f"saved {args.out} after {meta['steps']} steps, {meta['seconds']} s, "
          f"final loss {meta['losses'][-1]['loss']}")
    return 0


def _eval_clip(args) -> int:
    ec = world.load_yaml_section("eval_clip")
    result = evaluate_clip(checkpoint=args.checkpoint, num_scenes=args.num_scenes or ec["num_scenes"],
                           seed=ec["seed"] if args.seed is None else args.seed,
                           modes=tuple(m for m in args.modes.split(",") if m))
    print(format_results(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    return 0


# ------------------------------------------------------------------------------------------ evaluation
EVAL_MODES = ("window", "tokens", "tokens_core", "crop")


def evaluate_clip(*, checkpoint: str | Path | None, num_scenes: int, seed: int,
                  modes=("window", "tokens"), params: dict | None = None, progress: bool = True) -> dict:
    """Zero-shot region classification on held-out generated scenes, loaded through model.factory.

    Modes: ``window`` - each region as a native-scale window of the frame (as in training; things: their
    bbox snapped to the patch grid, stuff: the whole region, only its patches seen); ``tokens`` - MaskCLIP
    mask class tokens with the ground-truth masks on the full frame; ``crop`` - MaskCLIP's CLIP baseline
    (masked box crop resized to the CLIP's input size); ``tokens_core`` - a diagnostic: ``tokens`` with
    each mask reduced to the patches it covers at least half of (Eq. 1 opens every patch a mask touches,
    so a stuff mask also sees the border patches of every thing standing on it).
    Returns {"scenes", "regions", mode: metrics}.
    """
    import torch
    from tqdm import tqdm
    from maskclip_ros.config import load_params
    from maskclip_ros.model.factory import ClipConfig, build_clip, build_maskclip
    from maskclip_ros.config import from_section
    params = params or load_params()
    if checkpoint is not None:
        params["clip"] = dict(params["clip"], checkpoint=str(checkpoint), pretrained="", random_init=False)
    for mode in modes:
        if mode not in EVAL_MODES:
            raise ValueError(f"unknown eval mode {mode!r}; use {EVAL_MODES}")
    tower = build_clip(from_section(ClipConfig, params["clip"], "clip"))
    text = EvalText.build(tower, list(params["vocabulary"]["prompt_templates"]))
    encoders = {m: _region_encoder(m, tower, params, build_maskclip) for m in modes}
    records = {m: [] for m in modes}
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for index in tqdm(range(num_scenes), desc="eval-clip", disable=not progress):
            scene = world.generate_scene(seed, index)
            for mode, encode in encoders.items():
                emb = encode(scene, rng)  # (S, E) L2-normalised
                records[mode] += text.predict(emb, scene.segments, tower.logit_scale)
    out = {"scenes": num_scenes, "seed": seed, "checkpoint": str(params["clip"]["checkpoint"]),
           "regions": len(records[modes[0]]) if modes else 0}
    out.update({m: summarise(r) for m, r in records.items()})
    return out


def _region_encoder(mode, tower, params, build_maskclip):
    """A function (scene, rng) -> (S, E) normalised embeddings of the scene's ground-truth segments."""
    import torch
    if mode == "window":
        tc = TrainConfig.load()
        p, grid = tower.patch_size, tower.native_grid

        def window(scene, rng):
            samples = [cut(scene.image, thing_window(s, tc.max_window, grid, p), p) if s["isthing"]
                       else cut(scene.image, *_region(scene, s, grid, p))
                       for s in scene.segments]
            return torch.nn.functional.normalize(encode_samples(tower.clip, samples, tc.max_window).float(), dim=-1)
        return window
    mp = dict(params, maskclip=dict(params["maskclip"], mode=mode.removesuffix("_core"), rma_checkpoint=""))
    maskclip = build_maskclip(mp, tower=tower).eval()
    core = mode.endswith("_core")

    def masked(scene, rng):
        ids = np.asarray([s["id"] for s in scene.segments])
        masks = scene.panoptic[None] == ids[:, None, None]  # (S, H, W)
        return maskclip(scene.image, core_masks(masks, tower.patch_size) if core else masks).embeddings
    return masked


def core_masks(masks: np.ndarray, p: int) -> np.ndarray:
    """(S, H, W) bool -> (S, H, W) bool: whole patches (p x p) that each mask covers at least half of;
    a mask covering no patch by half keeps its original pixels."""
    s, h, w = masks.shape
    gh, gw = h // p, w // p
    frac = masks[:, :gh * p, :gw * p].reshape(s, gh, p, gw, p).mean((2, 4))  # (S, gh, gw)
    core = np.zeros_like(masks)
    core[:, :gh * p, :gw * p] = np.repeat(np.repeat(frac >= 0.5, p, 1), p, 2)
    empty = ~core.any((1, 2))
    core[empty] = masks[empty]
    return core


@dataclass(frozen=True)
class EvalText:
    """Text embeddings for evaluation: the 14 categories (C, E) and colour x thing-class pairs (K*C_t, E)."""
    names: tuple
    categories: object      # (C, E) tensor
    colours: tuple
    thing_names: tuple
    joint: object           # (len(colours) * len(thing_names), E), colour-major

    @classmethod
    def build(cls, tower, templates) -> "EvalText":
        from maskclip_ros.model.vocabulary import TextEmbedder
        embed = TextEmbedder(tower=tower, cache_size=1000)
        cats = world.categories()
        names = tuple(c["name"] for c in cats)
        things = tuple(c["name"] for c in cats if c["isthing"])
        colours = tuple(world.COLOURS)
        return cls(names=names, categories=embed(names, templates), colours=colours, thing_names=things,
                   joint=embed([f"{c} {t}" for c in colours for t in things], templates))

    def predict(self, emb, segments, logit_scale: float) -> list[dict]:
        """Per segment: true/predicted category, split, and for things colour/shape from the joint
        colour x class prompts (probabilities marginalised over the other factor)."""
        cats = {c["id"]: c for c in world.categories()}
        pred = (emb @ self.categories.T).argmax(1).tolist()
        joint = (logit_scale * emb @ self.joint.T).softmax(-1).view(len(emb), len(self.colours), -1)
        colour_pred = joint.sum(2).argmax(1).tolist()
        shape_pred = joint.sum(1).argmax(1).tolist()
        both = joint.flatten(1).argmax(1).tolist()
        out = []
        for i, seg in enumerate(segments):
            cat = cats[seg["category_id"]]
            rec = {"name": cat["name"], "isthing": bool(cat["isthing"]), "split": cat["split"],
                   "pred": self.names[pred[i]]}
            if cat["isthing"]:
                rec.update(colour=seg["colour"], colour_pred=self.colours[colour_pred[i]],
                           shape_pred=self.thing_names[shape_pred[i]],
                           joint_ok=(self.colours[both[i] // len(self.thing_names)] == seg["colour"]
                                     and self.thing_names[both[i] % len(self.thing_names)] == cat["name"]))
            out.append(rec)
        return out


def summarise(records: list[dict]) -> dict:
    """Accuracies: things/stuff (14-way category), base/novel, colour, shape, colour+shape, context
    classes, and per class."""
    def acc(rows, key=lambda r: r["pred"] == r["name"]):
        return {"accuracy": round(float(np.mean([key(r) for r in rows])), 4) if rows else None, "n": len(rows)}
    things = [r for r in records if r["isthing"]]
    stuff = [r for r in records if not r["isthing"]]
    out = {"things": acc(things), "stuff": acc(stuff)}
    for split in ("base", "novel"):
        out[f"{split}_things"] = acc([r for r in things if r["split"] == split])
        out[f"{split}_stuff"] = acc([r for r in stuff if r["split"] == split])
    out["thing_colour"] = acc(things, lambda r: r["colour_pred"] == r["colour"])
    out["thing_shape"] = acc(things, lambda r: r["shape_pred"] == r["name"])
    out["thing_colour_and_shape"] = acc(things, lambda r: r["joint_ok"])
    out["context"] = acc([r for r in things if r["name"] in world.CONTEXT_CLASSES])
    out["per_class"] = {n: acc([r for r in records if r["name"] == n])["accuracy"]
                        for n in dict.fromkeys(r["name"] for r in records)}
    return out


def format_results(result: dict) -> str:
    """A small text table of evaluate_clip's result."""
    keys = ("things", "stuff", "base_things", "novel_things", "base_stuff", "novel_stuff", "thing_colour",
            "thing_shape", "thing_colour_and_shape", "context")
    modes = [m for m in EVAL_MODES if m in result]
    lines = [f"{result['regions']} regions in {result['scenes']} held-out scenes (seed {result['seed']})",
             f"{'metric':24s}" + "".join(f"{m:>10s}" for m in modes)]
    for k in keys:
        cells = [result[m][k]["accuracy"] for m in modes]
        lines.append(f"{k:24s}" + "".join(f"{'-' if c is None else f'{c:.3f}':>10s}" for c in cells)
                     + f"   (n={result[modes[0]][k]['n']})")
    return "\n".join(lines)
