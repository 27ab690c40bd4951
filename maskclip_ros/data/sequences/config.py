"""Settings, camera and constants of the generated sequences (defaults: config/world.yaml ``sequences``)."""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from maskclip_ros import config
from maskclip_ros.data import world
from maskclip_ros.data.world import WorldConfig

GROUND_STUFF = ("grass", "water", "sand", "wooden floor")  # lie on the ground plane
WALL_STUFF = ("brick wall",)  # lie on a fronto-parallel wall plane; everything else (sky) at far_depth
THING_ID_OFFSET = 1000  # thing segment id = offset + track id; stuff segment ids are 1..K (canvas region + 1)
PLAN_STREAM, FRAME_STREAM = 1, 2  # random streams: [seed, index, stream(, frame)]; world.py uses [seed, index]
IMAGE_NOISE_STD = 3.0  # per-pixel sensor noise of the colour image (grey levels), as in world.py
MM_PER_M = 1000.0  # 16UC1 depth PNGs hold millimetres
MAX_DEPTH_MM = 65535  # largest 16-bit depth value
ENTER_WINDOW = (0.05, 0.5)  # an entering thing crosses the border at this fraction of the sequence
LEAVE_WINDOW = (0.5, 0.95)  # a leaving thing crosses the border at this fraction of the sequence
MAX_CROSSING_ANGLE = 50.0  # degrees between a crossing thing's heading and the border's normal
MASK_MARGIN = 4  # world._shape_mask pads a shape of extent s to an (s + 4, s + 4) mask
CONTEXT_SPEED = 0.0  # context things do not move on their stuff
CONTEXT_TILT = 12.0  # context things stand upright within +- this many degrees, as in world.py
SEED_RANGE = 2 ** 31  # per-thing shading seeds are drawn below this
ROW_EPS = 1e-9  # keeps the ground plane's division finite at the horizon row


@dataclass(frozen=True)
class SequenceConfig:
    """Motion, camera and depth of generated sequences; defaults live in config/world.yaml (``sequences``)."""
    frames: int            # frames per sequence
    fps: float             # frame rate (frame t is stamped t / fps seconds)
    min_things: int        # fewest moving things per sequence (over the whole sequence)
    max_things: int        # most moving things per sequence
    context_things: int    # most static context things (boat on water, tent on grass) per class whose stuff is present
    min_speed: float       # slowest thing in the image (pixels per second)
    max_speed: float       # fastest thing in the image (pixels per second)
    curved_prob: float     # probability that a thing's path curves (constant turn rate) instead of a straight line
    max_turn: float        # largest turn rate of a curved path (degrees per second)
    max_spin: float        # largest rotation of a thing about its centre (degrees per second)
    enter_prob: float      # probability that a thing starts outside the frame and enters during the sequence
    leave_prob: float      # probability that a thing leaves the frame during the sequence
    pan_prob: float        # probability that the background pans (else it is static)
    max_pan: float         # largest horizontal pan speed of the background (pixels per second)
    focal: float           # focal length fx = fy (pixels); the principal point is the image centre
    min_depth: float       # nearest thing (metres)
    max_depth: float       # farthest thing (metres); nearer than ground_near, wall_depth and far_depth
    ground_near: float     # depth of the ground plane at the bottom image row (metres)
    horizon: float         # ground plane horizon row as a fraction of the height (< 0: above the image)
    wall_depth: float      # depth of the fronto-parallel wall plane (metres)
    far_depth: float       # depth of the sky and of the ground beyond it (metres; <= 65.535, the 16UC1 range)
    depth_noise: float     # std of multiplicative noise on the published depth (fraction of depth; 0 = exact)
    depth_dropout: float   # fraction of published depth pixels set invalid (0)

    def __post_init__(self):
        if not 0 < self.min_depth <= self.max_depth < min(self.ground_near, self.wall_depth, self.far_depth):
            raise ValueError("need 0 < min_depth <= max_depth < ground_near, wall_depth and far_depth")
        if self.far_depth * MM_PER_M > MAX_DEPTH_MM or self.horizon >= 1 or self.frames < 1 or self.fps <= 0:
            raise ValueError("far_depth must fit 16UC1 millimetres, horizon < 1, frames >= 1 and fps > 0")


@functools.lru_cache(maxsize=1)
def default_sequence_config() -> SequenceConfig:
    """The ``sequences`` section of config/world.yaml (read once; change fields with dataclasses.replace)."""
    return config.load_one(SequenceConfig, world.CONFIG_FILE, section="sequences")


@dataclass(frozen=True, kw_only=True)
class Camera:
    """Pinhole intrinsics of the colour camera, depth registered to it (pixel centres at integers)."""
    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float

    def backproject(self, u: np.ndarray, v: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Pixel coordinates and depth (...) -> points (..., 3) in the optical frame (x right, y down, z ahead)."""
        z = np.asarray(z, np.float64)
        return np.stack([(np.asarray(u) - self.cx) * z / self.fx, (np.asarray(v) - self.cy) * z / self.fy, z], -1)

    def to_json(self) -> dict:
        """sensor_msgs/CameraInfo-like dict: size, plumb_bob with zero distortion, K, R, P, plus fx/fy/cx/cy."""
        k = list(self.k)
        p = [self.fx, 0.0, self.cx, 0.0, 0.0, self.fy, self.cy, 0.0, 0.0, 0.0, 1.0, 0.0]
        return {"width": self.width, "height": self.height, "distortion_model": "plumb_bob", "d": [0.0] * 5,
                "k": k, "r": [1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0], "p": p,
                "fx": self.fx, "fy": self.fy, "cx": self.cx, "cy": self.cy}

    @property
    def k(self) -> tuple[float, ...]:
        """Row-major 3x3 camera matrix (``sensor_msgs/CameraInfo.k``)."""
        return (self.fx, 0.0, self.cx, 0.0, self.fy, self.cy, 0.0, 0.0, 1.0)


def camera_for(cfg: SequenceConfig, world_cfg: WorldConfig) -> Camera:
    """The sequences' pinhole camera: focal ``cfg.focal``, principal point at the image centre."""
    return Camera(width=world_cfg.width, height=world_cfg.height, fx=cfg.focal, fy=cfg.focal,
                  cx=(world_cfg.width - 1) / 2.0, cy=(world_cfg.height - 1) / 2.0)


def duration_s(cfg: SequenceConfig) -> float:
    """Seconds from the first to the last frame."""
    return (cfg.frames - 1) / cfg.fps

