"""Native-scale windows of a frame's patch grid and their encoding with the CLIP image tower.

A crop is a window of the frame's patch grid cut without rescaling; its patches get the positional
embeddings of exactly those grid cells, and a batch of windows is padded with the padding masked out of
the attention, so every crop is encoded as if it were alone (see the package docstring).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from maskclip_ros.data import world

# A region "covers" a patch when at least this fraction of the patch's pixels belong to it.
HALF_COVER = 0.5
# Random windows tried for a pure-enough stuff window; the window shrinks by one patch every this many tries.
STUFF_WINDOW_TRIES = 20
STUFF_SHRINK_EVERY = 4


def encode_windows(visual, crops, windows, keep=None, with_patches: bool = False):
    """Encode crops that are windows of the model's native patch grid, without rescaling.

    visual: open_clip VisionTransformer (pool 'tok'); crops: (B, 3, Gh*p, Gw*p) normalised pixels, each
    crop's content in the top-left (gh*p, gw*p) corner; windows: (B, 4) long (row0, col0, gh, gw) in
    patches of the full frame; keep: optional (B, Gh, Gw) bool, the patches the class token and the
    patches may attend to (default: the window's gh x gw rectangle; padding is always dropped).
    Returns (B, E) image embeddings (not normalised); with_patches: also the patch tokens' read-outs
    (B, Gh*Gw, E) (not normalised; used by the dense loss).
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
    pooled, tokens = visual._pool(x)  # (B, D), (B, Gh*Gw, D)
    if visual.proj is not None:
        pooled, tokens = pooled @ visual.proj, tokens @ visual.proj
    return (pooled, tokens) if with_patches else pooled


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


def stuff_window(panoptic, seg_id, *, min_window: int, max_window: int, purity: float, grid, p: int, rng):
    """A random window of mostly one stuff segment (purity >= ``purity``, else the purest tried), between
    ``min_window`` and ``max_window`` patches per side."""
    best, best_purity = None, -1.0
    for t in range(STUFF_WINDOW_TRIES):
        g = max(min_window, max_window - t // STUFF_SHRINK_EVERY)
        gh, gw = int(rng.integers(min_window, g + 1)), int(rng.integers(min_window, g + 1))
        r0, c0 = int(rng.integers(0, grid[0] - gh + 1)), int(rng.integers(0, grid[1] - gw + 1))
        share = (panoptic[r0 * p:(r0 + gh) * p, c0 * p:(c0 + gw) * p] == seg_id).mean()
        if share >= purity:
            return r0, c0, gh, gw
        if share > best_purity:
            best, best_purity = (r0, c0, gh, gw), share
    return best

def region_window(panoptic, seg_id, grid, p: int):
    """A stuff segment as a whole: the window of its bbox snapped to the patch grid (any size) and the
    patches it covers at least half of, (gh, gw) bool (its whole region if it covers none by half)."""
    ys, xs = np.nonzero(panoptic == seg_id)
    r0, c0 = ys.min() // p, xs.min() // p
    r1, c1 = min(grid[0], ys.max() // p + 1), min(grid[1], xs.max() // p + 1)
    frac = (panoptic[r0 * p:r1 * p, c0 * p:c1 * p] == seg_id).reshape(r1 - r0, p, c1 - c0, p).mean((1, 3))
    keep = frac >= HALF_COVER
    return (int(r0), int(c0), int(r1 - r0), int(c1 - c0)), (keep if keep.any() else frac > 0)

def normalise(images: np.ndarray, model):
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float32 normalised with the model's mean/std, on its device."""
    import torch
    device = model.visual.class_embedding.device
    x = torch.from_numpy(images).to(device).permute(0, 3, 1, 2).float().div_(255)
    mean = torch.tensor(model.visual.image_mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(model.visual.image_std, device=device).view(1, 3, 1, 1)
    return (x - mean) / std


@dataclass(frozen=True)
class WindowSample:
    """One training/eval image: pixels (gh*p, gw*p, 3) uint8 cut from a frame at native scale, its
    window (row0, col0, gh, gw) in the frame's patch grid, keep (gh, gw) bool patches that are seen, and
    labels (gh, gw) int64 category index per seen patch for the dense loss (-1 = none) or None."""
    pixels: np.ndarray
    window: tuple
    keep: np.ndarray
    labels: np.ndarray | None = None


def cut(image: np.ndarray, window, p: int, keep=None, scene=None) -> WindowSample:
    """The window's pixels of a frame (a copy) as a WindowSample (keep defaults to all patches); with
    ``scene`` (a world.Scene), also the seen patches' category labels (patch_labels)."""
    r0, c0, gh, gw = (int(v) for v in window)
    pixels = image[r0 * p:(r0 + gh) * p, c0 * p:(c0 + gw) * p].copy()
    keep = np.ones((gh, gw), bool) if keep is None else keep
    labels = None
    if scene is not None:
        panoptic = scene.panoptic[r0 * p:(r0 + gh) * p, c0 * p:(c0 + gw) * p]
        labels = np.where(keep, patch_labels(panoptic, scene.segments, p).reshape(gh, gw), -1)
    return WindowSample(pixels, (r0, c0, gh, gw), keep, labels)


def category_index() -> dict[int, int]:
    """World category id -> its row in world.categories() (the dense loss's class index)."""
    return {c["id"]: i for i, c in enumerate(world.categories())}


def patch_labels(panoptic: np.ndarray, segments: list[dict], p: int) -> np.ndarray:
    """(gh*gw,) int64: category index (category_index) of the segment covering each p x p patch of a
    panoptic id map (H, W) at least half, -1 where none does (row-major)."""
    gh, gw = panoptic.shape[0] // p, panoptic.shape[1] // p
    ids = np.asarray([s["id"] for s in segments])
    cells = panoptic[:gh * p, :gw * p].reshape(gh, p, gw, p)
    frac = (cells[None] == ids[:, None, None, None, None]).mean((2, 4)).reshape(len(ids), -1)  # (S, N)
    index = category_index()
    classes = np.asarray([index[s["category_id"]] for s in segments], np.int64)
    return np.where(frac.max(0) >= HALF_COVER, classes[frac.argmax(0)], -1)

def _size_groups(samples: list[WindowSample], bucket_max: int) -> dict[int, list[int]]:
    """Sample indices by canvas size: even square sides up to ``bucket_max`` patches, -1 for larger ones."""
    groups: dict[int, list[int]] = {}
    for i, sample in enumerate(samples):
        side = max(sample.window[2:])
        groups.setdefault(side + side % 2 if side <= bucket_max else -1, []).append(i)
    return groups


def encode_samples(model, samples: list[WindowSample], bucket_max: int, with_patches: bool = False):
    """Embeddings (B, E) of window samples, in order (not normalised). Samples are grouped by size
    (_size_groups) and padded within a group; padding is masked out, so grouping changes only the cost
    (up to float rounding). with_patches: also the labelled patches' read-outs (K, E) (not normalised)
    and their labels (K,) int64 (samples need labels: cut(..., scene=...))."""
    import torch
    p = model.visual.patch_size[0]
    out = [None] * len(samples)
    patch_emb, patch_lab = [], []
    for key, idx in _size_groups(samples, bucket_max).items():
        gh = max(samples[i].window[2] for i in idx) if key < 0 else key
        gw = max(samples[i].window[3] for i in idx) if key < 0 else key
        canvas = np.zeros((len(idx), gh * p, gw * p, 3), np.uint8)
        keep = np.zeros((len(idx), gh, gw), bool)
        labels = np.full((len(idx), gh, gw), -1, np.int64)
        for j, i in enumerate(idx):
            h, w = samples[i].window[2:]
            canvas[j, :h * p, :w * p] = samples[i].pixels
            keep[j, :h, :w] = samples[i].keep
            if with_patches:
                labels[j, :h, :w] = samples[i].labels
        crops = normalise(canvas, model)
        windows = torch.tensor([samples[i].window for i in idx], dtype=torch.long, device=crops.device)
        result = encode_windows(model.visual, crops, windows, torch.from_numpy(keep), with_patches=with_patches)
        emb = result[0] if with_patches else result
        if with_patches:
            flat = torch.from_numpy(labels.reshape(-1)).to(crops.device)
            patch_emb.append(result[1].reshape(-1, result[1].shape[-1])[flat >= 0])
            patch_lab.append(flat[flat >= 0])
        for i, e in zip(idx, emb):
            out[i] = e
    if with_patches:
        return torch.stack(out), torch.cat(patch_emb), torch.cat(patch_lab)
    return torch.stack(out)
