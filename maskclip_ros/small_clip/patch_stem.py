"""Nonlinear patch embedding for the small ViT CLIPs trained here (a drop-in for open_clip's ``visual.conv1``).

``PatchStem`` maps each p x p patch to a token with a small hierarchical MLP: non-overlapping convolutions
(kernel = stride) with GELU between them, whose strides multiply to the patch size. Every token still depends
on its own patch's pixels only (windows, region keep-masks and MaskCLIP's geometry are unchanged), but the
embedding is no longer linear: a linear patchify must learn one silhouette detector per colour, a nonlinear
one can detect edges and corners whatever the colour.

Which configs use a stem is read from a sidecar ``<model name>.patch_stem.json`` beside the open_clip config
json (``{"channels": [48, 96], "strides": [4, 2, 2]}``); open_clip itself never registers it as a model (it has
no ``embed_dim``/``vision_cfg``/``text_cfg``).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

STEM_SUFFIX = ".patch_stem.json"


class PatchStem(nn.Module):
    """Conv(k=s0) -> GELU -> ... -> Conv(k=s_last), the strides multiplying to the patch size.

    Args: width - output channels (the ViT width); channels - hidden channels, one per stride but the last;
    strides - kernel = stride of each convolution.
    """

    def __init__(self, *, width: int, channels: list[int], strides: list[int]):
        super().__init__()
        if len(channels) + 1 != len(strides):
            raise ValueError(f"patch stem: {len(strides)} strides need {len(strides) - 1} hidden widths")
        dims = [3, *channels, width]
        layers: list[nn.Module] = []
        for i, stride in enumerate(strides):
            last = i == len(strides) - 1
            layers.append(nn.Conv2d(dims[i], dims[i + 1], kernel_size=stride, stride=stride, bias=not last))
            if not last:
                layers.append(nn.GELU())
        self.layers = nn.Sequential(*layers)

    @property
    def weight(self) -> torch.Tensor:
        """The last convolution's weight (callers read ``conv1.weight.dtype``)."""
        return self.layers[-1].weight

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, width, H/p, W/p)."""
        return self.layers(pixels)


def apply_patch_stem(model: nn.Module, spec: dict | None) -> nn.Module:
    """Replace ``model.visual.conv1`` by a PatchStem when ``spec`` (a patch_stem sidecar) is given; returns
    the model (changed in place: it is freshly created by the caller)."""
    if not spec:
        return model
    visual = model.visual
    patch = visual.conv1.kernel_size[0]
    strides = [int(s) for s in spec["strides"]]
    if int(torch.tensor(strides).prod()) != patch:
        raise ValueError(f"patch stem strides {strides} do not multiply to the patch size {patch}")
    visual.conv1 = PatchStem(width=visual.conv1.out_channels, channels=[int(c) for c in spec["channels"]],
                             strides=strides)
    return model


def stem_spec(config_dir: str | Path, model_name: str) -> dict | None:
    """The ``<model_name>.patch_stem.json`` in ``config_dir`` (None when there is none)."""
    path = Path(config_dir) / f"{model_name}{STEM_SUFFIX}"
    return json.loads(path.read_text()) if path.is_file() else None
