"""Mask bookkeeping for mask class tokens and RMA: patch visibility (Eq. 1), attention biases, mask patches,
and the refinement cascade state (Eq. 5).

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
    """Inverse sigmoid of clamped probabilities (any shape); a new tensor."""
    return torch.logit(probs.clamp(MASK_PROB_EPS, 1.0 - MASK_PROB_EPS))


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


def mask_patches(probs: torch.Tensor, geometry: InputGeometry, patch_size: int) -> torch.Tensor:
    """RMA's mask patch inputs: each mask resized to the ViT input size and cut into patches.

    Args:
        probs: (M, h, w) mask probabilities.
    Returns:
        (N, M, p*p) patch pixel values, patches row-major (N = gh*gw), laid out for a batched matmul over N.
    """
    m = probs.shape[0]
    (gh, gw), p = geometry.grid, patch_size
    if tuple(probs.shape[-2:]) != geometry.input_size:
        probs = F.interpolate(probs[:, None], size=geometry.input_size, mode="bilinear",
                              align_corners=False)[:, 0]
    patches = probs.reshape(m, gh, p, gw, p).permute(1, 3, 0, 2, 4)  # (gh, gw, M, p, p)
    return patches.reshape(gh * gw, m, p * p)


@dataclass(frozen=True)
class MaskState:
    """The current masks of the cascade and what the attention needs from them.

    logits0:  (M, h, w) inverse sigmoid of the proposals (None until RMA needs it).
    residual: (M, gh, gw) refinement residual summed over the RMA layers so far (None = no refinement yet).
    bias:     (1, 1, M, 1 + N) attention bias of the current masks.
    patches:  (N, M, p*p) mask patch values of the current masks (None when no RMA layer needs them).
    """

    probs0: torch.Tensor
    logits0: torch.Tensor | None
    residual: torch.Tensor | None
    bias: torch.Tensor
    patches: torch.Tensor | None
    geometry: InputGeometry
    threshold: float
    patch_size: int

    @classmethod
    def initial(cls, probs: torch.Tensor, geometry: InputGeometry, *, threshold: float, patch_size: int,
                dtype: torch.dtype, with_patches: bool) -> "MaskState":
        """State of the proposals themselves. probs: (M, h, w) float in [0, 1] (not modified)."""
        bias = attention_bias(visible_patches(probs, geometry.grid, threshold), dtype)
        return cls(probs0=probs, logits0=prob_to_logit(probs) if with_patches else None, residual=None,
                   bias=bias, patches=mask_patches(probs, geometry, patch_size) if with_patches else None,
                   geometry=geometry, threshold=threshold, patch_size=patch_size)

    def current_logits(self) -> torch.Tensor:
        """(M, h, w) logits of the current masks: logit(M_c) + the upsampled residual (Eq. 5)."""
        logits0 = self.logits0 if self.logits0 is not None else prob_to_logit(self.probs0)
        if self.residual is None:
            return logits0
        up = F.interpolate(self.residual[:, None], size=logits0.shape[-2:], mode="bilinear",
                           align_corners=False)[:, 0]
        return logits0 + up

    def refined(self, delta: torch.Tensor, *, need_bias: bool, need_patches: bool) -> tuple["MaskState", torch.Tensor]:
        """Add one RMA layer's residual (M, gh, gw); returns the new state and its mask logits (M, h, w).

        ``need_bias`` / ``need_patches`` say whether later blocks use the new attention bias / mask patches
        (skipped after the last layer that needs them)."""
        residual = delta if self.residual is None else self.residual + delta
        state = replace(self, residual=residual)
        logits = state.current_logits()
        bias = (attention_bias(visible_patches(logits, self.geometry.grid, _logit(self.threshold)),
                               self.bias.dtype) if need_bias else self.bias)
        patches = mask_patches(torch.sigmoid(logits), self.geometry, self.patch_size) if need_patches else None
        return replace(state, bias=bias, patches=patches), logits


def _logit(p: float) -> float:
    p = min(max(p, MASK_PROB_EPS), 1.0 - MASK_PROB_EPS)
    return math.log(p / (1.0 - p))
