"""Relative Mask Attention (RMA): the only trainable parameters of MaskCLIP (CLIP stays frozen).

Per RMA layer (paper Eq. 3 and Eq. 5, restated in docs/method.md):

* mask patch tokens ``T_MP = f_2(mask)`` with ``f_2`` a patchifier like CLIP's patch embedding (conv,
  kernel = stride = one patch, one input channel), applied to the mask at s x s values per patch
  (``mask_resolution`` s; s = patch size is the paper's full resolution; the default 4 keeps the cascade off
  full-resolution masks, see ``model.masks``);
* relative term ``A'[i, j] = sum_c phi_Qm(T_MP)[i, j, c] * phi_Km(T_IM)[j, c]`` (per head: c runs over the
  head's channels), added to mask token i's logit over patch j;
* refinement ``M_r = sigmoid(logit(M_c) + f_r(logits))`` with ``f_r`` a two-layer conv net on the patch grid.

**Efficient form.** ``f_2`` followed by ``phi_Qm`` is one affine map of a patch's s*s mask values,
``W = W_Qm @ W_f2`` (D x s*s) plus ``b_Qm``. So per head h,
``A'[i, h, j] = x_ij . G[h, j] + g0[h, j]`` with ``G[h, j] = W_h^T phi_Km(T_IM)[j]_h`` (s*s values) and
``g0[h, j] = b_Qm,h . phi_Km(T_IM)[j]_h``. G costs N*D*s^2 once per layer, the relative term M*N*s^2 per
head; no M x N x D tensor is ever built (the official code materialises one: ~1.6x the ViT's FLOPs at
M = 100). ``f_r`` reads the per-head logits of the mask tokens over the patches, (M, heads, gh, gw), which
the attention computes anyway (the paper's caption: "maps the attention matrix to a mask residual"), and its
output is upsampled bilinearly to the mask resolution.

**Start = training-free model.** ``phi_Qm`` and the last conv of ``f_r`` start at zero, so an untrained RMA
adds nothing to the logits and leaves the masks unchanged: it equals ``tokens`` mode, and training starts
from the training-free model. The relative term uses CLIP's own 1/sqrt(d_head) scale (the paper writes
1/(2 sqrt(D)), which would rescale CLIP's frozen logits and break that equivalence).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class RMAConfig:
    """Architecture of the added parameters and the CLIP they belong to (stored in checkpoints)."""

    clip_model_name: str  # open_clip model name the parameters were built for
    clip_fingerprint: tuple[float, ...]  # a few CLIP weights, to catch "same name, other weights"
    depth: int  # number of ViT blocks
    width: int  # ViT token width D
    heads: int  # attention heads
    patch_size: int  # ViT patch size p
    mask_resolution: int  # s: mask values per patch side seen by f_2 and the cascade (1..p)
    embed_dim: int  # joint embedding dimension E (for the "no object" embedding)
    block_indices: tuple[int, ...]  # 0-based indices of the blocks with RMA, ascending
    refine_hidden: int  # channels of f_r's hidden layer; 0 = no mask refinement (ablation)
    no_object: bool  # learn a "no object" embedding for unmatched proposals

    def to_dict(self) -> dict:
        """Plain types only (loadable with torch.load(weights_only=True))."""
        out = asdict(self)
        out["clip_fingerprint"] = list(self.clip_fingerprint)
        out["block_indices"] = list(self.block_indices)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "RMAConfig":
        return cls(**{**data, "clip_fingerprint": tuple(data["clip_fingerprint"]),
                      "block_indices": tuple(int(i) for i in data["block_indices"])})


def default_block_indices(depth: int, count: int) -> tuple[int, ...]:
    """``count`` evenly spaced 0-based block indices ending at the last block (24 blocks, 4 -> the paper's
    1-based 6, 12, 18, 24)."""
    if count <= 0:
        return ()
    return tuple(sorted({math.ceil((i + 1) * depth / count) - 1 for i in range(count)}))


def parse_layers(spec: str, depth: int) -> tuple[int, ...]:
    """'6,12,18,24' (1-based, the paper's convention) -> 0-based block indices, validated against depth."""
    try:
        layers = sorted({int(tok) for tok in spec.replace(" ", "").split(",") if tok})
    except ValueError as err:
        raise ValueError(f"maskclip.rma_layers must be comma-separated integers, got {spec!r}") from err
    bad = [i for i in layers if not 1 <= i <= depth]
    if bad:
        raise ValueError(f"maskclip.rma_layers {bad} outside 1..{depth} (this CLIP has {depth} blocks)")
    return tuple(i - 1 for i in layers)


class MaskRefinementHead(nn.Module):
    """f_r: per-head mask-token logits on the patch grid -> mask logit residual on the grid.

    conv3x3 -> GELU -> conv3x3; the last conv starts at zero (no change to the masks)."""

    def __init__(self, heads: int, hidden: int):
        super().__init__()
        self.conv1 = nn.Conv2d(heads, hidden, 3, padding=1)
        self.act = nn.GELU()
        self.conv2 = nn.Conv2d(hidden, 1, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        """logits (M, heads, gh, gw) -> residual (M, gh, gw)."""
        return self.conv2(self.act(self.conv1(logits)))[:, 0]


class RelativeMaskAttentionLayer(nn.Module):
    """The parameters RMA adds to one ViT block: f_2, phi_Qm, phi_Km and (optionally) f_r."""

    def __init__(self, *, width: int, heads: int, mask_resolution: int, refine_hidden: int):
        super().__init__()
        self.heads = heads
        # f_2: kernel = stride = one patch of s x s mask values
        self.mask_patch_embed = nn.Conv2d(1, width, mask_resolution, stride=mask_resolution, bias=False)
        self.mask_query = nn.Linear(width, width)  # phi_Qm, zero-initialised: A' starts at 0
        self.image_key = nn.Linear(width, width)  # phi_Km
        nn.init.zeros_(self.mask_query.weight)
        nn.init.zeros_(self.mask_query.bias)
        self.refine = MaskRefinementHead(heads, refine_hidden) if refine_hidden > 0 else None

    def relative_logits(self, patches: torch.Tensor, image_tokens: torch.Tensor) -> torch.Tensor:
        """The relative term A' (Eq. 3) without an M x N x D tensor.

        Args:
            patches: (N, M, s*s) mask patch values (``masks.mask_patches``).
            image_tokens: (N, D) the block's normalised patch tokens T_IM (``ln_1`` output).
        Returns:
            (M, heads, N) relative logits, unscaled.
        """
        n, d = image_tokens.shape
        h = self.heads
        keys = self.image_key(image_tokens).view(n, h, d // h)  # phi_Km(T_IM): (N, heads, d_head)
        w = self.mask_query.weight @ self.mask_patch_embed.weight.flatten(1)  # (D, s*s) = W_Qm W_f2
        g = torch.einsum("nhc,hck->nkh", keys, w.view(h, d // h, -1))  # (N, s*s, heads)
        g0 = torch.einsum("nhc,hc->nh", keys, self.mask_query.bias.view(h, d // h))  # (N, heads)
        rel = torch.bmm(patches.to(g.dtype), g) + g0[:, None]  # (N, M, heads)
        return rel.permute(1, 2, 0)


class RelativeMaskAttention(nn.Module):
    """All RMA layers of one MaskCLIP model plus the optional learned "no object" embedding.

    An instance with no layers adds nothing: MaskCLIP in ``rma`` mode then equals ``tokens`` mode.
    """

    def __init__(self, config: RMAConfig):
        super().__init__()
        bad = [i for i in config.block_indices if not 0 <= i < config.depth]
        if bad:
            raise ValueError(f"RMA block indices {bad} outside 0..{config.depth - 1}")
        if not 1 <= config.mask_resolution <= config.patch_size:
            raise ValueError(f"RMA mask_resolution must be in 1..{config.patch_size} (the patch size), "
                             f"got {config.mask_resolution}")
        self.config = config
        self.layers = nn.ModuleDict({
            str(i): RelativeMaskAttentionLayer(width=config.width, heads=config.heads,
                                               mask_resolution=config.mask_resolution,
                                               refine_hidden=config.refine_hidden)
            for i in config.block_indices})
        # Zero start: its logit is 0, i.e. cosine 0 to every embedding (not normalised: a free vector).
        self.no_object_embedding = nn.Parameter(torch.zeros(config.embed_dim)) if config.no_object else None

    def layer(self, block_index: int) -> RelativeMaskAttentionLayer | None:
        """The RMA layer of a block, or None when that block has none."""
        return self.layers[str(block_index)] if str(block_index) in self.layers else None

    def next_index(self, block_index: int) -> int | None:
        """The first RMA block after ``block_index`` (None if none)."""
        later = [i for i in self.config.block_indices if i > block_index]
        return later[0] if later else None
