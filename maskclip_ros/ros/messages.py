"""Model-core results -> maskclip_ros messages (no segmentation logic: fields are copied, not computed)."""
from __future__ import annotations

import numpy as np
from sensor_msgs.msg import RegionOfInterest
from std_msgs.msg import Header

from maskclip_ros.msg import SegmentInstance, Segmentation
from maskclip_ros.msg import Vocabulary as VocabularyMsg


def semantic_labels(semantic: np.ndarray) -> np.ndarray:
    """(H, W) int32 class index (-1 = unlabeled) -> (H, W) uint16 class index + 1 (0 = unlabeled), the
    `mono16` ~/semantic encoding."""
    return (semantic + 1).astype(np.uint16)


def segmentation_msg(result, header: Header, with_embeddings: bool) -> Segmentation:
    """A PanopticResult as a Segmentation message carrying `header` (the input image's).

    Instances follow result.segments (ids as in the panoptic image); embeddings are filled only when
    `with_embeddings` and the result has them."""
    names = result.vocabulary.class_names
    height, width = result.panoptic.shape
    embeddings = result.embeddings if with_embeddings else None
    instances = []
    for i, seg in enumerate(result.segments):
        x, y, w, h = (int(v) for v in seg.bbox)
        instances.append(SegmentInstance(
            id=int(seg.id), class_index=int(seg.class_index), class_name=names[seg.class_index],
            score=float(seg.score), is_thing=bool(seg.is_thing), area=int(seg.area),
            bbox=RegionOfInterest(x_offset=x, y_offset=y, width=w, height=h),
            embedding=embeddings[i].tolist() if embeddings is not None else []))
    return Segmentation(header=header, vocabulary_version=int(result.vocabulary.version), height=height,
                        width=width, instances=instances)


def vocabulary_msg(vocabulary, header: Header) -> VocabularyMsg:
    """The active core Vocabulary as the latched ~/vocabulary message."""
    return VocabularyMsg(header=header, version=int(vocabulary.version),
                         class_names=list(vocabulary.class_names), is_thing=list(vocabulary.is_thing),
                         prompt_templates=list(vocabulary.templates))
