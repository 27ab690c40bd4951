"""The MaskCLIP visual encoder: one CLIP embedding per mask proposal, in three modes over the same proposals.

* ``crop``   - the paper's CLIP baseline: each mask's ``mask * image``, cropped to the mask's box, zero-padded
  to the target's aspect ratio (never squashed) and resized to CLIP's native input size (or a configured
  square ``crop_size``), batched through CLIP. M forward passes' worth of work and no global context.
* ``tokens`` - MaskCLIP without RMA (training-free): M mask class tokens, each a copy of the class token,
  with the attention mask of Eq. 1. One forward pass.
* ``rma``    - MaskCLIP: mask class tokens plus Relative Mask Attention and the mask refinement cascade in
  the configured blocks (``model.rma``). Returns refined masks at the proposals' resolution.

**Efficient, exact form of Eq. 1.** Image tokens (class + patches) never attend to mask tokens, so they go
through every frozen block exactly as in CLIP. Mask tokens are computed per block as cross-attention from
mask tokens to [class, patches], with the block's own ``ln_1``, ``in_proj``, ``out_proj``, ``ls_1``,
``ln_2``, ``mlp``, ``ls_2``, and an additive bias: 0 for the class token and the mask's patches, -inf
elsewhere (the class column is never blocked, so no row is all -inf). Image keys/values are computed once
and shared; the (1+N+M)^2 attention matrix of the literal formulation is never built. The tests compare
this with the literal form (open_clip's own blocks on [class, patches, mask tokens] with Eq. 1's (L, L)
float mask).

Read-out: final mask token -> ``ln_post`` -> ``proj`` -> L2 normalisation. Classification: cosine
similarity times CLIP's logit scale, softmax over the vocabulary; an optional learned "no object" embedding
is an explicit extra output, never an implicit last column.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from maskclip_ros.model.masks import MaskState, as_mask_tensor
from maskclip_ros.model.rma import RelativeMaskAttention
from maskclip_ros.model.tower import ClipTower

MODES = ("crop", "tokens", "rma")


@dataclass(frozen=True)
class MaskCLIPConfig:
    """The ``maskclip`` section of the params (config/default.yaml documents every field)."""

    mode: str
    mask_threshold: float
    crop_batch_size: int
    crop_size: int
    rma_layers: str
    rma_num_layers: int
    rma_refine: bool
    rma_refine_hidden: int
    rma_mask_resolution: int
    rma_no_object: bool
    rma_checkpoint: str
    backend: str                       # torch, openvino or onnxruntime (model.runtimes.BACKENDS)
    export_cache_dir: str              # exported-encoder cache ("" = model.export.DEFAULT_CACHE_DIR)
    export_threads: int                # runtime threads of an exported encoder (0 = torch's)
    export_frame_size: tuple[int, ...]  # (H, W) to export for when built ((0, 0) = on the first frame)

    def __post_init__(self) -> None:
        from maskclip_ros.model.runtimes import BACKENDS

        if self.backend not in BACKENDS:
            raise ValueError(f"maskclip.backend must be one of {BACKENDS}, got {self.backend!r}")
        if len(self.export_frame_size) != 2 or min(self.export_frame_size) < 0:
            raise ValueError(f"maskclip.export_frame_size must be [height, width] >= 0, got {self.export_frame_size}")
        if self.mode not in MODES:
            raise ValueError(f"maskclip.mode must be one of {MODES}, got {self.mode!r}")
        if not 0.0 < self.mask_threshold < 1.0:
            raise ValueError(f"maskclip.mask_threshold must be in (0, 1), got {self.mask_threshold}")
        if self.crop_batch_size < 1:
            raise ValueError(f"maskclip.crop_batch_size must be >= 1, got {self.crop_batch_size}")
        if self.crop_size < 0:
            raise ValueError(f"maskclip.crop_size must be >= 0 (0 = CLIP's native size), got {self.crop_size}")


@dataclass
class MaskCLIPOutput:
    """What the encoder returns for one image with M masks.

    embeddings:      (M, E) L2-normalised mask embeddings.
    masks:           (M, h, w) float masks the embeddings belong to, at the proposals' resolution: the
                     refined masks in ``rma`` mode, else a copy of the input masks.
    image_embedding: (E,) the class token's embedding (CLIP's global image embedding), None in ``crop``.
    aux_mask_logits: per RMA layer with refinement, (M, gh*s, gw*s) mask logits after that layer at the
                     cascade's working resolution (s = RMA mask_resolution; deep supervision); empty
                     unless requested.
    """

    embeddings: torch.Tensor
    masks: torch.Tensor
    image_embedding: torch.Tensor | None
    aux_mask_logits: list[torch.Tensor] = field(default_factory=list)


@dataclass(frozen=True)
class ClassScores:
    """Classification of M masks over a vocabulary of C classes.

    probs:     (M, C) class probabilities. With a "no object" embedding the softmax runs over C + 1 and
               the no-object share is in ``no_object`` (so rows then sum to 1 - no_object).
    no_object: (M,) "no object" probability, or None when the model has no such embedding.
    """

    probs: torch.Tensor
    no_object: torch.Tensor | None


def classify(embeddings: torch.Tensor, text_embeddings: torch.Tensor, logit_scale: float,
             no_object_embedding: torch.Tensor | None = None) -> ClassScores:
    """Cosine similarity x logit scale, softmax over the vocabulary (plus an explicit "no object").

    Args:
        embeddings: (M, E) L2-normalised mask embeddings.
        text_embeddings: (C, E) L2-normalised class embeddings.
        no_object_embedding: (E,) learned vector (not normalised) or None.
    """
    logits = logit_scale * embeddings.float() @ text_embeddings.float().T  # (M, C)
    if no_object_embedding is None:
        return ClassScores(probs=logits.softmax(-1), no_object=None)
    no_obj = logit_scale * embeddings.float() @ no_object_embedding.float()  # (M,)
    probs = torch.cat([logits, no_obj[:, None]], dim=1).softmax(-1)  # (M, C + 1)
    return ClassScores(probs=probs[:, :-1], no_object=probs[:, -1])


class MaskCLIP(nn.Module):
    """Frozen CLIP tower + (in ``rma`` mode) the trainable RMA parameters.

    Built by ``model.factory.build_maskclip`` (which loads all weights); the constructor loads nothing.
    ``forward`` handles one image with any number of masks (M may be 0); training batches loop over images.
    """

    def __init__(self, *, tower: ClipTower, mode: str, mask_threshold: float, crop_batch_size: int,
                 crop_size: int, rma: RelativeMaskAttention | None = None):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if mode == "rma" and rma is None:
            raise ValueError("mode 'rma' needs a RelativeMaskAttention module")
        if mode != "crop" and (reason := tower.mask_token_support()):
            raise ValueError(reason)
        self.tower = tower
        self.mode = mode
        self.mask_threshold = float(mask_threshold)
        self.crop_batch_size = int(crop_batch_size)
        p = tower.patch_size
        # crop input size: CLIP's native size, or a square crop_size rounded to whole patches
        self.crop_input_size = (tower.native_image_size if crop_size <= 0
                                else (max(p, round(crop_size / p) * p),) * 2)
        self.rma = rma if mode == "rma" else None

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The added RMA parameters (CLIP's are frozen); empty outside ``rma`` mode."""
        return list(self.rma.parameters()) if self.rma is not None else []

    @property
    def no_object_embedding(self) -> torch.Tensor | None:
        return self.rma.no_object_embedding if self.rma is not None else None

    def classify(self, embeddings: torch.Tensor, text_embeddings: torch.Tensor) -> ClassScores:
        """``classify`` with this model's logit scale and "no object" embedding."""
        return classify(embeddings, text_embeddings, self.tower.logit_scale, self.no_object_embedding)

    def forward(self, image: np.ndarray | torch.Tensor, masks: np.ndarray | torch.Tensor, *,
                with_aux: bool = False) -> MaskCLIPOutput:
        """Embed M mask proposals of one image.

        Args:
            image: (H, W, 3) uint8 RGB.
            masks: (M, h, w) bool or float probabilities, at the image's or a lower resolution. Not modified.
            with_aux: also return every RMA layer's refined mask logits (deep supervision).
        Returns:
            MaskCLIPOutput (embeddings (M, E), masks (M, h, w), ...).
        """
        masks = as_mask_tensor(masks, self.tower.device)
        if self.mode == "crop":
            return MaskCLIPOutput(embeddings=self._crop_embeddings(image, masks), masks=masks,
                                  image_embedding=None)
        return self._mask_token_forward(image, masks, with_aux)

    # ---------------------------------------------------------------------------------- crop mode
    def _crop_embeddings(self, image: np.ndarray | torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """CLIP baseline: (M, h, w) masks -> (M, E) embeddings of masked, box-cropped, square-padded regions."""
        pixels = self.tower.to_unit_pixels(image)  # (3, H, W)
        if masks.shape[0] == 0:
            return torch.zeros(0, self.tower.embed_dim, device=pixels.device)
        binary = self._binary_at(masks, tuple(pixels.shape[-2:]))  # (M, H, W) bool
        boxes = mask_boxes(binary).tolist()
        size = self.crop_input_size
        out = []
        for start in range(0, len(boxes), self.crop_batch_size):
            crops = [square_crop(pixels, binary[i], boxes[i], size)
                     for i in range(start, min(start + self.crop_batch_size, len(boxes)))]
            out.append(self.tower.encode_images(self.tower.normalize(torch.stack(crops))))
        return torch.cat(out)

    def _binary_at(self, masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """(M, h, w) probabilities -> (M, H, W) bool at image size (bilinear resize, then threshold)."""
        if tuple(masks.shape[-2:]) != size:
            masks = F.interpolate(masks[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
        return masks > self.mask_threshold

    # ------------------------------------------------------------------------ tokens and rma modes
    def _mask_token_forward(self, image, masks: torch.Tensor, with_aux: bool) -> MaskCLIPOutput:
        tower = self.tower
        pixels, geometry = tower.preprocess(image)
        x = tower.embed(pixels)  # (1, 1 + N, D) class + patches
        m = x[:, :1].expand(-1, masks.shape[0], -1)  # (1, M, D) mask class tokens = copies of the class token
        cascade = self.rma is not None and bool(self.rma.config.block_indices)
        state = MaskState.initial(masks, geometry, threshold=self.mask_threshold, dtype=x.dtype,
                                  subdivisions=self.rma.config.mask_resolution if cascade else None)
        aux: list[torch.Tensor] = []
        for index, block in enumerate(tower.blocks):
            layer = self.rma.layer(index) if self.rma is not None else None
            if layer is None:
                x, m = mask_token_block(tower, block, x, m, state.bias)
                continue
            x, m, patch_logits = rma_block(tower, block, layer, x, m, state)
            if layer.refine is not None:
                delta = layer.refine(patch_logits.reshape(*patch_logits.shape[:2], *geometry.grid))
                state, refined_logits = state.refined(
                    delta, need_bias=index < tower.depth - 1,
                    need_patches=self.rma.next_index(index) is not None)
                if with_aux:
                    aux.append(refined_logits)
        out_masks = state.output_masks() if cascade else masks
        return MaskCLIPOutput(embeddings=tower.readout(m[0]), masks=out_masks,
                              image_embedding=tower.readout(x[0, 0]), aux_mask_logits=aux)


def mask_token_block(tower: ClipTower, block: nn.Module, x: torch.Tensor, m: torch.Tensor,
                     bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One frozen block for image tokens (exactly CLIP) and mask class tokens (Eq. 1 cross-attention).

    Args:
        x: (1, 1 + N, D) image tokens; m: (1, M, D) mask tokens; bias: (1, 1, M, 1 + N) attention bias.
    Returns:
        the block outputs (1, 1 + N, D) and (1, M, D).
    """
    q_img, k_img, v_img, q_mask, _ = tower.attention_inputs(block, x, m)
    out_img = F.scaled_dot_product_attention(q_img, k_img, v_img)  # (1, heads, 1 + N, d_head)
    out_mask = F.scaled_dot_product_attention(q_mask, k_img, v_img, attn_mask=bias)  # (1, heads, M, d_head)
    # image and mask rows finish separately: the image rows never need autograd, so training records only
    # the mask rows (about 25% less work per training image than one concatenated pass)
    return tower.finish_block(block, x, out_img), tower.finish_block(block, m, out_mask)


def rma_block(tower: ClipTower, block: nn.Module, layer, x: torch.Tensor, m: torch.Tensor,
              state: MaskState) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One frozen block with Relative Mask Attention on the mask-token rows (Eq. 3).

    Args:
        layer: the block's ``RelativeMaskAttentionLayer``; state: current masks (bias, mask patches).
        x: (1, 1 + N, D) image tokens; m: (1, M, D) mask tokens.
    Returns:
        block outputs (1, 1 + N, D), (1, M, D), and the per-head CLIP logits of the mask tokens over the
        patches before the attention mask, (M, heads, N): f_r's input.
    """
    q_img, k_img, v_img, q_mask, normed = tower.attention_inputs(block, x, m)
    out_img = F.scaled_dot_product_attention(q_img, k_img, v_img)
    scale = tower.head_scale()
    clip_logits = (q_mask @ k_img.transpose(-1, -2)) * scale  # (1, heads, M, 1 + N)
    relative = layer.relative_logits(state.patches, normed[0, 1:]) * scale  # (M, heads, N)
    logits = torch.cat([clip_logits[..., :1], clip_logits[..., 1:] + relative.transpose(0, 1)[None]], dim=-1)
    attn = (logits + state.bias).softmax(dim=-1)  # (1, heads, M, 1 + N)
    out_mask = attn.to(v_img.dtype) @ v_img  # (1, heads, M, d_head)
    return (tower.finish_block(block, x, out_img), tower.finish_block(block, m, out_mask),
            clip_logits[0, :, :, 1:].transpose(0, 1))


def mask_boxes(binary: torch.Tensor) -> torch.Tensor:
    """(M, H, W) bool -> (M, 4) int64 boxes (y0, y1, x0, x1), end-exclusive; an empty mask gets the whole image."""
    m, h, w = binary.shape
    rows, cols = binary.any(2), binary.any(1)  # (M, H), (M, W)
    y0 = rows.int().argmax(1)
    y1 = h - rows.flip(1).int().argmax(1)
    x0 = cols.int().argmax(1)
    x1 = w - cols.flip(1).int().argmax(1)
    empty = ~rows.any(1)
    boxes = torch.stack([y0, y1, x0, x1], dim=1)
    full = torch.tensor([0, h, 0, w], device=binary.device)
    return torch.where(empty[:, None], full, boxes)


def square_crop(pixels: torch.Tensor, binary: torch.Tensor, box: list[int], size: tuple[int, int]) -> torch.Tensor:
    """``mask * image`` cropped to ``box``, zero-padded (centred) to the aspect ratio of ``size`` (a square
    for square models), resized to ``size``: the region keeps its aspect ratio.

    Args:
        pixels: (3, H, W) in [0, 1]; binary: (H, W) bool; box: (y0, y1, x0, x1).
    Returns:
        (3, size[0], size[1]) in [0, 1] (black outside the mask and in the padding).
    """
    y0, y1, x0, x1 = box
    crop = pixels[:, y0:y1, x0:x1] * binary[y0:y1, x0:x1]  # (3, h, w)
    h, w = crop.shape[-2:]
    ph = max(h, math.ceil(w * size[0] / size[1]))  # padded height / width with the target's aspect ratio
    pw = max(w, math.ceil(h * size[1] / size[0]))
    top, left = (ph - h) // 2, (pw - w) // 2
    crop = F.pad(crop, (left, pw - w - left, top, ph - h - top))  # (3, ph, pw)
    return F.interpolate(crop[None], size=size, mode="bicubic", align_corners=False,
                         antialias=True)[0].clamp(0.0, 1.0)
