"""The paper's RMA training loss: ``L = w_ce * CE + w_dice * dice + w_bce * BCE`` with deep supervision.

* Proposals are matched one-to-one to ground-truth segments by the Hungarian algorithm
  (``scipy.optimize.linear_sum_assignment``) on a mask cost (weighted dice + BCE, as Mask2Former's matcher
  without its class term: the proposals are class-agnostic and frozen). Pairs below a minimum IoU stay
  unmatched: a proposal that does not overlap an object must not be taught to become it.
* CE over the training vocabulary plus an explicit "no object" class: matched proposals learn their
  segment's class, unmatched ones "no object" (down-weighted, Mask2Former's ``eos_coef``).
* Dice + BCE between every RMA layer's refined mask logits and the matched ground-truth masks, summed over
  the layers (deep supervision).
* Ground-truth segments of classes outside the training vocabulary (novel classes) are *ignored*:
  proposals matched to them contribute no loss at all, so nothing about novel classes is learned (not even
  "no object").
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from maskclip_ros.training.data import IGNORED_CLASS


@dataclass(frozen=True)
class LossWeights:
    """Loss weights (``loss`` section of config/train.yaml)."""
    ce: float             # classification cross-entropy weight (paper: 2)
    dice: float           # dice loss weight per RMA layer (paper: 5)
    bce: float            # binary cross-entropy weight per RMA layer (paper: 5)
    no_object: float      # CE weight of the "no object" class (Mask2Former eos_coef)
    min_match_iou: float  # matched pairs below this IoU are treated as unmatched


@dataclass(frozen=True)
class Match:
    """Result of matching M proposals to G ground-truth segments.

    proposal: (K,) int64 proposal indices; target: (K,) int64 ground-truth indices (pairs, K <= min(M, G)).
    """
    proposal: torch.Tensor
    target: torch.Tensor


def dice_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Soft dice loss per pair. logits, targets: (K, P) (P pixels) -> (K,)."""
    probs = logits.sigmoid()
    num = 2 * (probs * targets).sum(-1)
    den = probs.sum(-1) + targets.sum(-1)
    return 1 - (num + 1) / (den + 1)


def bce_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy per pair. logits, targets: (K, P) -> (K,)."""
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean(-1)


def mask_cost(probs: torch.Tensor, targets: torch.Tensor, weights: LossWeights) -> torch.Tensor:
    """Pairwise matching cost (M, G) = dice * dice_cost + bce * bce_cost; probs (M, P), targets (G, P)."""
    p = probs.clamp(1e-6, 1 - 1e-6)
    dice = 1 - (2 * p @ targets.T + 1) / (p.sum(-1)[:, None] + targets.sum(-1)[None] + 1)  # (M, G)
    bce = -(torch.log(p) @ targets.T + torch.log1p(-p) @ (1 - targets).T) / p.shape[-1]  # (M, G)
    return weights.dice * dice + weights.bce * bce


def mask_iou(probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """IoU (M, G) of binarised (> 0.5) probs (M, P) with binary targets (G, P)."""
    a = (probs > 0.5).float()
    inter = a @ targets.T
    union = a.sum(-1)[:, None] + targets.sum(-1)[None] - inter
    return inter / union.clamp(min=1)


@torch.no_grad()
def match(proposals: torch.Tensor, targets: torch.Tensor, weights: LossWeights) -> Match:
    """Hungarian matching of proposals (M, h, w) probabilities to ground-truth masks (G, h, w) in {0, 1}."""
    m, g = proposals.shape[0], targets.shape[0]
    empty = torch.zeros(0, dtype=torch.long)
    if m == 0 or g == 0:
        return Match(empty, empty)
    probs, tgt = proposals.flatten(1).float(), targets.flatten(1).float()
    cost = mask_cost(probs, tgt, weights).cpu().numpy()
    rows, cols = linear_sum_assignment(cost)
    iou = mask_iou(probs, tgt).cpu().numpy()
    keep = iou[rows, cols] >= weights.min_match_iou
    return Match(torch.as_tensor(rows[keep], dtype=torch.long), torch.as_tensor(cols[keep], dtype=torch.long))


def rma_loss(class_logits: torch.Tensor, no_object_logits: torch.Tensor | None, mask_logits: list[torch.Tensor],
             proposals: torch.Tensor, targets: torch.Tensor, target_classes: torch.Tensor,
             weights: LossWeights) -> dict[str, torch.Tensor]:
    """The loss of one image.

    Args:
        class_logits: (M, C) logits over the training vocabulary.
        no_object_logits: (M,) logits of the explicit "no object" class, or None for a model without one
            (then unmatched proposals get no CE).
        mask_logits: per RMA layer with refinement, (M, h', w') refined mask logits (may be empty); resized
            bilinearly to the targets' (h, w) when the cascade works at another resolution.
        proposals: (M, h, w) the input proposal probabilities (used for matching).
        targets: (G, h, w) ground-truth masks in {0, 1} at the same resolution.
        target_classes: (G,) int64 class index into the training vocabulary, IGNORED_CLASS = ignored (novel).
        weights: loss weights.
    Returns:
        {"loss": weighted total, "ce", "dice", "bce" (unweighted; dice and BCE summed over the layers),
         "matched": number of proposals matched to a training-vocabulary segment (float tensor)}.
    """
    device = class_logits.device
    pairs = match(proposals, targets, weights)
    prop, tgt = pairs.proposal.to(device), pairs.target.to(device)
    cls = target_classes.to(device)[tgt]
    labels = _labels(class_logits.shape[0], prop, cls, no_object=no_object_logits is not None, device=device)
    trained = cls != IGNORED_CLASS
    prop, tgt = prop[trained], tgt[trained]
    ce = _weighted_ce(class_logits, no_object_logits, labels, weights.no_object)
    flat_targets = targets.flatten(1).float().to(device)[tgt]  # (K, P)
    dice = class_logits.new_zeros(())
    bce = class_logits.new_zeros(())
    for logits in mask_logits:
        chosen = _at_size(logits[prop], targets.shape[-2:]).flatten(1)  # (K, P)
        if chosen.shape[0]:
            dice = dice + dice_loss(chosen, flat_targets).mean()
            bce = bce + bce_loss(chosen, flat_targets).mean()
    total = weights.ce * ce + weights.dice * dice + weights.bce * bce
    return {"loss": total, "ce": ce.detach(), "dice": dice.detach(), "bce": bce.detach(),
            "matched": torch.tensor(float(prop.shape[0]))}


def _at_size(logits: torch.Tensor, size) -> torch.Tensor:
    """(K, h', w') mask logits -> (K, h, w) (bilinear when the cascade works at another resolution)."""
    if tuple(logits.shape[-2:]) == tuple(size) or logits.shape[0] == 0:
        return logits
    return F.interpolate(logits[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]


IGNORE = -100  # CE label of proposals that get no classification loss
NO_OBJECT_LABEL = -2  # CE label of unmatched proposals: the explicit "no object" class (column C)


def _labels(m: int, prop: torch.Tensor, cls: torch.Tensor, *, no_object: bool, device) -> torch.Tensor:
    """(M,) CE labels: the matched class, NO_OBJECT_LABEL for unmatched proposals when the model has that
    class, IGNORE for proposals matched to an ignored segment (class IGNORED_CLASS) or unmatched without it."""
    labels = torch.full((m,), NO_OBJECT_LABEL if no_object else IGNORE, dtype=torch.long, device=device)
    labels[prop] = torch.where(cls != IGNORED_CLASS, cls, torch.full_like(cls, IGNORE))
    return labels


def _weighted_ce(class_logits: torch.Tensor, no_object_logits: torch.Tensor | None, labels: torch.Tensor,
                 no_object_weight: float) -> torch.Tensor:
    """CE over C classes (+ "no object" as the last column); labels (M,) with NO_OBJECT_LABEL, IGNORE = skip."""
    c = class_logits.shape[1]
    logits = class_logits if no_object_logits is None else torch.cat([class_logits, no_object_logits[:, None]], 1)
    target = torch.where(labels == NO_OBJECT_LABEL, torch.full_like(labels, c), labels)  # "no object" -> column C
    class_weight = torch.ones(logits.shape[1], device=logits.device)
    if no_object_logits is not None:
        class_weight[c] = no_object_weight
    if not (target != IGNORE).any():
        return logits.sum() * 0.0  # keeps the graph (every parameter gets a gradient) with zero loss
    return F.cross_entropy(logits, target, weight=class_weight, ignore_index=IGNORE)
