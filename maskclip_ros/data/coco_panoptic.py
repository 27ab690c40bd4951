"""Reading COCO-panoptic datasets: the generated world, COCO panoptic and ADE20K panoptic.

A COCO panoptic dataset is a JSON file (images, annotations with ``segments_info``, categories with
``isthing``), a folder of images and a folder of panoptic PNGs whose RGB encodes the segment id
(id = R + 256 G + 256^2 B, 0 = void). Standard layouts, relative to a dataset root:

- world (``maskclip-ros make-world``): ``panoptic_<split>.json``, ``<split>/``, ``panoptic_<split>/``
- COCO: ``annotations/panoptic_<split>2017.json``, ``<split>2017/``, ``panoptic_<split>2017/``
- ADE20K (Mask2Former's ``prepare_ade20k_pan_seg.py``): ``ADEChallengeData2016/ade20k_panoptic_<split>.json``,
  ``ADEChallengeData2016/images/<validation|training>/``, ``ADEChallengeData2016/ade20k_panoptic_<split>/``
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image


def rgb_to_id(rgb: np.ndarray) -> np.ndarray:
    """COCO panoptic PNG (H, W, 3) uint8 -> (H, W) int32 segment ids."""
    rgb = np.asarray(rgb, np.int32)
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


@dataclass(frozen=True)
class PanopticSample:
    """One annotated image: image (H, W, 3) uint8 RGB; panoptic (H, W) int32 ids (0 = void); segments:
    the annotation's segments_info dicts (id, category_id, area, bbox, iscrowd, ...), isthing filled in
    from the categories."""
    image_id: int | str
    file_name: str
    image: np.ndarray
    panoptic: np.ndarray
    segments: list


class PanopticDataset:
    """Random access to a COCO panoptic dataset (images are read on access, nothing is cached)."""

    def __init__(self, json_path: str | Path, image_dir: str | Path, panoptic_dir: str | Path):
        self.json_path = Path(json_path)
        with open(self.json_path, encoding="utf-8") as f:
            data = json.load(f)
        self.image_dir, self.panoptic_dir = Path(image_dir), Path(panoptic_dir)
        self.info = data.get("info", {})
        self.categories = data["categories"]
        self._images = {img["id"]: img for img in data["images"]}
        self.annotations = data["annotations"]
        self._isthing = {c["id"]: int(c.get("isthing", 0)) for c in self.categories}

    @classmethod
    def from_layout(cls, root: str | Path, split: str = "val", layout: str = "world") -> "PanopticDataset":
        """A dataset in one of the standard layouts ("world", "coco", "ade20k") under ``root``."""
        root = Path(root)
        if layout == "world":
            return cls(root / f"panoptic_{split}.json", root / split, root / f"panoptic_{split}")
        if layout == "coco":
            return cls(root / "annotations" / f"panoptic_{split}2017.json", root / f"{split}2017",
                       root / f"panoptic_{split}2017")
        if layout == "ade20k":
            ade = root / "ADEChallengeData2016" if (root / "ADEChallengeData2016").is_dir() else root
            images = {"val": "validation", "train": "training"}.get(split, split)
            return cls(ade / f"ade20k_panoptic_{split}.json", ade / "images" / images,
                       ade / f"ade20k_panoptic_{split}")
        raise ValueError(f"unknown layout {layout!r}: use world, coco or ade20k")

    def __len__(self) -> int:
        return len(self.annotations)

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __getitem__(self, i: int) -> PanopticSample:
        ann = self.annotations[i]
        meta = self._images[ann["image_id"]]
        image = np.asarray(Image.open(self.image_dir / meta["file_name"]).convert("RGB"))
        panoptic = rgb_to_id(np.asarray(Image.open(self.panoptic_dir / ann["file_name"]).convert("RGB")))
        segments = [dict(s, isthing=self._isthing[s["category_id"]]) for s in ann["segments_info"]]
        return PanopticSample(ann["image_id"], meta["file_name"], image, panoptic, segments)


def segment_masks(panoptic: np.ndarray, ids) -> np.ndarray:
    """Binary masks of segments of a panoptic id image: (H, W) ids, K segment ids -> (K, H, W) bool
    (row k <-> ids[k]; a (0, H, W) array for no ids)."""
    ids = np.asarray(list(ids), dtype=panoptic.dtype if np.issubdtype(panoptic.dtype, np.integer) else np.int64)
    return panoptic[None] == ids[:, None, None]
