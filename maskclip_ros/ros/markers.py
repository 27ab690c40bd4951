"""RViz and mapper outputs from the 3D geometry: ``~/markers`` (visualization_msgs/MarkerArray: a box and
a label per segment with depth) and ``~/cloud`` (sensor_msgs/PointCloud2 of labelled points: x, y, z,
rgb, track id, segment id, class index), both in the colour camera's optical frame."""
from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Duration
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import Marker, MarkerArray

from maskclip_ros.ros.messages import pose, vector
from maskclip_ros.ros.overlay import class_colours

MARKER_NS = "maskclip"
BOX_ALPHA = 0.35        # box fill opacity
LABEL_HEIGHT_M = 0.08   # text height of the labels
CLOUD_FIELDS = (("x", PointField.FLOAT32), ("y", PointField.FLOAT32), ("z", PointField.FLOAT32),
                ("rgb", PointField.FLOAT32), ("track_id", PointField.UINT32), ("segment_id", PointField.UINT32),
                ("class_index", PointField.INT32))
CLOUD_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "<u4"), ("track_id", "<u4"),
                        ("segment_id", "<u4"), ("class_index", "<i4")])


def label(class_name: str, track_id: int) -> str:
    """The display name of a segment: "mug #3" when tracked, else the class name."""
    return f"{class_name} #{track_id}" if track_id else class_name


def markers_msg(result, header, tracks) -> MarkerArray:
    """DELETEALL, then per segment with geometry a translucent box and a text label above it."""
    out = MarkerArray(markers=[Marker(header=header, ns=MARKER_NS, action=Marker.DELETEALL)])
    colours = class_colours(len(result.vocabulary)) / 255.0
    for seg, track in zip(result.segments, tracks):
        g = track.geometry
        if g is None or not g.valid:
            continue
        box = g.oriented_box or g.box
        r, gr, b = (float(c) for c in colours[seg.class_index])
        cube = Marker(header=header, ns=MARKER_NS, id=2 * seg.id, type=Marker.CUBE, action=Marker.ADD,
                      pose=pose(box.center, box.orientation), scale=vector(box.size),
                      color=ColorRGBA(r=r, g=gr, b=b, a=BOX_ALPHA), lifetime=Duration())
        top = (box.center[0], box.center[1] - box.size[1] / 2 - LABEL_HEIGHT_M, box.center[2])  # y points down
        text = Marker(header=header, ns=MARKER_NS, id=2 * seg.id + 1, type=Marker.TEXT_VIEW_FACING,
                      action=Marker.ADD, pose=pose(top), scale=vector((0.0, 0.0, LABEL_HEIGHT_M)),
                      color=ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0),
                      text=f"{label(result.vocabulary.class_names[seg.class_index], track.track_id)} {g.depth_m:.2f} m")
        out.markers += [cube, text]
    return out


def cloud_msg(result, header, tracks, rgb: np.ndarray, depth_m: np.ndarray, intrinsics, stride: int) -> PointCloud2:
    """Labelled points of every segment pixel with valid depth, every ``stride``-th pixel per axis.

    rgb: (H, W, 3) uint8 frame; depth_m: (H, W) float32 metres (NaN = invalid) at the frame's size;
    intrinsics: at the frame's size."""
    panoptic = result.panoptic[::stride, ::stride]
    depth = depth_m[::stride, ::stride]
    vs, us = np.nonzero((panoptic > 0) & np.isfinite(depth))
    z = depth[vs, us]
    u, v = us * stride, vs * stride
    ids = panoptic[vs, us]
    track_of = np.zeros(len(result.segments) + 1, np.uint32)
    class_of = np.full(len(result.segments) + 1, -1, np.int32)
    for seg, track in zip(result.segments, tracks):
        track_of[seg.id], class_of[seg.id] = track.track_id, seg.class_index
    points = np.empty(len(z), CLOUD_DTYPE)
    points["x"] = (u - intrinsics.cx) * z / intrinsics.fx
    points["y"] = (v - intrinsics.cy) * z / intrinsics.fy
    points["z"] = z
    colour = rgb[v, u].astype(np.uint32)
    points["rgb"] = (colour[:, 0] << 16) | (colour[:, 1] << 8) | colour[:, 2]  # RViz's packed rgb
    points["track_id"], points["segment_id"], points["class_index"] = track_of[ids], ids, class_of[ids]
    fields = [PointField(name=name, offset=CLOUD_DTYPE.fields[name][1], datatype=kind, count=1)
              for name, kind in CLOUD_FIELDS]
    return PointCloud2(header=header, height=1, width=len(points), fields=fields, is_bigendian=False,
                       point_step=CLOUD_DTYPE.itemsize, row_step=CLOUD_DTYPE.itemsize * len(points),
                       data=points.tobytes(), is_dense=True)
