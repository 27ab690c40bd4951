"""A generated, measurable open-vocabulary world in COCO panoptic format.

No COCO, ADE20K or pretrained CLIP can be had here, so the project measures its method on scenes it draws
itself. A scene (default 640x480, the node's frame size) is a partition of the frame into irregular *stuff*
regions with procedural textures named like real stuff (sky, grass, water, sand, brick wall, wooden floor),
with *things* painted on top: flat coloured shapes of varied size, rotation and colour, partly occluding
each other.

What is a class? Thing categories are **shapes** (ring, cross, star, triangle, square, crescent) plus two
**context classes** drawn with one identical shape (a dome): it is a ``boat`` on water and a ``tent`` on
grass, so only the surroundings tell them apart (the paper's floor-vs-skyscraper example). Colour (eight
of them) is an *attribute* of every thing, stored with its segment and used in its descriptions. So the
panoptic vocabulary stays small (8 things + 6 stuff = 14 categories, a size a tiny CLIP trained on two CPU
cores can learn) while the descriptions still cover 8 x 8 colour-shape combinations, and colour and shape
can be measured separately. Shapes were chosen to differ on a 16-pixel patch grid (a hole, arms, points,
corners, a bite); circle/hexagon and square/triangle/heart-like pairs confused a small ViT.

A fixed base/novel split of the categories (``NOVEL``) is part of the metadata: models trained on the
world's labels (RMA) use only base classes; novel ones measure open-vocabulary transfer.

Every scene is a pure function of ``(seed, index, cfg)``: same arguments, same bytes.
"""
from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from maskclip_ros import config

CONFIG_FILE = "world.yaml"

SHAPES = ("ring", "cross", "star", "triangle", "square", "crescent")
CONTEXT_SHAPE = "dome"
# Context classes: name -> the stuff it must stand on (same shape, label decided by the surroundings).
CONTEXT_CLASSES = {"boat": "water", "tent": "grass"}
STUFF = ("sky", "grass", "water", "sand", "brick wall", "wooden floor")
COLOURS = {  # name -> RGB
    "red": (220, 30, 35), "orange": (250, 135, 20), "yellow": (245, 225, 40), "green": (30, 185, 60),
    "blue": (35, 75, 230), "purple": (135, 45, 190), "pink": (250, 120, 190), "white": (250, 250, 250),
}
THING_CLASSES = SHAPES + tuple(CONTEXT_CLASSES)
NOVEL = ("crescent", "tent", "wooden floor")  # fixed split; everything else is base


@dataclass(frozen=True)
class WorldConfig:
    """Scene layout parameters; defaults live in config/world.yaml (section ``world``)."""
    width: int             # image width (pixels)
    height: int            # image height (pixels)
    min_stuff: int         # fewest stuff regions per scene
    max_stuff: int         # most stuff regions per scene
    region_warp: float     # low-frequency warp of region borders (pixels)
    min_things: int        # fewest things per scene
    max_things: int        # most things per scene
    min_size: int          # smallest thing extent (pixels)
    max_size: int          # largest thing extent (pixels)
    min_visible: float     # least visible fraction of an occluded thing
    context_per_scene: int  # most boats/tents per scene
    context_purity: float  # fraction of a context thing on its defining stuff
    placement_tries: int   # placements tried per thing


@dataclass(frozen=True)
class MakeWorldConfig:
    """The ``make_world`` section of config/world.yaml (`maskclip-ros make-world`)."""
    num_images: int        # scenes written
    num_sequences: int     # > 0: write this many moving sequences with depth (data.sequences) instead of scenes
    seed: int              # world seed
    split: str             # split name (directory and JSON names)


@functools.lru_cache(maxsize=1)
def default_world_config() -> WorldConfig:
    """The ``world`` section of config/world.yaml (read once; change fields with dataclasses.replace)."""
    return config.load_one(WorldConfig, CONFIG_FILE, section="world")


@dataclass(frozen=True)
class Scene:
    """One generated frame.

    image: (H, W, 3) uint8 RGB; panoptic: (H, W) int32 segment ids (0 = void, never used here: every pixel
    is stuff or thing); segments: COCO panoptic segments_info dicts {id, category_id, iscrowd, isthing,
    area, bbox [x, y, w, h], colour (things; None for stuff), stuff (things: the stuff under them),
    description}; description: one sentence for the whole scene.
    """
    image: np.ndarray
    panoptic: np.ndarray
    segments: list
    description: str


def categories() -> list[dict]:
    """COCO panoptic categories: things first (ids 1..8), then stuff; each with ``isthing`` and ``split``
    ("base" | "novel") and a display colour."""
    names = [(n, 1) for n in THING_CLASSES] + [(n, 0) for n in STUFF]
    palette = _palette(len(names))
    return [{"id": i + 1, "name": n, "isthing": t, "supercategory": "thing" if t else "stuff",
             "split": "novel" if n in NOVEL else "base", "color": palette[i]}
            for i, (n, t) in enumerate(names)]


def _palette(n: int) -> list[list[int]]:
    hsv = np.stack([np.arange(n) * 180 // n, np.full(n, 200), np.full(n, 230)], -1).astype(np.uint8)
    return cv2.cvtColor(hsv[None], cv2.COLOR_HSV2RGB)[0].tolist()


# ----------------------------------------------------------------------------------------------- textures
def _noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    """Smooth value noise in [0, 1], (h, w) float32, feature size about ``cell`` pixels."""
    small = rng.random((h // cell + 2, w // cell + 2), dtype=np.float32)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC).clip(0, 1)


def _mix(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Per-pixel blend of RGB colours a, b (3,) by t (H, W) -> (H, W, 3) float32."""
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    return a + (b - a) * t[..., None]


def _texture(name: str, rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Procedural texture for a stuff class, (h, w, 3) float32 in [0, 255]."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    fine = rng.random((h, w), dtype=np.float32)
    if name == "sky":
        clouds = np.clip(_noise(rng, h, w, 96) * 1.6 - 0.7, 0, 1)
        base = _mix((90, 150, 235), (170, 210, 250), yy / h)
        return base + (np.float32(250) - base) * clouds[..., None] * 0.8
    if name == "grass":
        blades = _noise(rng, h, w // 3 + 1, 4)
        blades = cv2.resize(blades, (w, h), interpolation=cv2.INTER_LINEAR)
        t = 0.55 * blades + 0.3 * fine + 0.15 * _noise(rng, h, w, 48)
        return _mix((25, 95, 20), (120, 190, 60), t)
    if name == "water":
        phase = rng.uniform(0, 2 * np.pi)
        waves = 0.5 + 0.5 * np.sin(yy / 5.0 + 2.5 * _noise(rng, h, w, 40) * np.pi + phase)
        return _mix((15, 55, 120), (60, 130, 190), 0.7 * waves + 0.3 * _noise(rng, h, w, 64))
    if name == "sand":
        t = 0.6 * fine + 0.4 * _noise(rng, h, w, 32)
        return _mix((190, 160, 105), (235, 215, 165), t)
    if name == "brick wall":
        bh, bw = int(rng.integers(14, 20)), int(rng.integers(34, 46))
        row = (yy // bh).astype(np.int32)
        xs = xx + (row % 2) * (bw / 2)
        mortar = ((yy % bh) < 3) | ((xs % bw) < 3)
        shade = rng.random((h // bh + 2, w // bw + 3), dtype=np.float32)[row, (xs // bw).astype(np.int32)]
        brick = _mix((140, 45, 30), (185, 80, 50), 0.6 * shade + 0.4 * fine)
        return np.where(mortar[..., None], np.float32(175) + 25 * fine[..., None], brick)
    if name == "wooden floor":
        pw = int(rng.integers(36, 52))
        plank = (xx // pw).astype(np.int32)
        offset = rng.random(w // pw + 2, dtype=np.float32)[plank] * 40
        grain = 0.5 + 0.5 * np.sin((yy + offset * 10) / 3.0 + 4 * _noise(rng, h, w, 24))
        wood = _mix((110, 70, 35), (170, 120, 70), 0.5 * grain + 0.3 * offset[..., ] / 40 + 0.2 * fine)
        return np.where(((xx % pw) < 2)[..., None], np.float32(60), wood)
    raise ValueError(f"unknown stuff class {name!r}")


# ------------------------------------------------------------------------------------------------- shapes
def _shape_mask(shape: str, size: int, angle: float) -> np.ndarray:
    """Binary mask (S, S) bool of a shape with extent ``size`` pixels rotated by ``angle`` degrees."""
    s = size + 4
    canvas = np.zeros((s, s), np.uint8)
    c, r = s / 2.0, size / 2.0
    rot = np.deg2rad(angle)
    rotation = np.array([[np.cos(rot), -np.sin(rot)], [np.sin(rot), np.cos(rot)]])

    def poly(points):  # points (K, 2) in unit coordinates [-1, 1]
        pts = (np.asarray(points, np.float64) @ rotation.T) * r + c
        cv2.fillPoly(canvas, [np.round(pts).astype(np.int32)], 1)

    def disc(cx, cy, radius, value):
        x, y = rotation @ np.array([cx, cy])
        cv2.circle(canvas, (int(round(c + x * r)), int(round(c + y * r))), int(round(radius * r)), value, -1)

    if shape == "ring":
        disc(0, 0, 1.0, 1)
        disc(0, 0, 0.55, 0)
    elif shape == "cross":
        a = 0.3
        poly([(-a, -1), (a, -1), (a, -a), (1, -a), (1, a), (a, a), (a, 1), (-a, 1), (-a, a), (-1, a),
              (-1, -a), (-a, -a)])
    elif shape == "star":
        k = np.arange(10)
        radius = np.where(k % 2 == 0, 1.0, 0.42)
        phi = -np.pi / 2 + k * np.pi / 5
        poly(np.stack([radius * np.cos(phi), radius * np.sin(phi) + 0.1], -1))
    elif shape == "triangle":
        poly([(0, -1), (0.95, 0.75), (-0.95, 0.75)])
    elif shape == "square":
        poly([(-0.75, -0.75), (0.75, -0.75), (0.75, 0.75), (-0.75, 0.75)])
    elif shape == "crescent":
        disc(0, 0, 1.0, 1)
        disc(0.45, -0.2, 0.8, 0)
    elif shape == CONTEXT_SHAPE:  # a dome: half disc on a flat base, drawn upright
        cv2.ellipse(canvas, (int(c), int(c + 0.35 * r)), (int(r), int(1.1 * r)), angle, 180, 360, 1, -1)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return canvas.astype(bool)


# ----------------------------------------------------------------------------------------------- layout
def _stuff_layout(rng: np.random.Generator, cfg: WorldConfig) -> tuple[np.ndarray, list[str]]:
    """Partition the frame into irregular regions: (H, W) int32 region index and the stuff name of each."""
    h, w = cfg.height, cfg.width
    k = int(rng.integers(cfg.min_stuff, cfg.max_stuff + 1))
    names = [STUFF[i] for i in rng.permutation(len(STUFF))[:k]]
    seeds = rng.random((k, 2)) * (w, h)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    wx = (_noise(rng, h, w, 160) - 0.5) * 2 * cfg.region_warp
    wy = (_noise(rng, h, w, 160) - 0.5) * 2 * cfg.region_warp
    dist = np.stack([np.hypot(xx + wx - sx, yy + wy - sy) for sx, sy in seeds])  # (k, H, W)
    return dist.argmin(0).astype(np.int32), names


def _place(rng, cfg, mask, visible, support, stuff_ok):
    """Try positions for a shape mask (S, S); returns (y, x) or None. ``visible`` (H, W) int32 holds the
    current thing instance per pixel (-1 none), ``support`` (H, W) bool where the thing may stand."""
    s = mask.shape[0]
    ys, xs = np.nonzero(support)
    if len(ys) == 0:
        return None
    for _ in range(cfg.placement_tries):
        i = rng.integers(len(ys))
        y0 = int(np.clip(ys[i] - s // 2, 0, cfg.height - s))
        x0 = int(np.clip(xs[i] - s // 2, 0, cfg.width - s))
        window = (slice(y0, y0 + s), slice(x0, x0 + s))
        if stuff_ok is not None and support[window][mask].mean() < cfg.context_purity:
            continue
        covered = visible[window][mask]
        ids, lost = np.unique(covered[covered >= 0], return_counts=True)
        if all(_visible_after(visible, j, n, cfg) for j, n in zip(ids, lost)):
            return y0, x0
    return None


def _visible_after(visible: np.ndarray, instance: int, lost: int, cfg: WorldConfig) -> bool:
    # Original areas are not tracked here: require the remaining part to stay >= min_visible of the current.
    area = int((visible == instance).sum())
    return area - lost >= cfg.min_visible * area


def generate_scene(seed: int, index: int, cfg: WorldConfig | None = None) -> Scene:
    """Draw scene ``index`` of the world ``seed`` (deterministic: same arguments, same bytes)."""
    cfg = cfg or default_world_config()
    rng = np.random.default_rng([seed, index])
    h, w = cfg.height, cfg.width
    regions, stuff_names = _stuff_layout(rng, cfg)
    image = np.zeros((h, w, 3), np.float32)
    for r, name in enumerate(stuff_names):
        image = np.where((regions == r)[..., None], _texture(name, rng, h, w), image)

    visible = np.full((h, w), -1, np.int32)
    things = []  # (class name, colour name, stuff under it)
    plan = _thing_plan(rng, cfg, stuff_names)
    for cls, colour in plan:
        size = int(rng.integers(cfg.min_size, cfg.max_size + 1))
        upright = cls in CONTEXT_CLASSES
        angle = float(rng.uniform(-12, 12) if upright else rng.uniform(0, 360))
        mask = _shape_mask(CONTEXT_SHAPE if upright else cls, size, angle)
        support = (regions == stuff_names.index(CONTEXT_CLASSES[cls])) if upright else np.ones((h, w), bool)
        pos = _place(rng, cfg, mask, visible, support, upright or None)
        if pos is None:
            continue
        y0, x0 = pos
        window = (slice(y0, y0 + mask.shape[0]), slice(x0, x0 + mask.shape[1]))
        visible[window][mask] = len(things)
        image[window][mask] = _paint(rng, mask, COLOURS[colour])
        under = np.bincount(regions[window][mask], minlength=len(stuff_names)).argmax()
        things.append((cls, colour, stuff_names[under]))
    image = np.clip(image + rng.normal(0, 3, image.shape).astype(np.float32), 0, 255).astype(np.uint8)
    return _assemble(image, regions, stuff_names, visible, things)


def _thing_plan(rng, cfg, stuff_names) -> list[tuple[str, str]]:
    """Classes and colours of the things to draw, context classes first (they need free room)."""
    plan = []
    for cls, ground in CONTEXT_CLASSES.items():
        if ground in stuff_names:
            plan += [(cls, None)] * int(rng.integers(1, cfg.context_per_scene + 1))
    n = int(rng.integers(cfg.min_things, cfg.max_things + 1))
    plan += [(SHAPES[int(rng.integers(len(SHAPES)))], None) for _ in range(n)]
    names = list(COLOURS)
    return [(cls, names[int(rng.integers(len(names)))]) for cls, _ in plan]


def _paint(rng, mask: np.ndarray, rgb) -> np.ndarray:
    """Pixels of a flat-coloured shape with a soft shading and a darker 2-pixel rim: (K, 3) float32."""
    s = mask.shape[0]
    inner = cv2.erode(mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    ramp = np.linspace(1.0, 0.85, s, dtype=np.float32)
    shade = np.outer(ramp, np.ones(s, np.float32)) if rng.random() < 0.5 else np.outer(np.ones(s), ramp)
    colour = np.asarray(rgb, np.float32) * shade[..., None]
    colour = np.where(inner[..., None], colour, colour * 0.55)
    return colour[mask]


def _assemble(image, regions, stuff_names, visible, things) -> Scene:
    """Panoptic id map and COCO segments_info: stuff segments first (one per stuff class), then things."""
    cat_id = {c["name"]: c["id"] for c in categories()}
    panoptic = np.zeros(regions.shape, np.int32)
    segments = []
    parts = [(regions == r) & (visible < 0) for r in range(len(stuff_names))]
    parts += [visible == i for i in range(len(things))]
    labels = [(n, None, None) for n in stuff_names] + things
    for mask, (cls, colour, under) in zip(parts, labels):
        area = int(mask.sum())
        if area == 0:
            continue
        seg_id = len(segments) + 1
        panoptic[mask] = seg_id
        ys, xs = np.nonzero(mask)
        x, y = int(xs.min()), int(ys.min())
        segments.append({
            "id": seg_id, "category_id": cat_id[cls], "iscrowd": 0, "isthing": int(colour is not None),
            "area": area, "bbox": [x, y, int(xs.max()) - x + 1, int(ys.max()) - y + 1],
            "colour": colour, "stuff": under, "description": describe_region(cls, colour, under)})
    return Scene(image=image, panoptic=panoptic, segments=segments,
                 description=describe_scene(stuff_names, things))


def describe_region(cls: str, colour: str | None, under: str | None) -> str:
    """One sentence for a region: 'a red star on grass.' or 'brick wall.'"""
    if colour is None:
        return f"{cls}."
    return f"a {colour} {cls} on {under}."


def describe_scene(stuff_names: list[str], things: list[tuple]) -> str:
    """One sentence for a scene: its stuff, then its things (counted per colour and class)."""
    counts: dict[str, int] = {}
    for cls, colour, _ in things:
        counts[f"{colour} {cls}"] = counts.get(f"{colour} {cls}", 0) + 1
    words = ["one", "two", "three", "four", "five", "six", "seven", "eight"]
    items = [f"{words[n - 1] if n <= len(words) else n} {k}{'s' if n > 1 else ''}" for k, n in counts.items()]
    scene = ", ".join(stuff_names[:-1]) + (" and " if len(stuff_names) > 1 else "") + stuff_names[-1]
    return f"{scene} with {', '.join(items)}." if items else f"{scene}."


# ------------------------------------------------------------------------------------------------ writing
def id_to_rgb(ids: np.ndarray) -> np.ndarray:
    """COCO panoptic encoding: id = R + 256 G + 256^2 B. (H, W) int -> (H, W, 3) uint8."""
    ids = np.asarray(ids, np.int64)
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536 % 256], -1).astype(np.uint8)


def write_world(out_dir: str | Path, num_images: int, seed: int, split: str = "val",
                cfg: WorldConfig | None = None) -> Path:
    """Write ``num_images`` scenes as a COCO panoptic dataset and return the JSON path.

    Layout (as COCO): ``<out>/<split>/<name>.png`` images, ``<out>/panoptic_<split>/<name>.png`` id PNGs,
    ``<out>/panoptic_<split>.json`` with images, annotations (segments_info), categories (isthing, split)
    and ``info`` holding the seed, the layout config and the base/novel class lists.
    """
    cfg = cfg or default_world_config()
    out = Path(out_dir)
    (out / split).mkdir(parents=True, exist_ok=True)
    (out / f"panoptic_{split}").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for index in range(num_images):
        scene = generate_scene(seed, index, cfg)
        name = f"{seed:04d}_{index:06d}"
        _write_png(out / split / f"{name}.png", scene.image)
        _write_png(out / f"panoptic_{split}" / f"{name}.png", id_to_rgb(scene.panoptic))
        images.append({"id": index, "file_name": f"{name}.png", "width": cfg.width, "height": cfg.height,
                       "description": scene.description})
        annotations.append({"image_id": index, "file_name": f"{name}.png", "segments_info": scene.segments})
    cats = categories()
    info = {"description": "maskclip_ros generated world", "seed": seed, "split": split,
            "world_config": dataclasses.asdict(cfg),
            "base_classes": [c["name"] for c in cats if c["split"] == "base"],
            "novel_classes": [c["name"] for c in cats if c["split"] == "novel"]}
    path = out / f"panoptic_{split}.json"
    path.write_text(json.dumps({"info": info, "images": images, "annotations": annotations,
                                "categories": cats}, indent=1))
    return path


def _write_png(path: Path, rgb: np.ndarray) -> None:
    # Fixed compression so the bytes depend only on the pixels.
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 3]):
        raise OSError(f"could not write {path}")
