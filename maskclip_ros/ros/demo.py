"""The main job in one command (`make demo`, `maskclip-ros demo`).

1. Writes a demo rosbag2 (mcap) of a held-out generated world in motion (``data.sequences``: things that
   move, enter, leave and occlude each other): a 640x480 camera stream with a registered depth image
   (16UC1) and camera_info, /clock, and the ground truth (``<topic>/ground_truth/panoptic`` 32SC1 +
   ``<topic>/ground_truth/segments`` with track ids and 3D centroids), unless a bag is given (a bag without
   ground truth gets no PQ and no tracking figures).
2. Starts the node (`maskclip-ros node` with config/demo.yaml) and a recorder of its outputs, replays the bag
   through the node in real time, and changes the vocabulary once mid-stream via /set_vocabulary.
3. Writes overlay PNGs (class names with track ids, projected 3D boxes), an animated GIF and a summary
   (frames in/out, dropped, end-to-end latency, PQ against the ground truth before and after the vocabulary
   change, IDF1 / MOTA / ID switches of the track ids, 3D centroid error) as JSON and markdown
   (``demo_report``).

Every ROS process of the demo runs isolated (localhost discovery, its own ROS_DOMAIN_ID, logs in the output
directory), so it never talks to a robot's graph.
"""
from __future__ import annotations

import os
import random
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from maskclip_ros.config import resource
from maskclip_ros.ros.interface import LAUNCH_SERVICE_NAME, NODE_NAME, SERVICE_TYPE
from maskclip_ros.ros.spin import spin_until, start_process, stop_process

NODE = f"/{NODE_NAME}"
OUTPUTS = ("segments", "panoptic", "overlay", "vocabulary", "markers", "detections")
START_NS = 1_700_000_000 * 10**9  # bag time of the generated bag's first frame (any fixed epoch)
CAMERA_FRAME = "camera_optical"
DOMAIN_IDS = (1, 101)  # ROS_DOMAIN_ID range that is valid on Linux without port clashes
DEMO_PARAMS = "demo.yaml"


@dataclass(frozen=True)
class DemoSettings:
    """One demo run (the command's options; defaults in config/commands.yaml section demo)."""
    bag: Path | None           # replay this bag instead of a generated one
    topic: str                 # camera image topic in the bag
    depth_topic: str           # its registered depth image (16UC1 / 32FC1)
    camera_info_topic: str     # its camera_info
    frames: int                # frames of the generated bag
    hz: float                  # frame rate of the generated bag
    seed: int                  # world seed of the generated scenes
    params_files: tuple        # node params files (default: config/demo.yaml)
    switch_to: tuple           # vocabulary set mid-stream (name or name:stuff)
    timeout: float             # seconds to wait for each stage
    service_timeout: float     # seconds to wait for the vocabulary change's answer
    gif_frame_ms: int          # display time of one GIF frame
    gif_scale: float           # GIF frames are the overlays scaled by this
    out: Path                  # output directory (replaced)


@dataclass
class Session:
    """What the monitor saw while the bag played."""
    frames_sent: int = 0
    sent_at: dict = field(default_factory=dict)  # stamp -> monotonic receive time of the camera frame
    latency_s: list = field(default_factory=list)  # per output frame: output receive - input receive
    switch: dict = field(default_factory=dict)  # the vocabulary change: request, reply
    diagnostics: dict = field(default_factory=dict)  # last parsed /diagnostics values of the node
    diagnostics_at: float = 0.0  # monotonic time the last /diagnostics message arrived
    wall_s: float = 0.0


def run_demo(settings: DemoSettings) -> dict:
    """bag -> node -> outputs -> summary; returns the summary (also written to ``settings.out``)."""
    from maskclip_ros.ros.demo_report import summarise, write_outputs

    out = settings.out
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    env = isolated_environment(out)
    bag = settings.bag or write_demo_bag(out / "input_bag", settings)
    print(f"[demo] input bag: {bag}", flush=True)
    session = _run_session(bag, settings, env)
    summary = summarise(bag, out / "output_bag", settings.topic, session)
    write_outputs(summary, out, settings.gif_frame_ms, settings.gif_scale)
    return summary


def write_demo_bag(path: Path, settings: DemoSettings) -> Path:
    """A rosbag2 (mcap) of ``settings.frames`` frames of the moving world ``settings.seed`` at ``settings.hz``:
    rgb8 images, 16UC1 depth and camera_info, /clock, and the ground truth (panoptic ids 32SC1 + a
    Segmentation whose class_index is the world's category id, with track ids and 3D centroids)."""
    import numpy as np

    from maskclip_ros.data.sequences import sensor_frames
    from maskclip_ros.data.world import categories
    from maskclip_ros.ros.bags import BagWriter, header, image_message, stamp

    names, topic = {c["id"]: c["name"] for c in categories()}, settings.topic
    with BagWriter(path) as bag:
        store = bag.store
        for index, frame in enumerate(sensor_frames(settings.seed, settings.frames)):
            ns = START_NS + int(index * 1e9 / settings.hz)
            head = header(store, ns, CAMERA_FRAME)
            bag.write("/clock", "rosgraph_msgs/msg/Clock", ns, store.types["rosgraph_msgs/msg/Clock"](clock=stamp(store, ns)))
            bag.write(topic, "sensor_msgs/msg/Image", ns, image_message(store, head, frame.image, "rgb8"))
            bag.write(settings.depth_topic, "sensor_msgs/msg/Image", ns, image_message(store, head, frame.depth_mm, "16UC1"))
            bag.write(settings.camera_info_topic, "sensor_msgs/msg/CameraInfo", ns, _camera_info(store, head, frame))
            bag.write(f"{topic}/ground_truth/panoptic", "sensor_msgs/msg/Image", ns,
                      image_message(store, head, frame.panoptic.astype(np.int32), "32SC1"))
            bag.write(f"{topic}/ground_truth/segments", "maskclip_ros/msg/Segmentation", ns,
                      _gt_segmentation(store, head, frame, names))
    return path


def _camera_info(store, head, frame):
    import numpy as np

    info = store.types["sensor_msgs/msg/CameraInfo"]
    fields = {f: frame.camera_info[f] for f in ("distortion_model",) if f in frame.camera_info}
    k = np.asarray(frame.k, np.float64)
    p = np.array([k[0], k[1], k[2], 0.0, k[3], k[4], k[5], 0.0, k[6], k[7], k[8], 0.0])
    roi = store.types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    return info(header=head, height=frame.height, width=frame.width, distortion_model=fields.get("distortion_model", "plumb_bob"),
                d=np.zeros(5), k=k, r=np.eye(3).reshape(-1), p=p, binning_x=0, binning_y=0, roi=roi)


def _gt_segmentation(store, head, frame, names: dict):
    import numpy as np

    types = store.types
    roi, inst = types["sensor_msgs/msg/RegionOfInterest"], types["maskclip_ros/msg/SegmentInstance"]
    point, pose = types["geometry_msgs/msg/Point"], types["geometry_msgs/msg/Pose"]
    vector, quat = types["geometry_msgs/msg/Vector3"], types["geometry_msgs/msg/Quaternion"]

    def geometry(s):
        c = s.get("centroid_xyz")
        origin = pose(position=point(x=0.0, y=0.0, z=0.0), orientation=quat(x=0.0, y=0.0, z=0.0, w=1.0))
        return types["maskclip_ros/msg/SegmentGeometry"](
            valid=c is not None, depth_pixels=0, inlier_pixels=0, depth=float(s.get("depth_m") or 0.0),
            centroid=point(x=float(c[0]), y=float(c[1]), z=float(c[2])) if c is not None else point(x=0.0, y=0.0, z=0.0),
            box_center=origin, box_size=vector(x=0.0, y=0.0, z=0.0), has_oriented_box=False,
            oriented_box_center=origin, oriented_box_size=vector(x=0.0, y=0.0, z=0.0))

    instances = [inst(id=s["id"], class_index=s["category_id"], class_name=names[s["category_id"]], score=1.0,
                      is_thing=bool(s["isthing"]), area=s["area"],
                      bbox=roi(x_offset=s["bbox"][0], y_offset=s["bbox"][1], width=s["bbox"][2],
                               height=s["bbox"][3], do_rectify=False),
                      embedding=np.zeros(0, np.float32), track_id=int(s.get("track_id") or 0),
                      geometry=geometry(s)) for s in frame.segments]
    h, w = frame.panoptic.shape
    return types["maskclip_ros/msg/Segmentation"](header=head, vocabulary_version=0, height=h, width=w,
                                                  instances=instances)


def isolated_environment(out: Path) -> dict[str, str]:
    """This process's environment with localhost-only discovery, a random domain id (or
    MASKCLIP_DEMO_DOMAIN_ID) and logs under ``out``; Fast DDS with a shared-memory segment large enough
    for whole camera frames unless the user chose a profile. Applied to this process too (its monitor)."""
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", ROS_LOG_DIR=str(out / "ros_log"),
               ROS_DOMAIN_ID=os.environ.get("MASKCLIP_DEMO_DOMAIN_ID", str(random.randint(*DOMAIN_IDS))))
    env.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(resource("config", "fastdds_large_frames.xml")))
    os.environ.update(env)
    return env


def _run_session(bag: Path, settings: DemoSettings, env: dict) -> Session:
    """Start node + recorder, replay the bag, switch the vocabulary half-way, stop everything."""
    out, cli = settings.out, [sys.executable, "-m", "maskclip_ros.cli"]
    params = settings.params_files or (str(resource("config", DEMO_PARAMS)),)
    procs = {"node": start_process(
        [*cli, "node", *[a for f in params for a in ("--params-file", str(f))], "--ros-args",
         "-r", f"image:={settings.topic}", "-r", f"depth:={settings.depth_topic}",
         "-r", f"camera_info:={settings.camera_info_topic}", "-r", f"~/set_vocabulary:={LAUNCH_SERVICE_NAME}",
         "-p", "use_sim_time:=false",
         # Reliable inputs: the bag player is reliable, and best-effort delivery of ~1 MB frames over
         # loopback UDP loses fragments in bursts.
         *[a for t in (settings.topic, settings.depth_topic, settings.camera_info_topic)
           for a in ("-p", f"qos_overrides.{t}.subscription.reliability:=reliable")]], out / "node.log", env=env)}
    procs["record"] = start_process([*cli, "record", str(out / "output_bag"), "--topics",
                                     *[f"{NODE}/{t}" for t in OUTPUTS], "/diagnostics"], out / "record.log", env=env)
    try:
        return _monitor(bag, settings, procs, cli, env)
    finally:
        for name in ("record", "replay", "node"):  # recorder first, so the bag holds everything
            if name in procs:
                stop_process(procs[name])


def _monitor(bag: Path, settings: DemoSettings, procs: dict, cli: list, env: dict) -> Session:
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import QoSProfile
    from sensor_msgs.msg import Image

    from maskclip_ros.msg import Segmentation
    from maskclip_ros.ros.bags import matched_line, read_messages

    frames_in = sum(1 for _ in read_messages(bag, [settings.topic]))
    session, started, timeout = Session(), time.monotonic(), settings.timeout
    rclpy.init()
    node = rclpy.create_node("maskclip_demo_monitor")
    try:
        node.create_subscription(Image, settings.topic, lambda m: _on_frame(session, m), QoSProfile(depth=10))
        node.create_subscription(Segmentation, f"{NODE}/segments", lambda m: _on_output(session, m), 10)
        node.create_subscription(DiagnosticArray, "/diagnostics", lambda m: _on_diagnostics(session, m), 10)
        running = {k: p for k, p in procs.items()}
        record_log = settings.out / "record.log"
        spin_until(node, lambda: _service_ready(node) and matched_line(f"{NODE}/segments") in record_log.read_text(),
                   timeout, "the node to become active and the recorder matched to it", watch=running)
        print(f"[demo] node active; replaying {frames_in} frames", flush=True)
        replay = procs["replay"] = start_process([*cli, "replay", str(bag), "--wait-for", settings.topic,
                                                  "--min-subscribers", "2"], settings.out / "replay.log", env=env)
        spin_until(node, lambda: session.frames_sent >= frames_in // 2 or replay.poll() is not None, timeout,
                   "half the bag", watch=running)
        session.switch = _switch_vocabulary(node, settings.switch_to, settings.service_timeout)
        print(f"[demo] vocabulary switched: {session.switch['message']}", flush=True)
        spin_until(node, lambda: replay.poll() is not None, timeout, "the replay to end", watch=running)
        ended = time.monotonic()
        spin_until(node, lambda: _node_idle(session, after=ended), timeout, "the node to finish its last frame",
                   watch=running, details=lambda: f"(last diagnostics: {session.diagnostics})")
        session.wall_s = time.monotonic() - started
        return session
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


def _on_frame(session: Session, msg) -> None:
    session.frames_sent += 1
    session.sent_at[(msg.header.stamp.sec, msg.header.stamp.nanosec)] = time.monotonic()


def _on_output(session: Session, msg) -> None:
    key = (msg.header.stamp.sec, msg.header.stamp.nanosec)
    if key in session.sent_at:
        session.latency_s.append(time.monotonic() - session.sent_at[key])


def _on_diagnostics(session: Session, msg) -> None:
    from maskclip_ros.ros.interface import parse_diagnostics

    values = parse_diagnostics(msg, NODE)
    if values is not None:
        session.diagnostics, session.diagnostics_at = values, time.monotonic()


def _node_idle(session: Session, after: float) -> bool:
    """True when a /diagnostics message newer than ``after`` accounts for every frame the node received:
    nothing is left in its buffer."""
    from maskclip_ros.ros.interface import frames_accounted

    return session.diagnostics_at > after and frames_accounted(session.diagnostics)


def _service_ready(node) -> bool:
    return (LAUNCH_SERVICE_NAME, [SERVICE_TYPE]) in node.get_service_names_and_types()


def _switch_vocabulary(node, tokens, timeout: float) -> dict:
    from maskclip_ros.ros.client import call
    from maskclip_ros.srv import SetVocabulary

    reply = call(node, LAUNCH_SERVICE_NAME, SetVocabulary.Request(class_names=list(tokens)), timeout)
    if reply is None or not reply.success:
        raise RuntimeError(f"the vocabulary change failed: {reply.message if reply else 'no answer'}")
    return {"class_names": list(reply.class_names), "version": reply.version, "message": reply.message}
