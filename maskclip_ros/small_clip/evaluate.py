"""Zero-shot region classification of a (small) CLIP on held-out generated scenes (`maskclip-ros eval-clip`):
category accuracy of things and stuff, base and novel classes, and for things colour and shape separately."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from maskclip_ros.data import world
from maskclip_ros.data.coco_panoptic import segment_masks
from maskclip_ros.model.maskclip import MaskCLIPConfig
from maskclip_ros.pipeline import SegmenterConfig
from maskclip_ros.small_clip.windows import HALF_COVER, cut, encode_samples, region_window, thing_window


EVAL_MODES = ("window", "tokens", "tokens_core", "crop")


def evaluate_clip(segmenter_cfg: SegmenterConfig, *, num_scenes: int, seed: int, max_window: int,
                  modes: Sequence[str] = ("window", "tokens"), progress: bool = True) -> dict:
    """Zero-shot region classification on held-out generated scenes with the CLIP of ``segmenter_cfg``
    (loaded through model.factory), prompts from its vocabulary templates.

    Modes: ``window`` - each region as a native-scale window of the frame (as in training, windows of at
    most ``max_window`` patches; things: their bbox snapped to the patch grid, stuff: the whole region,
    only its patches seen); ``tokens`` - MaskCLIP mask class tokens with the ground-truth masks on the full
    frame; ``crop`` - MaskCLIP's CLIP baseline (masked box crop resized to the CLIP's input size);
    ``tokens_core`` - a diagnostic: ``tokens`` with each mask reduced to the patches it covers at least
    half of (Eq. 1 opens every patch a mask touches, so a stuff mask also sees the border patches of
    every thing standing on it). Returns {"scenes", "regions", mode: metrics}.
    """
    from maskclip_ros.model.factory import build_clip
    unknown = [m for m in modes if m not in EVAL_MODES]
    if unknown:
        raise ValueError(f"unknown eval modes {unknown}; use {EVAL_MODES}")
    tower = build_clip(segmenter_cfg.clip)
    result = evaluate_tower(tower, segmenter_cfg, num_scenes=num_scenes, seed=seed, max_window=max_window,
                            modes=modes, progress=progress)
    return {**result, "checkpoint": segmenter_cfg.clip.checkpoint}


def evaluate_tower(tower, segmenter_cfg: SegmenterConfig, *, num_scenes: int, seed: int, max_window: int,
                   modes: Sequence[str], progress: bool = False) -> dict:
    """evaluate_clip on a given ClipTower (e.g. the model being trained; the caller sets eval mode),
    prompts and MaskCLIP settings from ``segmenter_cfg``. Returns {"scenes", "seed", "regions", mode: metrics}."""
    import torch
    from tqdm import tqdm
    text = EvalText.build(tower, segmenter_cfg.vocabulary.prompt_templates,
                          segmenter_cfg.vocabulary.embedding_cache_size)
    encoders = {m: _region_encoder(m, tower, segmenter_cfg.maskclip, max_window) for m in modes}
    records: dict[str, list] = {m: [] for m in modes}
    with torch.no_grad():
        for index in tqdm(range(num_scenes), desc="eval-clip", disable=not progress):
            scene = world.generate_scene(seed, index)
            for mode, encode in encoders.items():
                records[mode] += text.predict(encode(scene), scene.segments, tower.logit_scale)  # (S, E) in
    out = {"scenes": num_scenes, "seed": seed, "regions": len(records[modes[0]]) if modes else 0}
    out.update({m: summarise(r) for m, r in records.items()})
    return out


def _window_sample(scene, seg: dict, max_window: int, grid, p: int):
    """A thing's bbox window or a stuff segment's whole region (only its patches seen), at native scale."""
    if seg["isthing"]:
        return cut(scene.image, thing_window(seg, max_window, grid, p), p)
    window, keep = region_window(scene.panoptic, seg["id"], grid, p)
    return cut(scene.image, window, p, keep)


def _region_encoder(mode: str, tower, maskclip_cfg: MaskCLIPConfig, max_window: int):
    """A function scene -> (S, E) L2-normalised embeddings of the scene's ground-truth segments."""
    import torch

    from maskclip_ros.model.factory import build_maskclip
    if mode == "window":
        p, grid = tower.patch_size, tower.native_grid

        def window(scene):
            samples = [_window_sample(scene, s, max_window, grid, p) for s in scene.segments]
            return torch.nn.functional.normalize(encode_samples(tower.clip, samples, max_window).float(), dim=-1)
        return window
    cfg = dataclasses.replace(maskclip_cfg, mode=mode.removesuffix("_core"), rma_checkpoint="")
    maskclip = build_maskclip(cfg, tower).eval()
    core = mode.endswith("_core")

    def masked(scene):
        masks = segment_masks(scene.panoptic, [s["id"] for s in scene.segments])  # (S, H, W)
        return maskclip(scene.image, core_masks(masks, tower.patch_size) if core else masks).embeddings
    return masked


def core_masks(masks: np.ndarray, p: int) -> np.ndarray:
    """(S, H, W) bool -> (S, H, W) bool: whole patches (p x p) that each mask covers at least half of;
    a mask covering no patch by half keeps its original pixels."""
    s, h, w = masks.shape
    gh, gw = h // p, w // p
    frac = masks[:, :gh * p, :gw * p].reshape(s, gh, p, gw, p).mean((2, 4))  # (S, gh, gw)
    core = np.zeros_like(masks)
    core[:, :gh * p, :gw * p] = np.repeat(np.repeat(frac >= HALF_COVER, p, 1), p, 2)
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
    def build(cls, tower, templates, cache_size: int) -> "EvalText":
        from maskclip_ros.model.vocabulary import TextEmbedder
        embed = TextEmbedder(tower=tower, cache_size=cache_size)
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
