"""What bf16 costs in accuracy (issue 13 item 3; part of `maskclip-ros bench-backends`): on held-out generated
scenes, each scene's ground-truth segments are the proposals, and every backend's mask embeddings are
compared with torch fp32 on the same inputs: top-1 class agreement (vocabulary and prompts of the params,
i.e. the world's 14 classes), mean and least embedding cosine, max abs difference; plus each backend's
top-1 accuracy against the ground truth for context. The exact fp32 runtimes are the control (agreement
1.0 expected). Masks are given at the proposers' size (``proposals.mask_long_side``, area-averaged), as
the node passes them; the export bound is ``proposals.max_proposals``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from maskclip_ros.bench.backends import REFERENCE, build_runners, export_cache

WEIGHT_SEED = 0  # torch seed before building (bench-backends' default seed)


@dataclass(frozen=True)
class AccuracyBench:
    """Settings of the accuracy report (from `maskclip-ros bench-backends`' options)."""
    model: str                         # open_clip model name (the small CLIP)
    clip_checkpoint: str               # its CLIP checkpoint ("" = random init: only for tests)
    rma_checkpoint: str                # RMA checkpoint of rma mode ("" = untrained)
    modes: tuple[str, ...]             # tokens and/or rma
    variants: tuple[tuple[str, str], ...]  # (backend, precision) pairs, torch fp32 (the reference) first
    scenes: int                        # held-out scenes
    seed: int                          # world seed of the scenes (eval_clip.seed of config/small_clip.yaml)
    short_side: int                    # CLIP input short side (0 = the params')
    threads: int                       # CPU threads of torch and the runtimes
    export_cache: str                  # export cache ("" = a fresh temporary one)
    params_files: tuple[str, ...]      # node params files over config/default.yaml
    sets: tuple[str, ...]              # dotted overrides of the model settings


def bf16_accuracy(opts: AccuracyBench) -> dict:
    """Agreement of every backend with torch fp32 per mode; the results dict (``accuracy_report`` prints it)."""
    import torch

    from maskclip_ros.model.factory import build_clip, build_maskclip
    from maskclip_ros.model.vocabulary import TextEmbedder
    from maskclip_ros.proposals.common import scaled_size

    torch.set_num_threads(opts.threads)
    torch.manual_seed(WEIGHT_SEED)  # random-init models (tests) get the same weights as bench-backends'
    cfg = _config(opts, "tokens", "")
    tower = build_clip(cfg.clip, "cpu")
    names = list(cfg.vocabulary.class_names)
    with torch.no_grad():
        text = TextEmbedder(tower=tower, cache_size=cfg.vocabulary.embedding_cache_size)(
            names, cfg.vocabulary.prompt_templates)  # (C, E)
    scenes = _scenes(opts, names)
    frame = tuple(scenes[0]["image"].shape[:2])
    mask_size = scaled_size(*frame, cfg.proposals.mask_long_side)
    scenes = [{**s, "masks": downscale(s["masks"], mask_size)} for s in scenes]
    out = {"model": opts.model, "clip_checkpoint": opts.clip_checkpoint or "random init", "seed": opts.seed,
           "scenes": opts.scenes, "regions": int(sum(len(s["labels"]) for s in scenes)), "classes": names,
           "mask_size": list(mask_size), "modes": {}}
    with export_cache(opts.export_cache) as cache_dir:
        for mode in opts.modes:
            mode_cfg = _config(opts, mode, opts.rma_checkpoint if mode == "rma" else "")
            maskclip = build_maskclip(mode_cfg.maskclip, tower).eval()
            runners, _ = build_runners(maskclip, opts.variants, mode_cfg, cache_dir, frame, mask_size, opts.threads)
            out["modes"][mode] = compare(runners, maskclip, text, scenes)
    return out


def compare(runners: dict, maskclip, text, scenes: list[dict]) -> dict:
    """Per backend: agreement / cosine with torch fp32 over all scenes' regions (one forward each)."""
    import torch
    import torch.nn.functional as F

    per: dict[str, dict[str, list]] = {name: {"probs": [], "emb": []} for name in runners}
    with torch.inference_mode():
        for scene in scenes:
            for name, run in runners.items():
                emb = run(scene["image"], scene["masks"]).embeddings.float()  # (S, E)
                per[name]["emb"].append(emb)
                per[name]["probs"].append(maskclip.classify(emb, text).probs)  # (S, C)
    labels = torch.cat([torch.as_tensor(s["labels"]) for s in scenes])
    ref_probs, ref_emb = torch.cat(per[REFERENCE]["probs"]), torch.cat(per[REFERENCE]["emb"])
    ref_top1 = ref_probs.argmax(1)
    top2 = ref_probs.topk(2, dim=1).values  # (R, 2)
    margin = top2[:, 0] - top2[:, 1]  # fp32's lead of its top-1 class over the runner-up
    out = {}
    for name, rows in per.items():
        top1, emb = torch.cat(rows["probs"]).argmax(1), torch.cat(rows["emb"])
        cosine = F.cosine_similarity(emb, ref_emb, dim=-1)
        flips = top1 != ref_top1
        out[name] = {"agreement": float((~flips).float().mean()), "disagreements": int(flips.sum()),
                     "flip_margins": [round(float(m), 5) for m in margin[flips]],
                     "median_margin": float(margin.median()),
                     "mean_cosine": float(cosine.mean()), "min_cosine": float(cosine.min()),
                     "embeddings_max_abs": float((emb - ref_emb).abs().max()),
                     "gt_accuracy": float((top1 == labels).float().mean())}
    return out


def downscale(masks: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(S, H, W) bool -> (S, h, w) float32 area-averaged (a new array)."""
    import torch
    import torch.nn.functional as F

    if tuple(masks.shape[-2:]) == tuple(size):
        return masks.astype(np.float32)
    small = F.interpolate(torch.from_numpy(masks.astype(np.float32))[:, None], size=size, mode="area")
    return small[:, 0].numpy()


def _scenes(opts: AccuracyBench, names: list[str]) -> list[dict]:
    """Held-out scenes: image (H, W, 3), ground-truth masks (S, H, W) bool and class indices (S,)."""
    from maskclip_ros.data import world
    from maskclip_ros.data.coco_panoptic import segment_masks

    category = {c["id"]: c["name"] for c in world.categories()}
    scenes = []
    for index in range(opts.scenes):
        scene = world.generate_scene(opts.seed, index)
        ids = [s["id"] for s in scene.segments]
        labels = [names.index(category[s["category_id"]]) if category[s["category_id"]] in names else -1
                  for s in scene.segments]
        scenes.append({"image": scene.image, "masks": segment_masks(scene.panoptic, ids), "labels": labels})
    return scenes


def _config(opts: AccuracyBench, mode: str, rma_checkpoint: str):
    from maskclip_ros.pipeline import load_segmenter_config

    sets = [*opts.sets, f"clip.model_name={opts.model}", "clip.pretrained=", f"clip.checkpoint={opts.clip_checkpoint}",
            f"clip.random_init={'false' if opts.clip_checkpoint else 'true'}", f"maskclip.mode={mode}",
            f"maskclip.rma_checkpoint={rma_checkpoint}"]
    sets += [f"clip.short_side={opts.short_side}"] if opts.short_side else []
    return load_segmenter_config(*opts.params_files, overrides=sets)


def agreement_target(accuracy: dict, threshold: float) -> tuple[str, bool | None]:
    """The bf16 target (issue 13: top-1 agreement with fp32 >= ``threshold`` on the small CLIP): its name and
    whether every bf16 path in every mode meets it (None without a bf16 path)."""
    agreement = [r["agreement"] for per in accuracy["modes"].values() for name, r in per.items()
                 if name.endswith("bf16")]
    name = f"{accuracy['model']}: every bf16 path's top-1 agreement with fp32 >= {100 * threshold:g}%"
    return name, (min(agreement) >= threshold if agreement else None)
