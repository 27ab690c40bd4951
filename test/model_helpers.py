"""Shared helpers of the model tests: tiny seeded CLIP towers, synthetic images/masks, the literal Eq. 1
reference. Tiny config: maskclip_ros/assets/clip_configs/maskclip-ros-test-tiny.json (width 64, 4 blocks,
patch 16, native 64x64)."""
from __future__ import annotations

import numpy as np
import open_clip
import torch

import dataclasses

from maskclip_ros.model.factory import register_asset_configs
from maskclip_ros.model.maskclip import MaskCLIP, MaskCLIPConfig
from maskclip_ros.model.rma import RelativeMaskAttention, RMAConfig, default_block_indices
from maskclip_ros.model.tower import ClipTower

TINY = "maskclip-ros-test-tiny"
# MaskCLIP settings of the model tests, pinned here (not read from config/default.yaml, so tuning the
# defaults never changes what these tests check).
MASKCLIP = MaskCLIPConfig(mode="tokens", mask_threshold=0.5, crop_batch_size=4, crop_size=0, rma_layers="",
                          rma_num_layers=2, rma_refine=True, rma_refine_hidden=8, rma_mask_resolution=4,
                          rma_no_object=True, rma_checkpoint="", backend="torch", export_cache_dir="",
                          export_threads=0, export_frame_size=(0, 0))


def maskclip_config(**changes) -> MaskCLIPConfig:
    return dataclasses.replace(MASKCLIP, **changes)


def tiny_tower(seed: int = 0, short_side: int = 64, **clip_kwargs) -> ClipTower:
    """A seeded random-init tiny CLIP tower (``clip_kwargs`` go to open_clip.create_model)."""
    register_asset_configs()
    torch.manual_seed(seed)
    clip = open_clip.create_model(TINY, pretrained=None, **clip_kwargs)
    return ClipTower(clip=clip, tokenizer=open_clip.get_tokenizer(TINY), model_name=TINY, short_side=short_side)


def rma_config(tower: ClipTower, blocks=None, refine_hidden: int = 8, no_object: bool = True,
               mask_resolution: int = 4) -> RMAConfig:
    from maskclip_ros.model.factory import clip_fingerprint
    blocks = default_block_indices(tower.depth, 2) if blocks is None else tuple(blocks)
    return RMAConfig(clip_model_name=tower.model_name, clip_fingerprint=clip_fingerprint(tower),
                     depth=tower.depth, width=tower.width, heads=tower.heads, patch_size=tower.patch_size,
                     mask_resolution=mask_resolution, embed_dim=tower.embed_dim, block_indices=blocks, refine_hidden=refine_hidden,
                     no_object=no_object)


def make_maskclip(tower: ClipTower, mode: str, rma: RelativeMaskAttention | None = None,
                  threshold: float = 0.5) -> MaskCLIP:
    return MaskCLIP(tower=tower, mode=mode, mask_threshold=threshold, crop_batch_size=4, crop_size=0, rma=rma)


def randomize(module: torch.nn.Module, seed: int = 1, std: float = 0.05) -> torch.nn.Module:
    """Give every parameter of ``module`` random values (the zero-init start hides gradient paths)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * std)
    return module


def scene(h: int = 48, w: int = 80, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A random uint8 image (h, w, 3) and 4 masks (4, h, w) float32: left half, a box, a soft blob, full."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    masks = np.zeros((4, h, w), np.float32)
    masks[0, :, : w // 2] = 1.0
    masks[1, h // 4: h // 2, w // 3: w // 2] = 1.0
    yy, xx = np.mgrid[:h, :w]
    masks[2] = np.exp(-((yy - 0.6 * h) ** 2 + (xx - 0.7 * w) ** 2) / (2 * (0.15 * h) ** 2))
    masks[3] = 1.0
    return image, masks


@torch.no_grad()
def literal_reference(tower: ClipTower, image: np.ndarray, masks: np.ndarray, threshold: float = 0.5):
    """Eq. 1 literally: open_clip's own blocks on [class, patches, M mask tokens] with the (L, L) additive
    float mask (True = blocked -> -inf). Returns (mask embeddings (M, E), class + patch outputs (1+N, D))."""
    pixels, geometry = tower.preprocess(image)
    x = tower.embed(pixels)  # (1, 1 + N, D)
    m_count, n = masks.shape[0], geometry.num_patches
    seq = torch.cat([x, x[:, :1].expand(-1, m_count, -1)], dim=1)  # (1, L, D)
    big = 1 + n + m_count
    blocked = torch.zeros(big, big, dtype=torch.bool)
    blocked[: 1 + n, 1 + n:] = True  # image rows never see mask tokens
    blocked[1 + n:, 1 + n:] = True  # mask tokens never see mask tokens (incl. themselves)
    gh, gw = geometry.grid
    binary = torch.as_tensor(masks) > threshold  # (M, h, w)
    h, w = binary.shape[-2:]
    for i in range(m_count):  # M'[i, j]: mask i has no pixel in patch j (proportional patch blocks)
        for r in range(gh):
            for c in range(gw):
                rows = slice((r * h) // gh, -(-((r + 1) * h) // gh))
                cols = slice((c * w) // gw, -(-((c + 1) * w) // gw))
                blocked[1 + n + i, 1 + r * gw + c] = not bool(binary[i, rows, cols].any())
    float_mask = torch.zeros(big, big).masked_fill(blocked, float("-inf"))
    for block in tower.blocks:
        seq = block(seq, attn_mask=float_mask)
    return tower.readout(seq[0, 1 + n:]), seq[0, : 1 + n]
