"""Losses of the small CLIP's training (all computed in fp32, also under bf16 autocast).

- ``contrastive``: symmetric image-caption cross-entropy with several positives per row/column (every caption
  true of a sample counts: "a star" fits every star in the batch); open_clip's ClipLoss when only the
  diagonal is positive.
- ``dense_loss``: each patch's read-out (ln_post -> proj of its final token, what MaskCLIP's mask tokens
  read out too) against the class prompts of the segment covering it by half, class-balanced; on the window
  batch (``window_dense_loss``) and on whole scenes (``token_loss``).
- ``token_loss``: every ground-truth segment of whole 640x480 scenes embedded by MaskCLIP's mask class
  tokens (Eq. 1, the very code of ``tokens`` mode), against its caption: the path the node uses.
"""
from __future__ import annotations

import numpy as np

from maskclip_ros.data import world
from maskclip_ros.small_clip.samples import Batch, caption
from maskclip_ros.small_clip.windows import patch_labels

MASK_THRESHOLD = 0.5  # ground-truth masks are binary: any threshold in (0, 1) opens the same patches


def multi_positive_loss(img, txt, pos, logit_scale):
    """Symmetric contrastive loss with several positives: cross-entropy against targets spread evenly over
    the positives of each row (image -> captions) and column (caption -> images). img, txt: (B, E)
    L2-normalised; pos: (B, B) bool with a true diagonal. Equals open_clip's ClipLoss when pos is the identity."""
    logits = logit_scale * img @ txt.T  # (B, B)
    target = pos.to(logits.dtype)
    to_text = -(target / target.sum(1, keepdim=True) * logits.log_softmax(1)).sum(1).mean()
    to_image = -(target / target.sum(0, keepdim=True) * logits.log_softmax(0)).sum(0).mean()
    return (to_text + to_image) / 2


def contrastive(img, txt, batch: Batch, names: dict, logit_scale, multi_positive: bool):
    """The batch's contrastive loss; img, txt: (B, E), not normalised (any dtype)."""
    import torch
    img = torch.nn.functional.normalize(img.float(), dim=-1)
    txt = torch.nn.functional.normalize(txt.float(), dim=-1)
    pos = batch.positives(names, multi_positive).to(img.device)
    with torch.autocast(img.device.type, enabled=False):
        return multi_positive_loss(img, txt, pos, logit_scale.float())


def dense_loss(patch_emb, labels, class_text, logit_scale):
    """Class-balanced cross-entropy of patch read-outs (N, E) L2-normalised against class text embeddings
    (C, E) L2-normalised; labels (N,) int64 category index, -1 ignored; every class present weighs the same."""
    import torch
    keep = labels >= 0
    logits = logit_scale * patch_emb[keep] @ class_text.T  # (K, C)
    target = labels[keep]
    ones = torch.ones(target.shape, device=target.device)
    counts = torch.zeros(class_text.shape[0], device=target.device).index_add_(0, target, ones)  # (C,) patches
    weight = 1.0 / counts[target]
    per = torch.nn.functional.cross_entropy(logits, target, reduction="none")
    return (per * weight).sum() / weight.sum()


def class_text_embeddings(model, tokenizer, templates, rng):
    """(C, E) L2-normalised fp32 text embeddings of the world's categories under one random template."""
    import torch
    template = templates[int(rng.integers(len(templates)))]
    prompts = [template.format(c["name"]) for c in world.categories()]
    tokens = tokenizer(prompts).to(model.logit_scale.device)
    return torch.nn.functional.normalize(model.encode_text(tokens).float(), dim=-1)


def window_dense_loss(model, tokenizer, templates, rng, patch_emb, labels):
    """dense_loss of the window batch's labelled patches (K, E), not normalised, labels (K,)."""
    import torch
    class_text = class_text_embeddings(model, tokenizer, templates, rng)
    with torch.autocast(patch_emb.device.type, enabled=False):
        return dense_loss(torch.nn.functional.normalize(patch_emb.float(), dim=-1), labels, class_text,
                          model.logit_scale.exp().float())


def mask_token_embeddings(tower, scene):
    """A scene's ground-truth segments through MaskCLIP's mask class tokens on the whole frame (Eq. 1, the
    code of ``tokens`` mode), differentiable: (S, E) L2-normalised segment embeddings and the final patch
    tokens' read-outs (N, E) L2-normalised."""
    import torch

    from maskclip_ros.model.maskclip import mask_token_block
    from maskclip_ros.model.masks import MaskState
    pixels, geometry = tower.preprocess(scene.image)
    x = tower.embed(pixels)  # (1, 1 + N, D)
    ids = np.asarray([s["id"] for s in scene.segments])
    masks = torch.from_numpy(scene.panoptic[None] == ids[:, None, None]).to(x.device).float()  # (S, H, W)
    state = MaskState.initial(masks, geometry, threshold=MASK_THRESHOLD, dtype=x.dtype)
    m = x[:, :1].expand(-1, len(ids), -1)  # (1, S, D): every mask token starts as the class token
    for block in tower.blocks:
        x, m = mask_token_block(tower, block, x, m, state.bias.to(x.dtype))
    return tower.readout(m[0]), tower.readout(x[0, 1:])


def token_loss(tower, tokenizer, pool, tc, templates, rng):
    """Contrastive loss of all segments of tc.token_scenes random pool scenes embedded by mask tokens (one
    batch), and the mean dense loss of their patches (0 when tc.dense_weight is 0). Returns both."""
    import torch
    picks = rng.choice(len(pool.scenes), size=tc.token_scenes, replace=False)
    class_text = class_text_embeddings(tower.clip, tokenizer, templates, rng)
    scale = tower.clip.logit_scale.exp()
    img, texts, segs, specs, dense = [], [], [], [], []
    for i in picks:
        scene = pool.scenes[i]
        emb, patch_emb = mask_token_embeddings(tower, scene)
        img.append(emb)
        if tc.dense_weight:
            labels = torch.from_numpy(patch_labels(scene.panoptic, scene.segments, tower.patch_size))  # (N,)
            with torch.autocast(patch_emb.device.type, enabled=False):
                dense.append(dense_loss(patch_emb.float(), labels.to(patch_emb.device), class_text, scale.float()))
        for seg in scene.segments:
            text, spec = caption(seg, pool.names, templates, rng)
            texts.append(text)
            specs.append(spec)
            segs.append(seg)
    txt = tower.clip.encode_text(tokenizer(texts).to(tower.device))
    batch = Batch(samples=[], texts=texts, segments=segs, specs=specs)
    tokens = contrastive(torch.cat(img), txt, batch, pool.names, scale, tc.multi_positive)
    return tokens, (torch.stack(dense).mean() if dense else torch.zeros((), device=tokens.device))
