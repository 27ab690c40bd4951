"""Planning a sequence: the background canvas, the camera and every thing's path; motion over time."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from maskclip_ros.data import world
from maskclip_ros.data.sequences.config import (CONTEXT_SPEED, CONTEXT_TILT, ENTER_WINDOW, GROUND_STUFF,
                                                LEAVE_WINDOW, MASK_MARGIN, MAX_CROSSING_ANGLE, PLAN_STREAM, ROW_EPS,
                                                SEED_RANGE, WALL_STUFF, Camera, SequenceConfig, camera_for,
                                                default_sequence_config, duration_s)
from maskclip_ros.data.world import (COLOURS, CONTEXT_CLASSES, CONTEXT_SHAPE, SHAPES, WorldConfig,
                                     _shape_mask, _stuff_layout, _texture)


@dataclass(frozen=True, kw_only=True)
class Track:
    """One thing over a whole sequence. Positions are the centre of its mask in image pixels.

    mode: "stay" (reflected at the frame borders, always fully in view), "cross" (passes the border at
    ``anchor_time``: entering, leaving or both) or "static" (a context thing fixed on the background canvas).
    """
    track_id: int
    category: str     # thing class (a world.THING_CLASSES name)
    colour: str       # world.COLOURS name
    shape: str        # the drawn shape (the class, or world.CONTEXT_SHAPE for context classes)
    size: int         # extent in pixels (world.WorldConfig min_size..max_size)
    depth_m: float    # distance of its fronto-parallel plane (metres)
    size_m: float     # physical extent (metres) = size * depth / fx
    speed: float      # pixels per second
    heading: float    # direction of motion at anchor_time (radians, image x right, y down)
    turn: float       # turn rate (radians per second; 0 = straight)
    angle: float      # rotation at t = 0 (degrees)
    spin: float       # rotation rate (degrees per second)
    anchor: tuple     # (x, y) centre at anchor_time (image pixels; canvas pixels for "static")
    anchor_time: float  # seconds
    mode: str
    enters: bool      # planned to start outside the frame and come in
    leaves: bool      # planned to go out of the frame
    paint_seed: int   # seeds its shading (the same in every frame)


@dataclass(frozen=True, eq=False)
class Sequence:
    """A planned sequence; frames are drawn on access (``seq[t]``, ``iter(seq)``), each deterministic."""
    seed: int
    index: int
    cfg: SequenceConfig
    world_cfg: WorldConfig
    camera: Camera
    tracks: tuple          # Track per thing, track_id order
    stuff_names: tuple     # stuff class of each canvas region (region r -> stuff segment id r + 1)
    regions: np.ndarray    # (H, CW) int32 canvas region index
    canvas: np.ndarray     # (H, CW, 3) float32 canvas texture
    stuff_depth: np.ndarray  # (H, CW) float32 exact stuff depth (metres)
    pan: float             # background pan speed (pixels per second; canvas window moves right if > 0)

    def __len__(self) -> int:
        return self.cfg.frames

    def __getitem__(self, t: int):  # -> render.Frame
        if not 0 <= t < len(self):
            raise IndexError(t)
        from maskclip_ros.data.sequences.render import render_frame  # render imports this module

        return render_frame(self, t)

    def __iter__(self):
        return (self[t] for t in range(len(self)))

    def window_offset(self, t_s: float) -> int:
        """Left column of the visible window on the canvas at time ``t_s``."""
        span = self.canvas.shape[1] - self.camera.width
        start = 0 if self.pan >= 0 else span
        return int(np.clip(round(start + self.pan * t_s), 0, span))


def generate_sequence(seed: int, index: int, cfg: SequenceConfig | None = None,
                      world_cfg: WorldConfig | None = None) -> Sequence:
    """Plan sequence ``index`` of world ``seed``: background, camera and every thing's path (deterministic)."""
    cfg = cfg or default_sequence_config()
    world_cfg = world_cfg or world.default_world_config()
    rng = np.random.default_rng([seed, index, PLAN_STREAM])
    pan = float(rng.uniform(-cfg.max_pan, cfg.max_pan)) if rng.random() < cfg.pan_prob else 0.0
    canvas_w = world_cfg.width + int(math.ceil(abs(pan) * duration_s(cfg)))
    regions, names = _stuff_layout(rng, dataclasses.replace(world_cfg, width=canvas_w))
    canvas = np.zeros((world_cfg.height, canvas_w, 3), np.float32)
    for r, name in enumerate(names):
        canvas = np.where((regions == r)[..., None], _texture(name, rng, world_cfg.height, canvas_w), canvas)
    camera = camera_for(cfg, world_cfg)
    n = int(rng.integers(cfg.min_things, cfg.max_things + 1))
    tracks = [_plan_mover(rng, cfg, world_cfg, camera, i + 1) for i in range(n)]
    tracks += _plan_context(rng, cfg, world_cfg, camera, regions, names, len(tracks) + 1)
    return Sequence(seed=seed, index=index, cfg=cfg, world_cfg=world_cfg, camera=camera, tracks=tuple(tracks),
                    stuff_names=tuple(names), regions=regions, canvas=canvas,
                    stuff_depth=stuff_planes(regions, names, cfg), pan=pan)


def stuff_planes(regions: np.ndarray, names: list[str], cfg: SequenceConfig) -> np.ndarray:
    """Exact stuff depth (H, CW) float32: ground plane by row, wall plane, sky at far_depth."""
    h = regions.shape[0]
    horizon_row = cfg.horizon * h
    rows = np.arange(h, dtype=np.float64)
    # A plane whose depth depends on the row only: z = k / (v - v_horizon), z(bottom row) = ground_near.
    k = cfg.ground_near * (h - 1 - horizon_row)
    with np.errstate(divide="ignore"):
        ground = np.where(rows > horizon_row, k / np.maximum(rows - horizon_row, ROW_EPS), cfg.far_depth)
    ground = np.minimum(ground, cfg.far_depth)
    per_region = [np.broadcast_to(ground[:, None], regions.shape) if n in GROUND_STUFF else
                  np.full(regions.shape, cfg.wall_depth if n in WALL_STUFF else cfg.far_depth) for n in names]
    return np.choose(regions, per_region).astype(np.float32)


def _thing_looks(rng: np.random.Generator, cfg: SequenceConfig, world_cfg: WorldConfig, camera: Camera) -> dict:
    """Size, depth, rotation, colour and shading of one thing (fields shared by movers and context things)."""
    size = int(rng.integers(world_cfg.min_size, world_cfg.max_size + 1))
    depth = float(rng.uniform(cfg.min_depth, cfg.max_depth))
    return {"size": size, "depth_m": depth, "size_m": size * depth / camera.fx,
            "colour": list(COLOURS)[int(rng.integers(len(COLOURS)))],
            "spin": float(rng.uniform(-cfg.max_spin, cfg.max_spin)), "angle": float(rng.uniform(0, 360)),
            "paint_seed": int(rng.integers(SEED_RANGE))}


def _plan_mover(rng, cfg: SequenceConfig, world_cfg: WorldConfig, camera: Camera, track_id: int) -> Track:
    """A moving shape: staying in view (reflected at the borders) or crossing a border once planned."""
    cls = SHAPES[int(rng.integers(len(SHAPES)))]
    looks = _thing_looks(rng, cfg, world_cfg, camera)
    speed = float(rng.uniform(cfg.min_speed, cfg.max_speed))
    turn = math.radians(rng.uniform(-cfg.max_turn, cfg.max_turn)) if rng.random() < cfg.curved_prob else 0.0
    enters, leaves = bool(rng.random() < cfg.enter_prob), bool(rng.random() < cfg.leave_prob)
    half = (looks["size"] + MASK_MARGIN) / 2.0
    if enters or leaves:
        window = ENTER_WINDOW if enters else LEAVE_WINDOW
        anchor_time = float(rng.uniform(*window)) * duration_s(cfg)
        anchor, inward = _border_point(rng, camera, half)
        heading = inward + math.radians(rng.uniform(-MAX_CROSSING_ANGLE, MAX_CROSSING_ANGLE))
        heading += 0.0 if enters else math.pi  # a leaver crosses outwards
        mode = "cross"
    else:
        anchor_time, mode = 0.0, "stay"
        anchor = (float(rng.uniform(half, camera.width - half)), float(rng.uniform(half, camera.height - half)))
        heading = float(rng.uniform(0, 2 * math.pi))
    return Track(track_id=track_id, category=cls, shape=cls, speed=speed, heading=heading, turn=turn,
                 anchor=anchor, anchor_time=anchor_time, mode=mode, enters=enters, leaves=leaves, **looks)


def _border_point(rng, camera: Camera, half: float) -> tuple[tuple[float, float], float]:
    """A centre just outside one border (the shape touching it) and the inward normal's angle (radians)."""
    side = int(rng.integers(4))  # 0 left, 1 right, 2 top, 3 bottom
    x, y = float(rng.uniform(0, camera.width)), float(rng.uniform(0, camera.height))
    if side == 0:
        return (-half, y), 0.0
    if side == 1:
        return (camera.width - 1 + half, y), math.pi
    if side == 2:
        return (x, -half), math.pi / 2
    return (x, camera.height - 1 + half), -math.pi / 2


def _plan_context(rng, cfg, world_cfg, camera, regions, names, first_id: int) -> list[Track]:
    """Context things (boat on water, tent on grass) standing on their stuff on the canvas (``static``)."""
    tracks = []
    for cls, ground in CONTEXT_CLASSES.items():
        if ground not in names:
            continue
        for _ in range(int(rng.integers(0, cfg.context_things + 1))):
            looks = _thing_looks(rng, cfg, world_cfg, camera)
            looks["angle"], looks["spin"] = float(rng.uniform(-CONTEXT_TILT, CONTEXT_TILT)), 0.0
            mask = _shape_mask(CONTEXT_SHAPE, looks["size"], looks["angle"])
            centre = _place_on(rng, world_cfg, mask, regions == names.index(ground))
            if centre is None:
                continue
            tracks.append(Track(track_id=first_id + len(tracks), category=cls, shape=CONTEXT_SHAPE,
                                speed=CONTEXT_SPEED, heading=0.0, turn=0.0, anchor=centre, anchor_time=0.0,
                                mode="static", enters=False, leaves=False, **looks))
    return tracks


def _place_on(rng, world_cfg: WorldConfig, mask: np.ndarray, support: np.ndarray):
    """Centre (x, y) on the canvas where >= context_purity of the mask lies on ``support``, or None."""
    s = mask.shape[0]
    h, w = support.shape
    ys, xs = np.nonzero(support)
    for _ in range(world_cfg.placement_tries if len(ys) else 0):
        i = rng.integers(len(ys))
        y0, x0 = int(np.clip(ys[i] - s // 2, 0, h - s)), int(np.clip(xs[i] - s // 2, 0, w - s))
        if support[y0:y0 + s, x0:x0 + s][mask].mean() >= world_cfg.context_purity:
            return (x0 + (s - 1) / 2.0, y0 + (s - 1) / 2.0)
    return None


# ------------------------------------------------------------------------------------------------- motion
def track_pose(seq: Sequence, track: Track, t_s: float) -> tuple[float, float, float]:
    """Centre (x, y) in image pixels and rotation (degrees) of a thing at time ``t_s``."""
    angle = track.angle + track.spin * t_s
    if track.mode == "static":
        return track.anchor[0] - seq.window_offset(t_s), track.anchor[1], angle
    tau = t_s - track.anchor_time
    if track.turn == 0.0:
        dx, dy = track.speed * tau * math.cos(track.heading), track.speed * tau * math.sin(track.heading)
    else:  # a circular arc at constant speed
        r = track.speed / track.turn
        dx = r * (math.sin(track.heading + track.turn * tau) - math.sin(track.heading))
        dy = r * (math.cos(track.heading) - math.cos(track.heading + track.turn * tau))
    x, y = track.anchor[0] + dx, track.anchor[1] + dy
    if track.mode == "stay":
        half = (track.size + MASK_MARGIN) / 2.0
        x = _reflect(x, half, seq.camera.width - half)
        y = _reflect(y, half, seq.camera.height - half)
    return x, y, angle


def _reflect(x: float, lo: float, hi: float) -> float:
    """Fold ``x`` into [lo, hi] as a ball bouncing between two walls (keeps the speed)."""
    span = hi - lo
    if span <= 0:
        return lo
    y = (x - lo) % (2 * span)
    return lo + span - abs(y - span)

