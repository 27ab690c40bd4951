"""Sequences on disk (COCO panoptic layout plus per-frame depth and camera info) and as sensor frames."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from maskclip_ros.data import world
from maskclip_ros.data.coco_panoptic import PanopticDataset, PanopticSample
from maskclip_ros.data.sequences.config import MAX_DEPTH_MM, MM_PER_M, SequenceConfig, default_sequence_config
from maskclip_ros.data.sequences.plan import Sequence, generate_sequence
from maskclip_ros.data.sequences.render import Frame
from maskclip_ros.data.world import WorldConfig


def frame_name(seed: int, sequence: int, frame: int) -> str:
    """File stem of one written frame."""
    return f"{seed:04d}_{sequence:04d}_{frame:06d}"


def depth_to_mm(depth: np.ndarray) -> np.ndarray:
    """(H, W) float metres (0 = invalid) -> (H, W) uint16 millimetres (16UC1)."""
    return np.clip(np.round(np.asarray(depth, np.float64) * MM_PER_M), 0, MAX_DEPTH_MM).astype(np.uint16)


def read_depth(path: str | Path) -> np.ndarray:
    """A written 16UC1 depth PNG -> (H, W) float32 metres (0 = invalid)."""
    mm = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if mm is None or mm.dtype != np.uint16:
        raise OSError(f"not a 16-bit depth PNG: {path}")
    return mm.astype(np.float32) / np.float32(MM_PER_M)


def write_sequences(out_dir: str | Path, num_sequences: int, seed: int, split: str = "val",
                    cfg: SequenceConfig | None = None, world_cfg: WorldConfig | None = None) -> Path:
    """Write ``num_sequences`` sequences as one COCO panoptic dataset (world layout) and return the JSON path.

    Besides ``<split>/`` images and ``panoptic_<split>/`` id PNGs (read by
    ``PanopticDataset.from_layout(out_dir, split, "world")``), each frame gets ``depth_<split>/<name>.png``
    (16UC1 millimetres, 0 = invalid) and ``camera_<split>/<name>.json`` (intrinsics and stamp). Image
    entries carry ``sequence_id``, ``frame_index``, ``stamp_s``, ``depth_file``, ``camera_file``;
    annotations ``sequence_id`` and ``frame_index``; segments ``track_id``; ``sequences`` lists each
    sequence's camera and tracks.
    """
    cfg = cfg or default_sequence_config()
    world_cfg = world_cfg or world.default_world_config()
    out = Path(out_dir)
    for folder in (split, f"panoptic_{split}", f"depth_{split}", f"camera_{split}"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    images, annotations, sequences = [], [], []
    for s in range(num_sequences):
        seq = generate_sequence(seed, s, cfg, world_cfg)
        sequences.append(_sequence_entry(seq))
        for frame in seq:
            image, ann = _write_frame(out, split, seq, frame, len(images))
            images.append(image)
            annotations.append(ann)
    cats = world.categories()
    info = {"description": "maskclip_ros generated sequences", "seed": seed, "split": split,
            "world_config": dataclasses.asdict(world_cfg), "sequence_config": dataclasses.asdict(cfg),
            "base_classes": [c["name"] for c in cats if c["split"] == "base"],
            "novel_classes": [c["name"] for c in cats if c["split"] == "novel"]}
    path = out / f"panoptic_{split}.json"
    path.write_text(json.dumps({"info": info, "images": images, "annotations": annotations,
                                "categories": cats, "sequences": sequences}, indent=1))
    return path


def _sequence_entry(seq: Sequence) -> dict:
    return {"id": seq.index, "name": f"{seq.seed:04d}_{seq.index:04d}", "num_frames": len(seq),
            "fps": seq.cfg.fps, "pan_px_per_s": seq.pan, "camera": seq.camera.to_json(),
            "tracks": [{"track_id": tr.track_id, "category": tr.category, "colour": tr.colour,
                        "depth_m": tr.depth_m, "size_m": tr.size_m, "mode": tr.mode, "enters": tr.enters,
                        "leaves": tr.leaves} for tr in seq.tracks]}


def _write_frame(out: Path, split: str, seq: Sequence, frame: Frame, image_id: int) -> tuple[dict, dict]:
    name = frame_name(seq.seed, seq.index, frame.index)
    world._write_png(out / split / f"{name}.png", frame.image)
    world._write_png(out / f"panoptic_{split}" / f"{name}.png", world.id_to_rgb(frame.panoptic))
    if not cv2.imwrite(str(out / f"depth_{split}" / f"{name}.png"), depth_to_mm(frame.depth),
                       [cv2.IMWRITE_PNG_COMPRESSION, 3]):
        raise OSError(f"could not write the depth of {name}")
    camera = dict(seq.camera.to_json(), stamp_s=frame.stamp_s, sequence_id=seq.index, frame_index=frame.index)
    (out / f"camera_{split}" / f"{name}.json").write_text(json.dumps(camera, indent=1))
    image = {"id": image_id, "file_name": f"{name}.png", "width": seq.camera.width, "height": seq.camera.height,
             "description": frame.description, "sequence_id": seq.index, "frame_index": frame.index,
             "stamp_s": frame.stamp_s, "depth_file": f"depth_{split}/{name}.png",
             "camera_file": f"camera_{split}/{name}.json"}
    ann = {"image_id": image_id, "file_name": f"{name}.png", "segments_info": frame.segments,
           "sequence_id": seq.index, "frame_index": frame.index}
    return image, ann


# ------------------------------------------------------------------------------------------------ reading
@dataclass(frozen=True)
class RecordedFrame:
    """A written frame read back: the panoptic sample, depth (H, W) float32 metres, the camera-info dict."""
    sequence_id: int
    frame_index: int
    stamp_s: float
    sample: PanopticSample
    depth: np.ndarray
    camera: dict


def read_sequences(root: str | Path, split: str = "val") -> dict[int, list[RecordedFrame]]:
    """Frames of a ``write_sequences`` dataset grouped by sequence id, in frame order (reads every file)."""
    root = Path(root)
    dataset = PanopticDataset.from_layout(root, split, "world")
    meta = {img["id"]: img for img in json.loads((root / f"panoptic_{split}.json").read_text())["images"]}
    grouped: dict[int, list[RecordedFrame]] = {}
    for sample in dataset:
        img = meta[sample.image_id]
        camera = json.loads((root / img["camera_file"]).read_text())
        grouped.setdefault(img["sequence_id"], []).append(RecordedFrame(
            img["sequence_id"], img["frame_index"], img["stamp_s"], sample, read_depth(root / img["depth_file"]),
            camera))
    return {k: sorted(v, key=lambda f: f.frame_index) for k, v in sorted(grouped.items())}


# ------------------------------------------------------------------------------------------- sensor frames
@dataclass(frozen=True)
class SensorFrame:
    """One frame as a colour camera with a registered depth sensor publishes it, with its ground truth.

    image (H, W, 3) uint8 RGB; panoptic (H, W) int32 ground-truth ids; segments: the frame's segments_info
    (``track_id`` per thing, see ``render.Frame``); depth_mm (H, W) uint16 millimetres, 0 = invalid (a 16UC1
    ``depth`` image); k: row-major 3x3 camera matrix (``camera_info.k``), for ``width`` x ``height``;
    camera_info: every ``sensor_msgs/CameraInfo`` field (width, height, distortion_model, d, k, r, p; no
    distortion); stamp_s: seconds from the first frame (continuous across sequences); sequence_id /
    frame_index: where it comes from.
    """
    image: np.ndarray
    panoptic: np.ndarray
    segments: list
    depth_mm: np.ndarray
    k: tuple
    width: int
    height: int
    camera_info: dict
    stamp_s: float
    sequence_id: int
    frame_index: int


def sensor_frames(seed: int, num_frames: int, cfg: SequenceConfig | None = None,
                  world_cfg: WorldConfig | None = None) -> Iterator[SensorFrame]:
    """``num_frames`` consecutive frames of world ``seed``: sequence 0, then 1, ... (each ``cfg.frames`` long),
    stamped ``1 / cfg.fps`` apart throughout (a sequence boundary is a cut: every object changes)."""
    cfg = cfg or default_sequence_config()
    for n in range(num_frames):
        index, t = divmod(n, cfg.frames)
        if t == 0:
            seq = generate_sequence(seed, index, cfg, world_cfg)
        frame = seq[t]
        yield SensorFrame(image=frame.image, panoptic=frame.panoptic, segments=frame.segments,
                          depth_mm=depth_to_mm(frame.depth), k=seq.camera.k, width=seq.camera.width,
                          height=seq.camera.height, camera_info=seq.camera.to_json(), stamp_s=n / cfg.fps,
                          sequence_id=index, frame_index=t)
