"""The frozen CLIP tower: aspect-preserving input, interpolated positional embeddings, block pieces.

``ClipTower`` wraps an open_clip ``CLIP`` model (built by ``model.factory``, never here). It keeps the
input's aspect ratio: the short side is resized to ``short_side`` and both sides are **rounded** to the
nearest multiple of the patch size (no padding, so no token ever sees a padded border; the aspect ratio
changes by at most half a patch per side). The positional embedding is resized bicubically to the
resulting patch grid and cached per grid size; at the model's native grid it is used unchanged, so a
native-size input reproduces open_clip's own ``encode_image`` exactly.

Mask class tokens and RMA need the ViT's blocks in pieces (``attention_inputs``, ``finish_block``): the
image tokens go through each frozen block exactly as in CLIP, while mask tokens only query them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from open_clip.transformer import ResidualAttentionBlock, VisionTransformer
from torch import nn


@dataclass(frozen=True)
class InputGeometry:
    """How an image maps onto the ViT: original size, resized input size, patch grid (all (rows, cols))."""

    image_size: tuple[int, int]
    input_size: tuple[int, int]
    grid: tuple[int, int]

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]


class ClipTower(nn.Module):
    """A frozen open_clip CLIP model plus the geometry and block access MaskCLIP needs.

    Args:
        clip: an open_clip ``CLIP`` with a ``VisionTransformer`` visual tower (weights already loaded).
        tokenizer: the matching open_clip tokenizer (``open_clip.get_tokenizer``).
        model_name: the open_clip model name (identifies the model in caches and RMA checkpoints).
        short_side: input short side in pixels before rounding to the patch size.
    """

    def __init__(self, *, clip: nn.Module, tokenizer, model_name: str, short_side: int):
        super().__init__()
        if not isinstance(getattr(clip, "visual", None), VisionTransformer):
            raise ValueError(f"{model_name}: MaskCLIP needs an open_clip ViT image tower, "
                             f"got {type(getattr(clip, 'visual', None)).__name__}")
        if short_side <= 0:
            raise ValueError(f"clip.short_side must be positive, got {short_side}")
        self.clip = clip.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.short_side = int(short_side)
        visual = clip.visual
        ph, pw = visual.patch_size
        if ph != pw:
            raise ValueError(f"{model_name}: non-square patches {visual.patch_size} are not supported")
        self.patch_size = int(ph)
        cfg = {"mean": visual.image_mean, "std": visual.image_std}
        at = {"dtype": torch.float32, "device": visual.class_embedding.device}  # with the CLIP's weights
        self.register_buffer("pixel_mean", torch.tensor(cfg["mean"], **at).view(3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(cfg["std"], **at).view(3, 1, 1), persistent=False)
        self._pos_cache: dict[tuple, torch.Tensor] = {}

    def train(self, mode: bool = True) -> "ClipTower":
        """CLIP stays frozen and in eval mode (no dropout) even while the added RMA parameters train."""
        super().train(mode)
        self.clip.eval()
        return self

    # ----------------------------------------------------------------------------------------- facts
    @property
    def visual(self) -> VisionTransformer:
        return self.clip.visual

    @property
    def blocks(self) -> nn.ModuleList:
        """The ViT's residual attention blocks, in order."""
        return self.visual.transformer.resblocks

    @property
    def depth(self) -> int:
        return len(self.blocks)

    @property
    def width(self) -> int:
        return int(self.visual.transformer.width)

    @property
    def heads(self) -> int:
        return int(self.blocks[0].attn.num_heads)

    @property
    def embed_dim(self) -> int:
        """Dimension of the joint image-text embedding space."""
        return int(self.visual.output_dim)

    @property
    def native_image_size(self) -> tuple[int, int]:
        return tuple(int(s) for s in self.visual.image_size)

    @property
    def native_grid(self) -> tuple[int, int]:
        return tuple(int(s) for s in self.visual.grid_size)

    @property
    def logit_scale(self) -> float:
        """CLIP's learned softmax temperature inverse (exp of the logit_scale parameter)."""
        return float(self.clip.logit_scale.detach().exp().reshape(-1)[0])

    @property
    def device(self) -> torch.device:
        return self.visual.class_embedding.device

    def mask_token_support(self) -> str | None:
        """None if mask class tokens can run on this tower, else the reason they cannot."""
        visual = self.visual
        if visual.attn_pool is not None or visual.pool_type != "tok":
            return (f"{self.model_name} pools its image embedding by '{visual.pool_type}'"
                    f"{' with an attentional pooler' if visual.attn_pool is not None else ''}; mask class "
                    "tokens read out a copy of the class token, so they need a class-token CLIP "
                    "(pool_type 'tok', no attentional pool). Use mode 'crop' or another CLIP.")
        for i, block in enumerate(self.blocks):
            attn = getattr(block, "attn", None)
            if type(block) is not ResidualAttentionBlock or hasattr(block, "ln_1_kv"):
                return f"{self.model_name}: block {i} is a {type(block).__name__}, not a plain ResidualAttentionBlock"
            if not (isinstance(attn, nn.MultiheadAttention) and attn.batch_first and attn._qkv_same_embed_dim
                    and attn.bias_k is None and not attn.add_zero_attn):
                return f"{self.model_name}: block {i} uses an attention variant MaskCLIP does not support"
        return None

    # ------------------------------------------------------------------------------------- geometry
    def geometry(self, image_size: tuple[int, int]) -> InputGeometry:
        """Input size and patch grid for an (H, W) image: short side -> ``short_side``, sides rounded to
        multiples of the patch size (at least one patch)."""
        h, w = int(image_size[0]), int(image_size[1])
        if h <= 0 or w <= 0:
            raise ValueError(f"image size must be positive, got {image_size}")
        scale = self.short_side / min(h, w)
        p = self.patch_size
        grid = (max(1, round(h * scale / p)), max(1, round(w * scale / p)))
        return InputGeometry(image_size=(h, w), input_size=(grid[0] * p, grid[1] * p), grid=grid)

    def preprocess(self, image: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, InputGeometry]:
        """(H, W, 3) uint8 RGB -> normalised pixels (1, 3, h, w) at the input size, and the geometry.

        The caller's array is not modified. Resizing is bicubic with antialiasing (as CLIP's PIL
        preprocessing); no resize happens when the size already matches.
        """
        pixels = self.to_unit_pixels(image)  # (3, H, W) in [0, 1]
        geometry = self.geometry(tuple(pixels.shape[-2:]))
        if tuple(pixels.shape[-2:]) != geometry.input_size:
            pixels = F.interpolate(pixels[None], size=geometry.input_size, mode="bicubic",
                                   align_corners=False, antialias=True)[0].clamp_(0.0, 1.0)
        return self.normalize(pixels)[None], geometry

    def to_unit_pixels(self, image: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(H, W, 3) uint8 RGB (numpy or torch) -> float tensor (3, H, W) in [0, 1] on the tower's device.
        A read-only array (a frame decoded from a message buffer) is copied rather than wrapped: torch cannot
        wrap read-only memory safely and warns."""
        if isinstance(image, np.ndarray):
            tensor = torch.as_tensor(image if image.flags.writeable else image.copy())
        else:
            tensor = image
        if tensor.ndim != 3 or tensor.shape[2] != 3 or tensor.dtype != torch.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {tuple(tensor.shape)} {tensor.dtype}")
        return tensor.to(self.device).permute(2, 0, 1).float().div(255.0)

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """(..., 3, h, w) in [0, 1] -> CLIP-normalised (new tensor)."""
        return (pixels - self.pixel_mean) / self.pixel_std

    # ------------------------------------------------------------------------------------ embedding
    def positional_embedding(self, grid: tuple[int, int]) -> torch.Tensor:
        """(1 + gh*gw, D): the class position plus the patch positions resized bicubically to ``grid``.

        Cached per (grid, device, dtype); the native grid returns the parameter itself.
        """
        pos = self.visual.positional_embedding
        if tuple(grid) == self.native_grid:
            return pos
        key = (tuple(grid), pos.device, pos.dtype)
        if key not in self._pos_cache:
            gh0, gw0 = self.native_grid
            with torch.no_grad():
                patch_pos = pos[1:].float().reshape(1, gh0, gw0, -1).permute(0, 3, 1, 2)  # (1, D, gh0, gw0)
                patch_pos = F.interpolate(patch_pos, size=tuple(grid), mode="bicubic", align_corners=False)
                patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(grid[0] * grid[1], -1)  # (N, D)
                self._pos_cache[key] = torch.cat([pos[:1].float(), patch_pos]).to(pos.dtype)
        return self._pos_cache[key]

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalised pixels (B, 3, gh*p, gw*p) -> tokens (B, 1 + N, D) after ``ln_pre``: class token
        first, then patches row-major (as open_clip's ``VisionTransformer._embeds``)."""
        visual = self.visual
        x = visual.conv1(pixels.to(visual.conv1.weight.dtype))  # (B, D, gh, gw)
        grid = tuple(x.shape[-2:])
        x = x.flatten(2).transpose(1, 2)  # (B, N, D)
        cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)  # (B, 1, D)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding(grid).to(x.dtype)
        return visual.ln_pre(visual.patch_dropout(x))

    def readout(self, tokens: torch.Tensor) -> torch.Tensor:
        """Final token states (..., D) -> L2-normalised CLIP embeddings (..., E): ln_post -> proj."""
        x = self.visual.ln_post(tokens)
        if self.visual.proj is not None:
            x = x @ self.visual.proj
        return F.normalize(x.float(), dim=-1)

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalised pixels (B, 3, h, w) -> L2-normalised image embeddings (B, E) via the class token.

        Runs the blocks exactly as open_clip's ``VisionTransformer.forward`` does (any input grid)."""
        x = self.visual.transformer(self.embed(pixels))  # (B, 1 + N, D)
        return self.readout(x[:, 0])

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token ids (T, context) -> L2-normalised text embeddings (T, E)."""
        return F.normalize(self.clip.encode_text(tokens.to(self.device)).float(), dim=-1)

    # ------------------------------------------------------------------------------- block pieces
    def attention_inputs(self, block: nn.Module, image_tokens: torch.Tensor, mask_tokens: torch.Tensor):
        """The block's own projections: per-head queries/keys/values of the image tokens and queries of
        the mask tokens.

        Args:
            image_tokens: (1, 1 + N, D) block input (class + patches).
            mask_tokens: (1, M, D) block input of the mask class tokens.
        Returns:
            q_img, k_img, v_img: (1, heads, 1 + N, d_head); q_mask: (1, heads, M, d_head);
            normed_image: (1, 1 + N, D) the ``ln_1`` output of the image tokens (RMA's T_IM).
        """
        attn = block.attn
        d = self.width
        normed_image = block.ln_1(image_tokens)
        q_img, k_img, v_img = F.linear(normed_image, attn.in_proj_weight, attn.in_proj_bias).split(d, dim=-1)
        q_mask = F.linear(block.ln_1(mask_tokens), attn.in_proj_weight[:d], attn.in_proj_bias[:d])
        return (*(self.split_heads(t) for t in (q_img, k_img, v_img, q_mask)), normed_image)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(1, L, D) -> (1, heads, L, d_head)."""
        b, n, d = x.shape
        return x.view(b, n, self.heads, d // self.heads).transpose(1, 2)

    def finish_block(self, block: nn.Module, tokens: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        """Residual attention output + MLP of the block, as open_clip's ``ResidualAttentionBlock.forward``.

        Args:
            tokens: (1, L, D) block input; attended: (1, heads, L, d_head) attention outputs of the same rows.
        Returns:
            (1, L, D) block output.
        """
        b, h, n, dh = attended.shape
        out = block.attn.out_proj(attended.transpose(1, 2).reshape(b, n, h * dh))
        x = tokens + block.ls_1(out)
        return x + block.ls_2(block.mlp(block.ln_2(x)))

    def head_scale(self) -> float:
        """1 / sqrt(d_head): the attention logit scale of nn.MultiheadAttention."""
        return 1.0 / math.sqrt(self.width // self.heads)
