"""vision_msgs outputs, for the perception and tracking nodes that consume the standard messages:
``~/detections`` (Detection2DArray: one Detection2D per thing segment), ``~/detections_3d``
(Detection3DArray: things with 3D geometry) and ``~/label_info`` (LabelInfo: class id = the ~/semantic
value, i.e. vocabulary index + 1). Optional: ``available()`` is False where vision_msgs is not installed."""
from __future__ import annotations

import importlib.util

from maskclip_ros.ros.messages import pose, untracked, vector


def available() -> bool:
    return importlib.util.find_spec("vision_msgs") is not None


def _hypothesis(class_name: str, score: float):
    from vision_msgs.msg import ObjectHypothesis, ObjectHypothesisWithPose

    return ObjectHypothesisWithPose(hypothesis=ObjectHypothesis(class_id=class_name, score=float(score)))


def detections_msg(result, header, tracks=None):
    """Detection2DArray: per thing segment its box (centre, size in pixels), the class name and
    probability as the hypothesis, and the track id (\"\" when untracked) as ``id``."""
    from vision_msgs.msg import BoundingBox2D, Detection2D, Detection2DArray, Point2D, Pose2D

    names = result.vocabulary.class_names
    out = Detection2DArray(header=header)
    for seg, track in zip(result.segments, tracks or untracked(len(result.segments))):
        if not seg.is_thing:
            continue
        x, y, w, h = (float(v) for v in seg.bbox)
        box = BoundingBox2D(center=Pose2D(position=Point2D(x=x + w / 2, y=y + h / 2), theta=0.0), size_x=w, size_y=h)
        out.detections.append(Detection2D(header=header, bbox=box, id=str(track.track_id) if track.track_id else "",
                                          results=[_hypothesis(names[seg.class_index], seg.score)]))
    return out


def detections_3d_msg(result, header, tracks):
    """Detection3DArray: per thing segment with 3D geometry, its axis-aligned box in the optical frame."""
    from vision_msgs.msg import BoundingBox3D, Detection3D, Detection3DArray

    names = result.vocabulary.class_names
    out = Detection3DArray(header=header)
    for seg, track in zip(result.segments, tracks):
        g = track.geometry
        if not seg.is_thing or g is None or not g.valid:
            continue
        box = g.oriented_box or g.box
        out.detections.append(Detection3D(
            header=header, id=str(track.track_id) if track.track_id else "",
            bbox=BoundingBox3D(center=pose(box.center, box.orientation), size=vector(box.size)),
            results=[_hypothesis(names[seg.class_index], seg.score)]))
    return out


def label_info_msg(vocabulary, header, threshold: float):
    """LabelInfo of the active vocabulary: class_id = index + 1 (the ~/semantic pixel value; 0 = unlabeled)."""
    from vision_msgs.msg import LabelInfo, VisionClass

    return LabelInfo(header=header, threshold=float(threshold),
                     class_map=[VisionClass(class_id=i + 1, class_name=name)
                                for i, name in enumerate(vocabulary.class_names)])
