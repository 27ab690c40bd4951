"""The ~/overlay picture: class colours blended over the camera image, segment borders, class names."""
from __future__ import annotations

import cv2
import numpy as np


BORDER_SHADE = 0.3       # segment borders keep this share of their brightness
FONT, FONT_SCALE = cv2.FONT_HERSHEY_SIMPLEX, 0.45
OUTLINE_THICKNESS = 3    # black outline behind the white label text


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
                 *, alpha: float, labels: bool, track_ids=None) -> np.ndarray:
    """A new (H, W, 3) uint8 RGB image: `rgb` (H, W, 3) with each labelled pixel blended with its class
    colour (semantic (H, W) int32, -1 = unlabeled), dark segment borders (panoptic (H, W) int32) and,
    if `labels`, each segment's class name at its box centre (segments: SegmentInfo list), with its track
    id ("mug #3") where `track_ids` (one per segment, 0 = untracked) gives one."""
    colours = class_colours(len(class_names)).astype(np.float32)  # (C, 3)
    labelled = semantic >= 0
    out = rgb.astype(np.float32)
    out[labelled] = (1 - alpha) * out[labelled] + alpha * colours[semantic[labelled]]
    out[_borders(panoptic)] *= BORDER_SHADE
    out = out.clip(0, 255).astype(np.uint8)
    if labels:
        for seg, track_id in zip(segments, track_ids or [0] * len(segments)):
            x, y, w, h = seg.bbox
            name = class_names[seg.class_index]
            text = f"{name} #{track_id}" if track_id else name
            (tw, th), _ = cv2.getTextSize(text, FONT, FONT_SCALE, 1)
            org = (int(x + w / 2 - tw / 2), int(y + h / 2 + th / 2))
            cv2.putText(out, text, org, FONT, FONT_SCALE, (0, 0, 0), OUTLINE_THICKNESS, cv2.LINE_AA)
            cv2.putText(out, text, org, FONT, FONT_SCALE, (255, 255, 255), 1, cv2.LINE_AA)
    return out
