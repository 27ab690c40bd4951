"""numpy <-> sensor_msgs conversions (maskclip_ros.ros.conversions): round trips for every encoding, padded
rows, byte order, and a refusal with a reason for every kind of bad frame."""
import sys
from pathlib import Path

import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from maskclip_ros.ros.conversions import COLOR_ENCODINGS, ImageConverter, ImageError


def _cv_bridge_converter() -> ImageConverter:
    """The cv_bridge path (the robots' default): the real ROS 2 cv_bridge when it is installed, else the
    test stand-in with its API (test/helpers/stub_cv_bridge), so the path runs in CI too."""
    real = ImageConverter()
    if real.backend == "cv_bridge":
        return real
    stub = str(Path(__file__).parent / "helpers" / "stub_cv_bridge")
    sys.path.insert(0, stub)
    sys.modules.pop("cv_bridge", None)
    try:
        converter = ImageConverter()
    finally:
        sys.path.remove(stub)
        sys.modules.pop("cv_bridge", None)
    assert converter.backend == "cv_bridge", "the stand-in passes the converter's round-trip self-test"
    return converter


CONVERTERS = [ImageConverter(prefer_cv_bridge=False), _cv_bridge_converter()]


@pytest.fixture(params=CONVERTERS, ids=lambda c: c.backend)
def conv(request) -> ImageConverter:
    return request.param


def _rgb(h=5, w=7, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _header() -> Header:
    header = Header(frame_id="camera_optical")
    header.stamp.sec, header.stamp.nanosec = 12, 345
    return header


def _raw(encoding: str, h: int, w: int, step: int, data: bytes, bigendian: int = 0) -> Image:
    msg = Image(height=h, width=w, encoding=encoding, step=step, is_bigendian=bigendian)
    msg.data = data
    return msg


def test_numpy_backend_is_selectable():
    assert ImageConverter(prefer_cv_bridge=False).backend == "numpy"


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8"])
def test_color_round_trip(conv, encoding):
    rgb = _rgb()
    msg = conv.rgb_to_image(rgb, _header(), encoding)
    assert (msg.encoding, msg.height, msg.width) == (encoding, 5, 7)
    assert msg.step == 7 * COLOR_ENCODINGS[encoding].channels and msg.header == _header()
    msg = deserialize_message(serialize_message(msg), Image)  # what arrives over DDS
    out = conv.image_to_rgb(msg)
    assert out.dtype == np.uint8 and np.array_equal(out, rgb)


def test_channel_order_is_honoured(conv):
    pixel = np.array([[[10, 20, 30]]], dtype=np.uint8)  # R=10 G=20 B=30
    assert bytes(conv.rgb_to_image(pixel, encoding="bgr8").data) == bytes([30, 20, 10])
    assert bytes(conv.rgb_to_image(pixel, encoding="bgra8").data) == bytes([30, 20, 10, 255])
    bgr = _raw("bgr8", 1, 1, 3, bytes([30, 20, 10]))
    assert conv.image_to_rgb(bgr).tolist() == [[[10, 20, 30]]]


def test_mono8_becomes_grey_rgb(conv):
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    out = conv.image_to_rgb(_raw("mono8", 3, 4, 4, grey.tobytes()))
    assert out.shape == (3, 4, 3) and all(np.array_equal(out[:, :, c], grey) for c in range(3))


def test_padded_rows_are_skipped(conv):
    rgb = _rgb(4, 3)
    padded = np.zeros((4, 16), dtype=np.uint8)  # step 16 > 3 px * 3 bytes
    padded[:, :9] = rgb.reshape(4, 9)
    padded[:, 9:] = 255  # padding must not leak into pixels
    out = conv.image_to_rgb(_raw("rgb8", 4, 3, 16, padded.tobytes()))
    assert np.array_equal(out, rgb)


def test_result_does_not_alias_the_message(conv):
    msg = conv.rgb_to_image(_rgb())
    out = conv.image_to_rgb(msg)
    out[:] = 0
    assert np.array_equal(conv.image_to_rgb(msg), _rgb())


@pytest.mark.parametrize("msg, reason", [
    (_raw("yuv422", 2, 2, 4, bytes(8)), "unsupported encoding 'yuv422'"),
    (_raw("16UC1", 2, 2, 4, bytes(8)), "unsupported encoding '16UC1'"),
    (_raw("", 2, 2, 6, bytes(12)), "unsupported encoding ''"),
    (_raw("rgb8", 0, 4, 12, b""), "zero-size image"),
    (_raw("rgb8", 4, 0, 0, b""), "zero-size image"),
    (_raw("rgb8", 2, 4, 11, bytes(22)), "step 11 is smaller"),
    (_raw("rgb8", 2, 4, 12, bytes(23)), "truncated data: 23 bytes"),
    (_raw("rgb8", 2, 4, 12, bytes(25)), "oversized data: 25 bytes"),
    (_raw("bgra8", 3, 3, 12, bytes(12 * 2)), "truncated data"),
], ids=["encoding", "label-encoding", "empty-encoding", "zero-height", "zero-width", "step", "truncated",
        "oversized", "truncated-rows"])
def test_bad_frames_are_refused_with_a_reason(conv, msg, reason):
    with pytest.raises(ImageError, match=reason):
        conv.image_to_rgb(msg)


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_compressed_round_trip(conv, fmt):
    rgb = np.zeros((16, 24, 3), dtype=np.uint8)
    rgb[:, :12] = (200, 40, 10)  # flat colours survive jpeg almost exactly
    rgb[:, 12:] = (10, 90, 220)
    msg = conv.rgb_to_compressed(rgb, _header(), fmt)
    assert msg.format == fmt and msg.header == _header()
    out = conv.compressed_to_rgb(msg)
    assert out.shape == rgb.shape
    if fmt == "png":
        assert np.array_equal(out, rgb)
    else:  # lossy: away from the colour edge (chroma subsampling) each half keeps its colour
        assert np.abs(out[:, :8].astype(int) - rgb[:, :8]).max() <= 8
        assert np.abs(out[:, 16:].astype(int) - rgb[:, 16:]).max() <= 8


def test_bad_compressed_frames_are_refused(conv):
    good = conv.rgb_to_compressed(_rgb(32, 32), fmt="jpeg")
    truncated = CompressedImage(format="jpeg")
    truncated.data = bytes(good.data)[: len(good.data) // 2]
    garbage = CompressedImage(format="png")
    garbage.data = b"not a png at all" * 8
    with pytest.raises(ImageError, match="corrupt or truncated"):
        conv.compressed_to_rgb(truncated)
    with pytest.raises(ImageError, match="corrupt or truncated"):
        conv.compressed_to_rgb(garbage)
    with pytest.raises(ImageError, match="unsupported compressed format 'tiff'"):
        conv.compressed_to_rgb(CompressedImage(format="tiff", data=bytes(good.data)))
    with pytest.raises(ImageError, match="empty compressed image"):
        conv.compressed_to_rgb(CompressedImage(format="jpeg"))


@pytest.mark.parametrize("encoding, dtype", [("32SC1", np.int32), ("mono16", np.uint16)])
def test_label_round_trip(conv, encoding, dtype):
    labels = np.random.default_rng(1).integers(0, 60000, (6, 9)).astype(np.int32)
    msg = conv.labels_to_image(labels, encoding, _header())
    assert (msg.encoding, msg.step) == (encoding, 9 * np.dtype(dtype).itemsize)
    msg = deserialize_message(serialize_message(msg), Image)
    out = ImageConverter.image_to_labels(msg)
    assert out.dtype == dtype and np.array_equal(out, labels)


def test_big_endian_labels_are_read_correctly():
    labels = np.array([[1, 70000], [-5, 2**30]], dtype=np.int32)
    msg = _raw("32SC1", 2, 2, 8, labels.astype(">i4").tobytes(), bigendian=1)
    assert np.array_equal(ImageConverter.image_to_labels(msg), labels)


def test_labels_that_do_not_fit_are_refused(conv):
    with pytest.raises(ValueError, match="do not fit mono16"):
        conv.labels_to_image(np.array([[0, 65536]]), "mono16")
    with pytest.raises(ValueError, match="do not fit mono16"):
        conv.labels_to_image(np.array([[-1, 3]]), "mono16")
    with pytest.raises(ImageError, match="not a multiple"):
        ImageConverter.image_to_labels(_raw("32SC1", 1, 1, 6, bytes(6)))
