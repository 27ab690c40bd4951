"""Golden outputs of seeded random-init tiny MaskCLIP models (crop, tokens, rma).

Regenerate (only when a change of the outputs is intended, and say why in the commit):
    .venv/bin/python test/golden_model.py --write
which writes test/data/model_golden.pt; test/test_model_golden.py compares fresh outputs with it.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from model_helpers import make_maskclip, randomize, rma_config, scene, tiny_tower  # noqa: E402

from maskclip_ros.model.rma import RelativeMaskAttention  # noqa: E402

GOLDEN_PATH = Path(__file__).resolve().parent / "data" / "model_golden.pt"


@torch.no_grad()
def compute_golden() -> dict[str, torch.Tensor]:
    """Embeddings of every mode, rma's refined masks and class probabilities, for a fixed 32x48 scene."""
    tower = tiny_tower(seed=0)
    image, masks = scene(32, 48, seed=7)
    text = torch.nn.functional.normalize(torch.randn(5, tower.embed_dim, generator=torch.Generator().manual_seed(3)),
                                         dim=-1)
    rma = randomize(RelativeMaskAttention(rma_config(tower, blocks=(1, 3), refine_hidden=8)), seed=11, std=0.2)
    out = {}
    for mode in ("crop", "tokens", "rma"):
        model = make_maskclip(tower, mode, rma=rma if mode == "rma" else None)
        result = model(image, masks)
        out[f"{mode}_embeddings"] = result.embeddings
        out[f"{mode}_probs"] = model.classify(result.embeddings, text).probs
    out["rma_masks"] = result.masks
    out["tokens_image_embedding"] = make_maskclip(tower, "tokens")(image, masks).image_embedding
    return {k: v.detach().clone() for k, v in out.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help=f"write {GOLDEN_PATH}")
    args = parser.parse_args()
    golden = compute_golden()
    if args.write:
        GOLDEN_PATH.parent.mkdir(parents=True, exist_ok=True)
        torch.save(golden, GOLDEN_PATH)
        print(f"wrote {GOLDEN_PATH}")
    for key, value in golden.items():
        print(f"{key}: {tuple(value.shape)} sum={float(value.sum()):.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
