"""numpy <-> sensor_msgs conversions for the node, with strict validation.

Camera frames (`sensor_msgs/Image` rgb8, bgr8, rgba8, bgra8, mono8; `sensor_msgs/CompressedImage` jpeg/png)
become (H, W, 3) uint8 RGB arrays; label images (int32 panoptic ids, uint16 class indices) become
`32SC1` / `mono16` messages. A frame that cannot be trusted (unknown encoding, zero size, step or data size
that disagrees with width/height, truncated or corrupt compressed data) raises `ImageError` saying why;
nothing is guessed. The ROS 2 `cv_bridge` does the pixel work when it is importable and passes a self-test
(robots), else an equivalent numpy path does; validation is the same for both.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

import cv2
import numpy as np
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header


class ImageError(ValueError):
    """A frame that cannot be converted; str(error) says what is wrong with it."""


@dataclass(frozen=True)
class _Layout:
    """How one encoding stores a pixel: channel count, dtype and which channels hold R, G, B."""

    channels: int
    dtype: np.dtype
    rgb_order: tuple[int, int, int]


# Camera encodings accepted on the `image` input.
COLOR_ENCODINGS: dict[str, _Layout] = {
    "rgb8": _Layout(3, np.dtype(np.uint8), (0, 1, 2)),
    "bgr8": _Layout(3, np.dtype(np.uint8), (2, 1, 0)),
    "rgba8": _Layout(4, np.dtype(np.uint8), (0, 1, 2)),
    "bgra8": _Layout(4, np.dtype(np.uint8), (2, 1, 0)),
    "mono8": _Layout(1, np.dtype(np.uint8), (0, 0, 0)),
}
# Single-channel label encodings (outputs, and the external proposals input).
LABEL_ENCODINGS: dict[str, np.dtype] = {
    "32SC1": np.dtype(np.int32),
    "mono16": np.dtype(np.uint16),
    "16UC1": np.dtype(np.uint16),
    "mono8": np.dtype(np.uint8),
    "8UC1": np.dtype(np.uint8),
}
COMPRESSED_FORMATS = ("jpeg", "jpg", "png")
# Depth encodings accepted on the `depth` input (REP 118): millimetres as uint16, metres as float32.
DEPTH_ENCODINGS: dict[str, np.dtype] = {"16UC1": np.dtype(np.uint16), "mono16": np.dtype(np.uint16),
                                        "32FC1": np.dtype(np.float32)}


def _plane(msg: Image, channels: int, dtype: np.dtype) -> np.ndarray:
    """Validated read-only view of msg's pixels as (H, W, channels) of dtype (native byte order).

    Checks: non-zero size, step >= width * pixel size, step a multiple of the element size and
    len(data) == step * height (a shorter buffer is a truncated frame, a longer one a lying header)."""
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height == 0 or width == 0:
        raise ImageError(f"zero-size image ({width}x{height})")
    row_bytes = width * channels * dtype.itemsize
    if step < row_bytes:
        raise ImageError(f"step {step} is smaller than width {width} x {channels * dtype.itemsize} bytes "
                         f"per pixel = {row_bytes} for encoding {msg.encoding!r}")
    if step % dtype.itemsize:
        raise ImageError(f"step {step} is not a multiple of the {dtype.itemsize}-byte element size")
    size = len(msg.data)
    if size != step * height:
        kind = "truncated" if size < step * height else "oversized"
        raise ImageError(f"{kind} data: {size} bytes, but step {step} x height {height} = {step * height}")
    order = ">" if msg.is_bigendian else "<"
    rows = np.frombuffer(msg.data, dtype=dtype.newbyteorder(order)).reshape(height, step // dtype.itemsize)
    # (H, step/itemsize) -> (H, W, C); astype to native order copies only when the byte order differs.
    return rows[:, : width * channels].reshape(height, width, channels).astype(dtype, copy=False)


def _check_color(msg: Image) -> _Layout:
    layout = COLOR_ENCODINGS.get(msg.encoding)
    if layout is None:
        raise ImageError(f"unsupported encoding {msg.encoding!r}; expected one of {sorted(COLOR_ENCODINGS)}")
    return layout


def _check_compressed(msg: CompressedImage) -> np.ndarray:
    """Validated (N,) uint8 view of the compressed bytes."""
    fmt = msg.format.lower()
    if not any(name in fmt for name in COMPRESSED_FORMATS):
        raise ImageError(f"unsupported compressed format {msg.format!r}; expected jpeg or png")
    if len(msg.data) == 0:
        raise ImageError("empty compressed image")
    return np.frombuffer(msg.data, dtype=np.uint8)


def _header(header: Header | None) -> Header:
    return header if header is not None else Header()


class _NumpyBackend:
    """Pixel conversions with numpy and OpenCV's codecs (no cv_bridge)."""

    name = "numpy"

    def image_to_rgb(self, msg: Image) -> np.ndarray:
        layout = _check_color(msg)
        pixels = _plane(msg, layout.channels, layout.dtype)  # (H, W, C) view
        return np.ascontiguousarray(pixels[:, :, list(layout.rgb_order)])  # (H, W, 3) new array

    def compressed_to_rgb(self, msg: CompressedImage) -> np.ndarray:
        bgr = cv2.imdecode(_check_compressed(msg), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ImageError(f"corrupt or truncated {msg.format!r} data ({len(msg.data)} bytes)")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)  # (H, W, 3)

    def array_to_image(self, array: np.ndarray, encoding: str) -> Image:
        msg = Image(height=array.shape[0], width=array.shape[1], encoding=encoding,
                    is_bigendian=int(sys.byteorder == "big"))
        contiguous = np.ascontiguousarray(array)
        msg.step = contiguous.strides[0]
        msg.data = contiguous.tobytes()
        return msg


class _CvBridgeBackend(_NumpyBackend):
    """Pixel conversions through the ROS 2 cv_bridge (validation stays ours)."""

    name = "cv_bridge"

    def __init__(self, bridge) -> None:
        self._bridge = bridge

    def image_to_rgb(self, msg: Image) -> np.ndarray:
        layout = _check_color(msg)
        _plane(msg, layout.channels, layout.dtype)  # validates step / size; cv_bridge is less strict
        return np.ascontiguousarray(self._bridge.imgmsg_to_cv2(msg, desired_encoding="rgb8"))

    def compressed_to_rgb(self, msg: CompressedImage) -> np.ndarray:
        _check_compressed(msg)
        try:
            rgb = self._bridge.compressed_imgmsg_to_cv2(msg, desired_encoding="rgb8")
        except Exception as error:  # cv_bridge raises CvBridgeError or cv2.error for bad data
            raise ImageError(f"corrupt or truncated {msg.format!r} data: {error}") from error
        if rgb is None or rgb.size == 0:
            raise ImageError(f"corrupt or truncated {msg.format!r} data ({len(msg.data)} bytes)")
        return rgb

    def array_to_image(self, array: np.ndarray, encoding: str) -> Image:
        return self._bridge.cv2_to_imgmsg(np.ascontiguousarray(array), encoding=encoding)


def _load_cv_bridge():
    """The ROS 2 cv_bridge backend, or None when it is missing or is the ROS 1 PyPI package (which fails
    the round-trip self-test on ROS 2 messages)."""
    try:
        from cv_bridge import CvBridge
    except ImportError:
        return None
    try:
        backend = _CvBridgeBackend(CvBridge())
        probe = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
        if not np.array_equal(backend.image_to_rgb(backend.array_to_image(probe, "rgb8")), probe):
            return None
        return backend
    except Exception:  # an incompatible cv_bridge: use the numpy path
        return None


class ImageConverter:
    """numpy <-> sensor_msgs conversions. `backend` is "cv_bridge" or "numpy" (see module docstring).

    prefer_cv_bridge: use the ROS 2 cv_bridge when importable; False forces the numpy path."""

    def __init__(self, prefer_cv_bridge: bool = True) -> None:
        self._impl = (_load_cv_bridge() if prefer_cv_bridge else None) or _NumpyBackend()

    @property
    def backend(self) -> str:
        return self._impl.name

    def image_to_rgb(self, msg: Image) -> np.ndarray:
        """Image (rgb8/bgr8/rgba8/bgra8/mono8) -> (H, W, 3) uint8 RGB (a new array). Raises ImageError."""
        return self._impl.image_to_rgb(msg)

    def compressed_to_rgb(self, msg: CompressedImage) -> np.ndarray:
        """CompressedImage (jpeg/png) -> (H, W, 3) uint8 RGB. Raises ImageError for bad formats or data."""
        return self._impl.compressed_to_rgb(msg)

    def rgb_to_image(self, rgb: np.ndarray, header: Header | None = None, encoding: str = "rgb8") -> Image:
        """(H, W, 3) uint8 RGB -> Image in `encoding` (any COLOR_ENCODINGS entry; mono8 takes luminance)."""
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected (H, W, 3) uint8 RGB, got {rgb.shape} {rgb.dtype}")
        layout = COLOR_ENCODINGS.get(encoding)
        if layout is None:
            raise ValueError(f"unsupported encoding {encoding!r}")
        if encoding == "mono8":
            pixels = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)  # (H, W)
        else:
            pixels = rgb[:, :, list(layout.rgb_order)]  # (H, W, 3) in the encoding's channel order
            if layout.channels == 4:
                alpha = np.full(rgb.shape[:2] + (1,), 255, dtype=np.uint8)
                pixels = np.concatenate([pixels, alpha], axis=2)  # (H, W, 4)
        msg = self._impl.array_to_image(pixels, encoding)
        msg.header = _header(header)
        return msg

    def labels_to_image(self, labels: np.ndarray, encoding: str, header: Header | None = None) -> Image:
        """(H, W) integer labels -> single-channel Image (`32SC1` int32 or `mono16` uint16). Values must fit
        the encoding's dtype (ValueError otherwise); never lossy."""
        dtype = LABEL_ENCODINGS.get(encoding)
        if dtype is None or labels.ndim != 2:
            raise ValueError(f"expected (H, W) labels and one of {sorted(LABEL_ENCODINGS)}, "
                             f"got {labels.shape} {encoding!r}")
        info = np.iinfo(dtype)
        if labels.size and (labels.min() < info.min or labels.max() > info.max):
            raise ValueError(f"labels in [{labels.min()}, {labels.max()}] do not fit {encoding}")
        msg = self._impl.array_to_image(labels.astype(dtype, copy=False), encoding)
        msg.header = _header(header)
        return msg

    @staticmethod
    def image_to_labels(msg: Image) -> np.ndarray:
        """Single-channel label Image (32SC1, mono16/16UC1, mono8/8UC1) -> (H, W) array of its dtype (a copy).
        Raises ImageError."""
        dtype = LABEL_ENCODINGS.get(msg.encoding)
        if dtype is None:
            raise ImageError(f"unsupported label encoding {msg.encoding!r}; expected one of "
                             f"{sorted(LABEL_ENCODINGS)}")
        return _plane(msg, 1, dtype)[:, :, 0].copy()

    @staticmethod
    def image_to_depth(msg: Image) -> np.ndarray:
        """Depth Image (16UC1 / mono16 millimetres, 32FC1 metres) -> (H, W) float32 metres, NaN where
        invalid (0 mm; NaN, inf or <= 0 m). Raises ImageError."""
        from maskclip_ros.tracking.geometry import depth_to_metres

        dtype = DEPTH_ENCODINGS.get(msg.encoding)
        if dtype is None:
            raise ImageError(f"unsupported depth encoding {msg.encoding!r}; expected one of {sorted(DEPTH_ENCODINGS)}")
        encoding = "32FC1" if dtype == np.float32 else "16UC1"
        return depth_to_metres(_plane(msg, 1, dtype)[:, :, 0], encoding)

    @staticmethod
    def rgb_to_compressed(rgb: np.ndarray, header: Header | None = None, fmt: str = "jpeg",
                          quality: int = 95) -> CompressedImage:
        """(H, W, 3) uint8 RGB -> CompressedImage in `fmt` ("jpeg" or "png")."""
        if fmt not in ("jpeg", "png"):
            raise ValueError(f"fmt must be jpeg or png, got {fmt!r}")
        params = [cv2.IMWRITE_JPEG_QUALITY, quality] if fmt == "jpeg" else []
        ok, encoded = cv2.imencode(".jpg" if fmt == "jpeg" else ".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                                   params)
        if not ok:
            raise ValueError(f"OpenCV could not encode a {rgb.shape} image as {fmt}")
        msg = CompressedImage(format=fmt)
        msg.header = _header(header)
        msg.data = encoded.tobytes()
        return msg
