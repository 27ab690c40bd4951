"""Model-core results -> maskclip_ros messages (no segmentation logic: fields are copied, not computed).

``tracks`` (per segment, in ``result.segments`` order) carries what the tracking stage adds: a track id
(0 = untracked) and a ``tracking.geometry.Segment3D`` or None."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
from geometry_msgs.msg import Point, Pose, Quaternion, Vector3
from sensor_msgs.msg import RegionOfInterest
from std_msgs.msg import Header

from maskclip_ros.msg import SegmentGeometry, SegmentInstance, Segmentation
from maskclip_ros.msg import Vocabulary as VocabularyMsg


class SegmentTrack(NamedTuple):
    """What tracking and depth add to one segment."""
    track_id: int       # 0 = untracked
    geometry: Any       # tracking.geometry.Segment3D or None


def untracked(count: int) -> list[SegmentTrack]:
    return [SegmentTrack(0, None)] * count


def semantic_labels(semantic: np.ndarray) -> np.ndarray:
    """(H, W) int32 class index (-1 = unlabeled) -> (H, W) uint16 class index + 1 (0 = unlabeled), the
    `mono16` ~/semantic encoding (and the LabelInfo class ids)."""
    return (semantic + 1).astype(np.uint16)


def pose(center: Sequence[float], orientation: Sequence[float] = (0.0, 0.0, 0.0, 1.0)) -> Pose:
    x, y, z = (float(v) for v in center)
    qx, qy, qz, qw = (float(v) for v in orientation)
    return Pose(position=Point(x=x, y=y, z=z), orientation=Quaternion(x=qx, y=qy, z=qz, w=qw))


def vector(values: Sequence[float]) -> Vector3:
    x, y, z = (float(v) for v in values)
    return Vector3(x=x, y=y, z=z)


def geometry_msg(segment) -> SegmentGeometry:
    """A tracking.geometry.Segment3D (or None) as SegmentGeometry."""
    if segment is None:
        return SegmentGeometry()
    msg = SegmentGeometry(depth_pixels=int(segment.valid_pixels), inlier_pixels=int(segment.inlier_pixels))
    if not segment.valid:
        return msg
    msg.valid, msg.depth = True, float(segment.depth_m)
    msg.centroid = Point(x=float(segment.centroid[0]), y=float(segment.centroid[1]), z=float(segment.centroid[2]))
    msg.box_center, msg.box_size = pose(segment.box.center), vector(segment.box.size)
    if segment.oriented_box is not None:
        msg.has_oriented_box = True
        msg.oriented_box_center = pose(segment.oriented_box.center, segment.oriented_box.orientation)
        msg.oriented_box_size = vector(segment.oriented_box.size)
    return msg


def segmentation_msg(result, header: Header, with_embeddings: bool,
                     tracks: Sequence[SegmentTrack] | None = None) -> Segmentation:
    """A PanopticResult as a Segmentation message carrying ``header`` (the input image's).

    Instances follow result.segments (ids as in the panoptic image); embeddings are filled only when
    ``with_embeddings`` and the result has them; track ids and geometry from ``tracks``."""
    names = result.vocabulary.class_names
    height, width = result.panoptic.shape
    embeddings = result.embeddings if with_embeddings else None
    tracks = tracks or untracked(len(result.segments))
    instances = []
    for i, (seg, track) in enumerate(zip(result.segments, tracks)):
        x, y, w, h = (int(v) for v in seg.bbox)
        instances.append(SegmentInstance(
            id=int(seg.id), class_index=int(seg.class_index), class_name=names[seg.class_index],
            score=float(seg.score), is_thing=bool(seg.is_thing), area=int(seg.area),
            bbox=RegionOfInterest(x_offset=x, y_offset=y, width=w, height=h),
            embedding=embeddings[i].tolist() if embeddings is not None else [],
            track_id=int(track.track_id), geometry=geometry_msg(track.geometry)))
    return Segmentation(header=header, vocabulary_version=int(result.vocabulary.version), height=height,
                        width=width, instances=instances)


def vocabulary_msg(vocabulary, header: Header) -> VocabularyMsg:
    """The active core Vocabulary as the latched ~/vocabulary message."""
    return VocabularyMsg(header=header, version=int(vocabulary.version),
                         class_names=list(vocabulary.class_names), is_thing=list(vocabulary.is_thing),
                         prompt_templates=list(vocabulary.templates))
