"""Frame hand-over between the subscription callbacks and the inference worker.

`LatestFrameSlot` is the one-slot buffer: a new frame replaces one the worker has not started yet (the
replaced frame counts as dropped), so latency stays bounded when the camera is faster than the model.
`StampPairer` pairs camera frames with external proposal label images by exact header stamp;
`StampedBuffer` keeps recent depth images and finds the one nearest a frame's stamp (a tolerance).
"""
from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from std_msgs.msg import Header


@dataclass(frozen=True)
class Frame:
    """One camera frame ready for the model."""

    header: Header                        # copied to every output
    rgb: np.ndarray                       # (H, W, 3) uint8 RGB
    received: float                       # time.monotonic() when the image callback got it
    external_masks: np.ndarray | None = None  # (M, H, W) bool proposals (external backend) or None


class LatestFrameSlot:
    """Holds at most one pending frame. Thread-safe; `take` blocks until a frame arrives or `close`."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._frame: Frame | None = None
        self._closed = False

    def put(self, frame: Frame) -> bool:
        """Store `frame`; returns True when it replaced a pending (now dropped) frame."""
        with self._cond:
            replaced = self._frame is not None
            self._frame = frame
            self._cond.notify()
            return replaced

    def take(self, timeout: float | None = None) -> Frame | None:
        """The pending frame (removing it), or None after `timeout` seconds or once closed."""
        with self._cond:
            self._cond.wait_for(lambda: self._frame is not None or self._closed, timeout)
            frame, self._frame = self._frame, None
            return None if self._closed else frame

    def close(self) -> None:
        """Wake `take` for good (it returns None from now on); the pending frame is discarded."""
        with self._cond:
            self._closed = True
            self._frame = None
            self._cond.notify_all()


def stamp_key(header: Header) -> tuple[int, int]:
    """(sec, nanosec) of a header: the key that pairs a frame with its proposals."""
    return int(header.stamp.sec), int(header.stamp.nanosec)


class StampPairer:
    """Pairs items of two streams (camera frames, proposal images) that carry the same stamp.

    Each side keeps at most `capacity` unpaired items; the oldest is evicted first and reported with
    on_evict(side). Thread-safe."""

    def __init__(self, capacity: int, on_evict: Callable[[str], None] = lambda side: None) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self._capacity = capacity
        self._on_evict = on_evict
        self._waiting: dict[str, OrderedDict] = {"frame": OrderedDict(), "proposals": OrderedDict()}
        self._lock = threading.Lock()

    def add(self, side: str, key: tuple[int, int], item: Any) -> tuple[Any, Any] | None:
        """Add `item` on `side` ("frame" or "proposals"); returns (frame, proposals) once both are here."""
        other = "proposals" if side == "frame" else "frame"
        evicted = 0
        with self._lock:
            match = self._waiting[other].pop(key, None)
            if match is None:
                waiting = self._waiting[side]
                waiting[key] = item
                while len(waiting) > self._capacity:
                    waiting.popitem(last=False)
                    evicted += 1
        for _ in range(evicted):
            self._on_evict(side)
        if match is None:
            return None
        return (item, match) if side == "frame" else (match, item)


def labels_to_masks(labels: np.ndarray) -> np.ndarray:
    """(H, W) integer label image, 0 = no proposal -> (M, H, W) bool masks, one per non-zero id (sorted)."""
    from maskclip_ros.data.coco_panoptic import segment_masks

    ids = np.unique(labels)
    return segment_masks(labels, ids[ids != 0])


def stamp_seconds(header: Header) -> float:
    """A header's stamp in seconds (the clock of the frames: sim time with use_sim_time)."""
    return header.stamp.sec + header.stamp.nanosec * 1e-9


class StampedBuffer:
    """The last ``capacity`` items of a stream (depth images), each with its stamp; ``nearest`` finds the
    item closest to a frame's stamp within a tolerance, waiting a bounded time for one to arrive (the stream
    and the frames come on separate topics, in either order). Thread-safe."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self._items: deque = deque(maxlen=capacity)
        self._arrived = threading.Condition()

    def put(self, stamp_s: float, item: Any) -> None:
        with self._arrived:
            self._items.append((stamp_s, item))
            self._arrived.notify_all()

    def nearest(self, stamp_s: float, tolerance_s: float, wait_s: float = 0.0) -> Any | None:
        """The item whose stamp is closest to ``stamp_s`` if within ``tolerance_s``; when none is, wait up
        to ``wait_s`` seconds for one to be put; None if none came."""
        with self._arrived:
            found = self._arrived.wait_for(lambda: self._nearest(stamp_s, tolerance_s), timeout=wait_s)
        return found[1] if found else None

    def _nearest(self, stamp_s: float, tolerance_s: float) -> tuple[float, Any] | None:
        if not self._items:
            return None
        stamp, item = min(self._items, key=lambda pair: abs(pair[0] - stamp_s))
        return (stamp, item) if abs(stamp - stamp_s) <= tolerance_s else None

    def outran(self, stamp_s: float, tolerance_s: float) -> bool:
        """Whether an item for ``stamp_s`` may have been evicted: the buffer is full and everything in it is
        newer than ``stamp_s`` (the consumer lags the stream by more than the capacity)."""
        with self._arrived:
            full = len(self._items) == self._items.maxlen
            return full and self._items[0][0] > stamp_s + tolerance_s

    def __len__(self) -> int:
        with self._arrived:
            return len(self._items)
