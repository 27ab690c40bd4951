"""Issues 12 and 14, cross-process: the node's vision_msgs outputs (~/detections, ~/label_info, a round trip
through DDS), track ids that stay with their objects, and the depth path: depth + camera_info paired with the
frame give per-segment 3D (Segmentation geometry, ~/detections_3d, ~/markers, ~/cloud), and every kind of
bad depth input is counted while the 2D outputs keep flowing."""
import threading

import numpy as np
import pytest
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from visualization_msgs.msg import MarkerArray

from helpers.node_harness import LATCHED, RELIABLE, node_session, scene, write_params

vision_msgs = pytest.importorskip("vision_msgs.msg", reason="vision_msgs is not installed: make setup-ros-tools")
pytestmark = pytest.mark.ros
H, W = 64, 96
FX = FY = 80.0
PLANE_M = 2.0
DEPTH_LATE_S = 0.3  # a depth image sent this long after its frame (within the session's depth.wait_s of 1 s)
PARAMS = {"depth": {"wait_s": 1.0, "publish_cloud": True, "cloud_stride": 1, "min_valid_pixels": 4},
          "tracking": {"confirm_hits": 1},
          "qos_overrides": {t: {"subscription": {"reliability": "reliable"}} for t in ("/depth", "/camera_info")}}


class Camera:
    """Depth and camera_info publishers plus listeners of the vision and 3D outputs, on the test's peer."""

    def __init__(self, peer):
        node, self.peer, self.got = peer.node, peer, {}
        self.depth_pub = node.create_publisher(Image, "/depth", RELIABLE)
        self.info_pub = node.create_publisher(CameraInfo, "/camera_info", RELIABLE)
        topics = {"detections": (vision_msgs.Detection2DArray, RELIABLE),
                  "detections_3d": (vision_msgs.Detection3DArray, RELIABLE),
                  "label_info": (vision_msgs.LabelInfo, LATCHED), "markers": (MarkerArray, RELIABLE),
                  "cloud": (PointCloud2, RELIABLE)}
        for name, (kind, qos) in topics.items():
            self.got[name] = []
            node.create_subscription(kind, f"/maskclip/{name}", self.got[name].append, qos)

    def info(self, fx=FX, width=W, height=H) -> None:
        msg = CameraInfo(width=width, height=height)
        msg.k = [fx, 0.0, (width - 1) / 2, 0.0, FY if fx else 0.0, (height - 1) / 2, 0.0, 0.0, 1.0]
        self.info_pub.publish(msg)

    def depth(self, stamp, array: np.ndarray, encoding: str) -> None:
        msg = self.peer.conv.labels_to_image(array, encoding) if encoding != "32FC1" else _float_image(array)
        msg.header.stamp.sec, msg.header.stamp.nanosec = stamp
        self.depth_pub.publish(msg)

    def frame(self, stamp, seed=1):
        rgb, labels = scene(seed)
        self.peer.publish(rgb, labels, stamp)
        return self.peer.wait_outputs(stamp)


def _float_image(array: np.ndarray) -> Image:
    msg = Image(height=array.shape[0], width=array.shape[1], encoding="32FC1", step=array.shape[1] * 4)
    msg.data = array.astype("<f4").tobytes()
    return msg


@pytest.fixture(scope="module")
def session(tmp_path_factory, ros_isolation):
    tmp = tmp_path_factory.mktemp("node3d")
    with node_session(tmp, write_params(tmp / "params.yaml", PARAMS)) as (node, peer):
        camera = Camera(peer)
        peer.wait_active()
        peer.spin_until(lambda: camera.depth_pub.get_subscription_count() and camera.got["label_info"], 30,
                        "the depth subscription and the label info")
        yield node, peer, camera


def test_label_info_matches_the_semantic_values_and_follows_the_vocabulary(session):
    node, peer, camera = session
    info = camera.got["label_info"][-1]
    names = list(peer.vocabularies[-1].class_names)
    assert [(c.class_id, c.class_name) for c in info.class_map] == [(i + 1, n) for i, n in enumerate(names)]
    reply = peer.set_vocabulary(["mug", "floor:stuff"])
    peer.spin_until(lambda: [c.class_name for c in camera.got["label_info"][-1].class_map] == ["mug", "floor"], 10,
                    "the new label info")
    _, semantic, segments = camera.frame((500, 0))
    ids = {c.class_name: c.class_id for c in camera.got["label_info"][-1].class_map}
    for inst in segments.instances:  # a ~/semantic pixel value is the LabelInfo class_id of its class
        assert ids[inst.class_name] == inst.class_index + 1
    assert reply.success


def test_detections_are_the_thing_segments_with_their_track_ids(session):
    node, peer, camera = session
    first = camera.frame((510, 0), seed=4)[2]
    second = camera.frame((511, 0), seed=4)[2]  # the same scene again: the same objects
    peer.spin_until(lambda: any(d.header.stamp.sec == 511 for d in camera.got["detections"]), 10, "detections")
    detections = next(d for d in camera.got["detections"] if d.header.stamp.sec == 511)
    things = [i for i in second.instances if i.is_thing]
    assert len(detections.detections) == len(things)
    for det, inst in zip(detections.detections, things):
        assert det.results[0].hypothesis.class_id == inst.class_name
        assert det.results[0].hypothesis.score == pytest.approx(inst.score)
        assert det.bbox.size_x == inst.bbox.width and det.bbox.center.position.x == inst.bbox.x_offset + inst.bbox.width / 2
        assert det.id == (str(inst.track_id) if inst.track_id else "")
    by_box = {(i.bbox.x_offset, i.bbox.y_offset): i.track_id for i in first.instances if i.is_thing}
    assert all(i.track_id > 0 and i.track_id == by_box[(i.bbox.x_offset, i.bbox.y_offset)] for i in things), \
        "a thing keeps its id from one frame to the next"
    assert all(i.track_id == 0 for i in second.instances if not i.is_thing), "stuff is not tracked"


def test_depth_gives_3d_geometry_boxes_markers_and_cloud(session):
    node, peer, camera = session
    camera.info()
    stamp = (520, 0)
    camera.depth(stamp, np.full((H // 2, W // 2), int(PLANE_M * 1000), np.uint16), "16UC1")  # half size: rescaled
    peer.spin_until(lambda: peer.node.count_publishers("/maskclip/markers") > 0, 10, "the 3D publishers")
    _, _, segments = camera.frame(stamp)
    for inst in segments.instances:
        g = inst.geometry
        assert g.valid and g.depth == pytest.approx(PLANE_M) and g.centroid.z == pytest.approx(PLANE_M)
        # a plane at 2 m: the box's width is the segment's pixel width at 2 m / fx
        assert g.box_size.x == pytest.approx(inst.bbox.width * PLANE_M / FX, rel=0.05)
    got = camera.got
    peer.spin_until(lambda: any(m.header.stamp.sec == 520 for m in got["detections_3d"]) and
                    any(c.header.stamp.sec == 520 for c in got["cloud"]), 10, "the 3D outputs")
    det3d = next(m for m in got["detections_3d"] if m.header.stamp.sec == 520)
    assert len(det3d.detections) == sum(i.is_thing for i in segments.instances)
    markers = next(m for m in got["markers"] if m.markers[0].header.stamp.sec == 520)
    assert markers.markers[0].action == markers.markers[0].DELETEALL
    assert len(markers.markers) == 1 + 2 * len(segments.instances)  # a box and a label per segment
    cloud = next(c for c in got["cloud"] if c.header.stamp.sec == 520)
    assert cloud.width == H * W and {f.name for f in cloud.fields} >= {"x", "y", "z", "rgb", "track_id", "class_index"}


def test_a_frame_whose_depth_comes_after_it_still_gets_3d(session):
    """Colour and depth come on separate topics in either order: a segmented frame waits up to depth.wait_s
    (1 s here) for its depth. The depth is sent DEPTH_LATE_S after the frame, longer than the node takes to
    segment this small frame, so without the wait the frame would have no 3D."""
    node, peer, camera = session
    camera.info()
    stamp = (530, 0)
    rgb, labels = scene(2)
    late = threading.Timer(DEPTH_LATE_S, camera.depth,
                           args=(stamp, np.full((H, W), int(PLANE_M * 1000), np.uint16), "16UC1"))
    peer.publish(rgb, labels, stamp)
    late.start()
    _, _, segments = peer.wait_outputs(stamp)
    late.join()
    assert segments.instances and all(i.geometry.valid and i.geometry.depth == pytest.approx(PLANE_M)
                                      for i in segments.instances)


@pytest.mark.parametrize("case", ["wrong encoding", "all invalid", "other aspect ratio", "zero camera_info",
                                  "stamps never pair"])
def test_bad_depth_is_counted_and_2d_keeps_flowing(session, case):
    node, peer, camera = session
    counter = {"wrong encoding": "depth_bad", "all invalid": "depth_all_invalid", "other aspect ratio": "depth_bad",
               "zero camera_info": "camera_info_bad", "stamps never pair": "depth_unpaired"}[case]
    before = peer.latest_diagnostics()[counter]
    stamp = (600 + len(case), 0)
    camera.info(fx=0.0 if case == "zero camera_info" else FX)
    if case == "wrong encoding":
        camera.depth(stamp, np.zeros((H, W), np.uint8), "mono8")
    elif case == "all invalid":
        camera.depth(stamp, np.full((H, W), np.nan, np.float32), "32FC1")
    elif case == "other aspect ratio":
        camera.depth(stamp, np.full((H, H), 2000, np.uint16), "16UC1")
    elif case == "stamps never pair":
        camera.depth((stamp[0] + 100, 0), np.full((H, W), 2000, np.uint16), "16UC1")
    else:
        camera.depth(stamp, np.full((H, W), 2000, np.uint16), "16UC1")
    panoptic, _, segments = camera.frame(stamp)  # the 2D outputs arrive
    assert segments.instances
    if case == "zero camera_info":  # refused; the last good camera_info stays in use
        assert all(i.geometry.valid for i in segments.instances)
    else:
        assert not any(i.geometry.valid for i in segments.instances)
    peer.spin_until(lambda: peer.diagnostics[-1][counter] > before, 10, f"the {counter} counter")
    assert node.alive()
    camera.info()  # a good camera_info again for the next cases
