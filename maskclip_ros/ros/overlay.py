"""The ~/overlay picture: class colours blended over the camera image, segment borders, class names."""
from __future__ import annotations

import cv2
import numpy as np


def class_colours(count: int) -> np.ndarray:
    """(count, 3) uint8 RGB colours, well apart in hue (golden-angle steps), stable per class index."""
    hues = (np.arange(count) * 137.508) % 360 / 2  # OpenCV hue range is [0, 180)
    hsv = np.stack([hues, np.full(count, 200.0), np.full(count, 230.0)], axis=1).astype(np.uint8)
    return cv2.cvtColor(hsv[None], cv2.COLOR_HSV2RGB)[0]


def _borders(panoptic: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels whose right or lower neighbour has another panoptic id."""
    edge = np.zeros(panoptic.shape, dtype=bool)
    edge[:, :-1] |= panoptic[:, :-1] != panoptic[:, 1:]
    edge[:-1, :] |= panoptic[:-1, :] != panoptic[1:, :]
    return edge


def draw_overlay(rgb: np.ndarray, panoptic: np.ndarray, semantic: np.ndarray, segments, class_names,
                 *, alpha: float, labels: bool) -> np.ndarray:
    """A new (H, W, 3) uint8 RGB image: `rgb` (H, W, 3) with each labelled pixel blended with its class
    colour (semantic (H, W) int32, -1 = unlabeled), dark segment borders (panoptic (H, W) int32) and,
    if `labels`, each segment's class name at its box centre (segments: SegmentInfo list)."""
    colours = class_colours(len(class_names)).astype(np.float32)  # (C, 3)
    labelled = semantic >= 0
    out = rgb.astype(np.float32)
    out[labelled] = (1 - alpha) * out[labelled] + alpha * colours[semantic[labelled]]
    out[_borders(panoptic)] *= 0.3
    out = out.clip(0, 255).astype(np.uint8)
    if labels:
        for seg in segments:
            x, y, w, h = seg.bbox
            text = class_names[seg.class_index]
            (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)
            org = (int(x + w / 2 - tw / 2), int(y + h / 2 + th / 2))
            cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 3, cv2.LINE_AA)
            cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return out
