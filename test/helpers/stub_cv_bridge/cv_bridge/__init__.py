"""A stand-in for the ROS 2 cv_bridge (not installable here) with the API and conversion semantics the
node relies on: CvBridge.imgmsg_to_cv2 / compressed_imgmsg_to_cv2 with a desired encoding, cv2_to_imgmsg,
and CvBridgeError. Written for the tests from cv_bridge's documented behaviour: colour conversions go
through OpenCV, compressed data is decoded as BGR; it is not a copy of cv_bridge."""
from __future__ import annotations

import sys

import cv2
import numpy as np

_CHANNELS = {"mono8": 1, "rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono16": 1, "32SC1": 1, "16UC1": 1}
_DTYPES = {"mono16": np.uint16, "16UC1": np.uint16, "32SC1": np.int32}
_TO_RGB = {"mono8": cv2.COLOR_GRAY2RGB, "bgr8": cv2.COLOR_BGR2RGB, "rgba8": cv2.COLOR_RGBA2RGB,
           "bgra8": cv2.COLOR_BGRA2RGB}


class CvBridgeError(TypeError):
    """Raised for unsupported encodings and undecodable data (as cv_bridge does)."""


class CvBridge:
    def imgmsg_to_cv2(self, img_msg, desired_encoding: str = "passthrough") -> np.ndarray:
        encoding = img_msg.encoding
        if encoding not in _CHANNELS:
            raise CvBridgeError(f"unsupported encoding {encoding}")
        dtype = np.dtype(_DTYPES.get(encoding, np.uint8)).newbyteorder(">" if img_msg.is_bigendian else "<")
        channels = _CHANNELS[encoding]
        rows = np.frombuffer(bytes(img_msg.data), np.uint8).reshape(img_msg.height, img_msg.step)
        row_bytes = img_msg.width * channels * dtype.itemsize
        image = rows[:, :row_bytes].copy().view(dtype).reshape(img_msg.height, img_msg.width, channels)
        image = image.astype(dtype.newbyteorder("="))
        image = image[:, :, 0] if channels == 1 else image
        return self._convert(image, encoding, desired_encoding)

    def compressed_imgmsg_to_cv2(self, cmprs_img_msg, desired_encoding: str = "passthrough") -> np.ndarray:
        image = cv2.imdecode(np.frombuffer(bytes(cmprs_img_msg.data), np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise CvBridgeError("could not decode the compressed image")
        return self._convert(image, "bgr8", desired_encoding)

    def cv2_to_imgmsg(self, cvim: np.ndarray, encoding: str = "passthrough", header=None):
        from sensor_msgs.msg import Image

        array = np.ascontiguousarray(cvim)
        msg = Image(height=array.shape[0], width=array.shape[1], encoding=encoding,
                    is_bigendian=int(sys.byteorder == "big"), step=array.strides[0])
        msg.data = array.tobytes()
        if header is not None:
            msg.header = header
        return msg

    @staticmethod
    def _convert(image: np.ndarray, encoding: str, desired: str) -> np.ndarray:
        if desired in ("passthrough", encoding):
            return image
        if desired != "rgb8" or encoding not in _TO_RGB:
            raise CvBridgeError(f"cannot convert {encoding} to {desired}")
        return cv2.cvtColor(image, _TO_RGB[encoding])
