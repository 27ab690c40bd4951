"""Mask bookkeeping for mask class tokens and RMA: patch visibility (Eq. 1), attention biases, mask patches,
and the refinement cascade state (Eq. 5).

Cost: the cascade never touches full-resolution masks between RMA layers (that would be several passes
over M x H x W values per layer); only the final refined masks are computed once at proposal resolution.

Masks stay at the proposals' own resolution (h, w); the patch grid (gh, gw) covers the same image, so
patch j of the grid covers the proportional block of mask pixels. ``adaptive_max_pool2d`` over that block
answers Eq. 1's "mask i contains at least one pixel of patch j" directly at mask resolution.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from maskclip_ros.model.tower import InputGeometry

# Mask probabilities are clamped to [EPS, 1 - EPS] before the inverse sigmoid (|logit| <= 9.2), so a
# refinement residual can always move a pixel and no logit is infinite.
MASK_PROB_EPS = 1e-4
# Masks per chunk when the refined masks are computed at full resolution (bounds temporary memory).
OUTPUT_CHUNK = 16


def as_mask_tensor(masks: np.ndarray | torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """(M, h, w) bool/float masks (numpy or torch) -> a new float32 tensor in [0, 1] on ``device``.

    The result never aliases the caller's memory, so later steps cannot modify the caller's masks.
    """
    tensor = torch.as_tensor(np.asarray(masks)) if isinstance(masks, np.ndarray) else masks
    if tensor.ndim != 3:
        raise ValueError(f"masks must be (M, h, w), got shape {tuple(tensor.shape)}")
    out = tensor.detach().to(device=device, dtype=torch.float32, copy=True)
    return out.clamp_(0.0, 1.0)


def prob_to_logit(probs: torch.Tensor) -> torch.Tensor:
    """Inverse sigmoid of probabilities clamped to [EPS, 1 - EPS] (any shape); a new tensor."""
    return torch.logit(probs, eps=MASK_PROB_EPS)


def visible_patches(values: torch.Tensor, grid: tuple[int, int], threshold: float) -> torch.Tensor:
    """Eq. 1's M': which patches each mask touches.

    Args:
        values: (M, h, w) mask probabilities (or logits, with ``threshold`` a logit).
        grid: (gh, gw) patch grid of the same image.
        threshold: a pixel belongs to the mask when its value is above this.
    Returns:
        (M, gh*gw) bool, True where mask i has at least one pixel inside patch j.
    """
    if values.shape[0] == 0:
        return torch.zeros(0, grid[0] * grid[1], dtype=torch.bool, device=values.device)
    pooled = F.adaptive_max_pool2d(values[:, None], grid)  # (M, 1, gh, gw)
    return (pooled > threshold).flatten(1)


def attention_bias(visible: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive attention mask of mask-token rows over [class, patches] columns.

    Args:
        visible: (M, N) bool patch visibility.
    Returns:
        (1, 1, M, 1 + N) float: 0 = attend, -inf = blocked. The class column is always 0, so no row is
        entirely blocked (an empty mask sees only the class token). Broadcasts over heads.
    """
    m = visible.shape[0]
    bias = torch.zeros(m, 1 + visible.shape[1], dtype=dtype, device=visible.device)
    bias[:, 1:].masked_fill_(~visible, float("-inf"))
    return bias[None, None]


def work_size(geometry: InputGeometry, subdivisions: int) -> tuple[int, int]:
    """The cascade's working resolution: ``subdivisions`` mask values per patch side, (gh*s, gw*s)."""
    return geometry.grid[0] * subdivisions, geometry.grid[1] * subdivisions


def mask_patches(values: torch.Tensor, subdivisions: int) -> torch.Tensor:
    """RMA's mask patch inputs: working-resolution masks cut into their patches.

    Args:
        values: (M, gh*s, gw*s) mask probabilities at the working resolution (s = ``subdivisions``).
    Returns:
        (N, M, s*s) values per patch, patches row-major (N = gh*gw), laid out for a batched matmul over N.
    """
    m, hs, ws = values.shape
    s = subdivisions
    gh, gw = hs // s, ws // s
    patches = values.reshape(m, gh, s, gw, s).permute(1, 3, 0, 2, 4)  # (gh, gw, M, s, s)
    return patches.reshape(gh * gw, m, s * s)


@dataclass(frozen=True)
class MaskState:
    """The current masks of the refinement cascade and what the attention needs from them.

    The cascade runs at a working resolution of s x s values per patch (s = ``subdivisions``; s = patch
    size is the paper's full resolution). The proposals enter it twice, both computed once: area-averaged
    (soft values for the mask patch tokens) and max-pooled (so that "mask i has a pixel in patch j" stays
    exact at the proposals' own resolution). The refinement residual lives on the patch grid and is
    upsampled bilinearly; at zero residual the attention mask is exactly the proposals' one.

    probs0:   (M, h, w) proposals (never modified).
    bias:     (1, 1, M, 1 + N) attention bias of the current masks.
    avg_logits0, max_logits0: (M, gh*s, gw*s) logits of the area-averaged / max-pooled proposals.
    residual: (M, gh, gw) refinement residual summed over the RMA layers so far (None before the first).
    patches:  (N, M, s*s) mask patch values of the current masks (None when no later RMA layer needs them).
    """

    probs0: torch.Tensor
    bias: torch.Tensor
    geometry: InputGeometry
    threshold: float
    subdivisions: int
    avg_logits0: torch.Tensor | None = None
    max_logits0: torch.Tensor | None = None
    residual: torch.Tensor | None = None
    patches: torch.Tensor | None = None

    @classmethod
    def initial(cls, probs: torch.Tensor, geometry: InputGeometry, *, threshold: float, dtype: torch.dtype,
                subdivisions: int | None = None) -> "MaskState":
        """State of the proposals themselves. probs: (M, h, w) float in [0, 1] (not modified).
        ``subdivisions`` None = no cascade (``tokens`` mode): only the attention bias is computed."""
        if subdivisions is None:
            bias = attention_bias(visible_patches(probs, geometry.grid, threshold), dtype)
            return cls(probs0=probs, bias=bias, geometry=geometry, threshold=threshold, subdivisions=0)
        size = work_size(geometry, subdivisions)
        avg = F.adaptive_avg_pool2d(probs[:, None], size)[:, 0]  # (M, gh*s, gw*s)
        high = F.adaptive_max_pool2d(probs[:, None], size)[:, 0]  # (M, gh*s, gw*s)
        visible = visible_patches(high, geometry.grid, threshold)
        return cls(probs0=probs, bias=attention_bias(visible, dtype), geometry=geometry, threshold=threshold,
                   subdivisions=subdivisions, avg_logits0=prob_to_logit(avg), max_logits0=prob_to_logit(high),
                   patches=mask_patches(avg, subdivisions))

    def refined(self, delta: torch.Tensor, *, need_bias: bool, need_patches: bool) -> tuple["MaskState", torch.Tensor]:
        """Add one RMA layer's residual (M, gh, gw) (Eq. 5).

        ``need_bias`` / ``need_patches`` say whether later blocks use the new attention bias / mask patches
        (skipped after the last layer that needs them).
        Returns the new state and the refined mask logits at the working resolution (M, gh*s, gw*s).
        """
        residual = delta if self.residual is None else self.residual + delta
        up = F.interpolate(residual[:, None], size=self.avg_logits0.shape[-2:], mode="bilinear",
                           align_corners=False)[:, 0]  # (M, gh*s, gw*s)
        logits = self.avg_logits0 + up
        bias = self.bias
        if need_bias:
            visible = visible_patches(self.max_logits0 + up, self.geometry.grid, _logit(self.threshold))
            bias = attention_bias(visible, self.bias.dtype)
        patches = mask_patches(torch.sigmoid(logits), self.subdivisions) if need_patches else None
        return replace(self, residual=residual, bias=bias, patches=patches), logits

    def output_masks(self) -> torch.Tensor:
        """(M, h, w) refined masks at the proposals' resolution: sigmoid(logit(M_c) + upsampled residual).

        Computed in chunks of masks, so the temporaries stay small next to the (M, h, w) result."""
        if self.residual is None:
            return self.probs0
        out = torch.empty_like(self.probs0, dtype=self.residual.dtype)
        for start in range(0, out.shape[0], OUTPUT_CHUNK):
            part = slice(start, start + OUTPUT_CHUNK)
            up = F.interpolate(self.residual[part, None], size=out.shape[-2:], mode="bilinear",
                               align_corners=False)[:, 0]  # (chunk, h, w)
            out[part] = torch.sigmoid(up + prob_to_logit(self.probs0[part]))
        return out


def _logit(p: float) -> float:
    p = min(max(p, MASK_PROB_EPS), 1.0 - MASK_PROB_EPS)
    return math.log(p / (1.0 - p))
