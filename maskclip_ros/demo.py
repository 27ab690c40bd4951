"""`maskclip-ros demo`: the main job in one command (what `make demo` runs).

1. Writes a demo rosbag2 (mcap) of held-out generated scenes as a 640x480 camera stream with /clock and the
   scenes' ground truth (``<topic>/ground_truth/panoptic`` 32SC1 + ``<topic>/ground_truth/segments``), unless
   ``--bag`` names one (a bag without ground truth gets no PQ).
2. Starts the node (`maskclip-ros node --params-file config/demo.yaml`) and a recorder of its outputs, replays
   the bag through the node in real time, and changes the vocabulary once mid-stream via /set_vocabulary.
3. Writes overlay PNGs and an animated GIF, and a summary (frames in/out, dropped, end-to-end latency, PQ
   against the ground truth before and after the vocabulary change) as JSON and markdown.

Every ROS process of the demo runs isolated (localhost discovery, its own ROS_DOMAIN_ID, logs in the output
directory), so it never talks to a robot's graph.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from maskclip_ros.procutil import stop_process

REPO = Path(__file__).resolve().parents[1]
NODE = "/maskclip"
OUTPUTS = ("segments", "panoptic", "overlay", "vocabulary")


def register(subparsers) -> None:
    """Add the `demo` subcommand."""
    p = subparsers.add_parser("demo", help="rosbag in, labelled bag + overlays + summary out",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bag", type=Path, default=None, help="replay this rosbag2 instead of a generated one")
    p.add_argument("--topic", default="/camera/image_raw", help="camera image topic in the bag")
    p.add_argument("--frames", type=int, default=100, help="frames of the generated bag")
    p.add_argument("--hz", type=float, default=10.0, help="frame rate of the generated bag")
    p.add_argument("--seed", type=int, default=2026, help="world seed of the generated (held-out) scenes")
    p.add_argument("--params", type=Path, default=REPO / "config" / "demo.yaml", help="node params file")
    p.add_argument("--switch-to", nargs="+", default=["boat", "tent", "crescent", "water:stuff", "grass:stuff",
                                                      "sky:stuff", "sand:stuff"],
                   help="vocabulary set mid-stream (name or name:stuff), as `maskclip-ros set-vocabulary`")
    p.add_argument("--out", type=Path, default=REPO / "out" / "demo", help="output directory (replaced)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the node to start")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Entry point: bag -> node -> outputs -> summary. Exit code 0 when every stage worked."""
    out = args.out
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    _isolate_ros(out)
    bag = args.bag or write_demo_bag(out / "input_bag", args.frames, args.hz, args.seed, args.topic)
    print(f"[demo] input bag: {bag}")
    session = _run_session(bag, args, out)
    summary = summarise(bag, out / "output_bag", args.topic, session)
    _write_outputs(summary, out)
    return 0 if summary["frames_out"] > 0 else 1


# ------------------------------------------------------------------------------------------------ the bag
def write_demo_bag(path: Path, frames: int, hz: float, seed: int, topic: str) -> Path:
    """A rosbag2 (mcap) of `frames` generated scenes at `hz`: rgb8 images on `topic`, /clock, and the ground
    truth (panoptic ids 32SC1 + a Segmentation whose class_index is the world's category id)."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    from maskclip_ros.data.world import categories, generate_scene
    from maskclip_ros.ros.bags import typestore

    store = typestore()
    names = {c["id"]: c["name"] for c in categories()}
    types = {topic: "sensor_msgs/msg/Image", f"{topic}/ground_truth/panoptic": "sensor_msgs/msg/Image",
             f"{topic}/ground_truth/segments": "maskclip_ros/msg/Segmentation", "/clock": "rosgraph_msgs/msg/Clock"}
    start_ns = 1_700_000_000 * 10**9
    with Writer(path, version=Writer.VERSION_LATEST, storage_plugin=StoragePlugin.MCAP) as writer:
        conns = {t: writer.add_connection(t, ty, typestore=store) for t, ty in types.items()}
        for index in range(frames):
            scene = generate_scene(seed, index)
            stamp_ns = start_ns + int(index * 1e9 / hz)
            header = _header(store, stamp_ns, "camera_optical")
            msgs = {
                "/clock": store.types["rosgraph_msgs/msg/Clock"](clock=_time(store, stamp_ns)),
                topic: _image(store, header, scene.image, "rgb8"),
                f"{topic}/ground_truth/panoptic": _image(store, header, scene.panoptic.astype(np.int32), "32SC1"),
                f"{topic}/ground_truth/segments": _gt_segmentation(store, header, scene, names),
            }
            for t, msg in msgs.items():
                writer.write(conns[t], stamp_ns, store.serialize_cdr(msg, types[t]))
    return path


def _time(store, ns: int):
    return store.types["builtin_interfaces/msg/Time"](sec=ns // 10**9, nanosec=ns % 10**9)


def _header(store, ns: int, frame_id: str):
    return store.types["std_msgs/msg/Header"](stamp=_time(store, ns), frame_id=frame_id)


def _image(store, header, array: np.ndarray, encoding: str):
    data = np.ascontiguousarray(array)
    return store.types["sensor_msgs/msg/Image"](
        header=header, height=data.shape[0], width=data.shape[1], encoding=encoding,
        is_bigendian=int(sys.byteorder == "big"), step=data.strides[0], data=data.view(np.uint8).reshape(-1))


def _gt_segmentation(store, header, scene, names: dict):
    roi, inst = store.types["sensor_msgs/msg/RegionOfInterest"], store.types["maskclip_ros/msg/SegmentInstance"]
    instances = [inst(id=s["id"], class_index=s["category_id"], class_name=names[s["category_id"]], score=1.0,
                      is_thing=bool(s["isthing"]), area=s["area"],
                      bbox=roi(x_offset=s["bbox"][0], y_offset=s["bbox"][1], width=s["bbox"][2],
                               height=s["bbox"][3], do_rectify=False),
                      embedding=np.zeros(0, np.float32)) for s in scene.segments]
    h, w = scene.panoptic.shape
    return store.types["maskclip_ros/msg/Segmentation"](header=header, vocabulary_version=0, height=h, width=w,
                                                        instances=instances)


# -------------------------------------------------------------------------------------------- the session
def _isolate_ros(out: Path) -> None:
    """Localhost-only discovery, a random domain id and logs under `out` for this process and its children;
    Fast DDS with a shared-memory segment large enough for whole camera frames (config/fastdds_large_frames.xml)
    unless the user chose a profile."""
    os.environ.update(ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", ROS_LOG_DIR=str(out / "ros_log"),
                      ROS_DOMAIN_ID=os.environ.get("MASKCLIP_DEMO_DOMAIN_ID", str(random.randint(1, 101))))
    os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(REPO / "config" / "fastdds_large_frames.xml"))


@dataclass
class Session:
    """What the monitor saw while the bag played."""
    frames_sent: int = 0
    sent_at: dict = field(default_factory=dict)  # stamp -> monotonic receive time of the camera frame
    latency_s: list = field(default_factory=list)  # per output frame: output receive - input receive
    switch: dict = field(default_factory=dict)  # the vocabulary change: request, reply, time
    outputs: set = field(default_factory=set)  # stamps of the node's Segmentation messages
    diagnostics: dict = field(default_factory=dict)  # last /diagnostics key/values of the node
    diagnostics_at: float = 0.0  # monotonic time the last /diagnostics message arrived
    wall_s: float = 0.0


def _run_session(bag: Path, args: argparse.Namespace, out: Path) -> Session:
    """Start node + recorder, replay the bag, switch the vocabulary half-way, stop everything."""
    cli = [sys.executable, "-m", "maskclip_ros.cli"]
    procs = {"node": _start([*cli, "node", "--params-file", str(args.params), "--ros-args", "-r",
                             f"image:={args.topic}", "-r", "~/set_vocabulary:=/set_vocabulary",
                             "-p", "use_sim_time:=false",
                             # Reliable camera subscription: the bag player is reliable, and best-effort
                             # delivery of ~1 MB frames over loopback UDP loses fragments in bursts.
                             "-p", f"qos_overrides.{args.topic}.subscription.reliability:=reliable"],
                            out / "node.log")}
    procs["record"] = _start([*cli, "record", str(out / "output_bag"), "--topics",
                              *[f"{NODE}/{t}" for t in OUTPUTS], "/diagnostics"], out / "record.log")
    try:
        return _monitor(bag, args, out, procs, cli)
    finally:
        for name in ("record", "replay", "node"):  # recorder first, so the bag holds everything
            if name in procs:
                stop_process(procs[name])


def _monitor(bag: Path, args, out: Path, procs: dict, cli: list) -> Session:
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import QoSProfile
    from sensor_msgs.msg import Image

    from maskclip_ros.msg import Segmentation
    from maskclip_ros.ros.bags import read_messages

    frames_in = sum(1 for _ in read_messages(bag, [args.topic]))
    session, started = Session(), time.monotonic()
    rclpy.init()
    node = rclpy.create_node("maskclip_demo_monitor")
    try:
        node.create_subscription(Image, args.topic, lambda m: _on_frame(session, m), QoSProfile(depth=10))
        node.create_subscription(Segmentation, f"{NODE}/segments", lambda m: _on_output(session, m), 10)
        node.create_subscription(DiagnosticArray, "/diagnostics", lambda m: _on_diagnostics(session, m), 10)
        _spin_until(node, procs, lambda: node.count_subscribers(f"{NODE}/segments") >= 2
                    and _service_ready(node), args.timeout, "the node to become active and the recorder ready")
        print(f"[demo] node active; replaying {frames_in} frames")
        procs["replay"] = _start([*cli, "replay", str(bag), "--wait-for", args.topic,
                                   "--min-subscribers", "2"], out / "replay.log")  # the node and this monitor
        replay = procs["replay"]
        _spin_until(node, procs, lambda: session.frames_sent >= frames_in // 2 or replay.poll() is not None,
                    args.timeout, "half the bag")
        session.switch = _switch_vocabulary(node, args.switch_to)
        print(f"[demo] vocabulary switched: {session.switch['message']}")
        _spin_until(node, procs, lambda: replay.poll() is not None, args.timeout, "the replay to end")
        ended = time.monotonic()
        _spin_until(node, procs, lambda: _node_idle(session, after=ended), args.timeout,
                    "the node to finish its last frame", lambda: f"last diagnostics: {session.diagnostics}")
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
    session.outputs.add(key)
    if key in session.sent_at:
        session.latency_s.append(time.monotonic() - session.sent_at[key])


def _on_diagnostics(session: Session, msg) -> None:
    for status in msg.status:
        if status.name.lstrip("/").startswith(NODE.lstrip("/") + ":"):  # "<node name>: segmentation"
            session.diagnostics = {kv.key: kv.value for kv in status.values}
            session.diagnostics_at = time.monotonic()


def _node_idle(session: Session, after: float) -> bool:
    """True when a /diagnostics message newer than `after` accounts for every frame the node received
    (published, dropped, refused as bad, or failed): nothing is left in its buffer."""
    d = session.diagnostics
    if session.diagnostics_at <= after or not d:
        return False
    done = sum(int(d[k]) for k in ("frames_published", "dropped_frames", "dropped_bad_frames", "failed_frames"))
    return int(d["frames_received"]) > 0 and done >= int(d["frames_received"])


def _service_ready(node) -> bool:
    return ("/set_vocabulary", ["maskclip_ros/srv/SetVocabulary"]) in node.get_service_names_and_types()


def _switch_vocabulary(node, tokens: list[str]) -> dict:
    from maskclip_ros.ros.client import call, parse_classes
    from maskclip_ros.srv import SetVocabulary

    names, flags = parse_classes(tokens)
    reply = call(node, "/set_vocabulary", SetVocabulary.Request(class_names=names, is_thing=flags), 30.0)
    if reply is None or not reply.success:
        raise RuntimeError(f"the vocabulary change failed: {reply.message if reply else 'no answer'}")
    return {"class_names": names, "version": reply.version, "message": reply.message}


def _spin_until(node, procs: dict, condition, timeout: float, what: str, details=lambda: "") -> None:
    import rclpy

    deadline = time.monotonic() + timeout
    while not condition():
        dead = [n for n, p in procs.items() if n != "replay" and p.poll() is not None]
        if dead:
            raise RuntimeError(f"{dead} exited early while waiting for {what}; see the logs in {os.environ['ROS_LOG_DIR']}/..")
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what} {details()}")
        rclpy.spin_once(node, timeout_sec=0.05)


def _start(cmd: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True)


# ------------------------------------------------------------------------------------------- the summary
def _stamp(msg) -> tuple[int, int]:
    return (msg.header.stamp.sec, msg.header.stamp.nanosec)


def _pixels(msg) -> np.ndarray:
    """A rosbags sensor_msgs/Image (32SC1 or rgb8) -> (H, W) int32 or (H, W, 3) uint8."""
    dtype, channels = {"32SC1": (np.int32, 1), "rgb8": (np.uint8, 3)}[msg.encoding]
    rows = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.step)
    return rows[:, : msg.width * channels * np.dtype(dtype).itemsize].copy().view(dtype).reshape(
        msg.height, msg.width, channels).squeeze(-1 if channels == 1 else ())


def summarise(bag: Path, output_bag: Path, topic: str, session: Session) -> dict:
    """Frames, drops, latency and PQ (per vocabulary version) from the two bags and the monitor's view."""
    from maskclip_ros.ros.bags import read_messages

    outputs = {t: {} for t in OUTPUTS}
    vocabularies = {}
    for t, _, msg in read_messages(output_bag):
        name = t.rsplit("/", 1)[-1]
        if name == "vocabulary":
            vocabularies[int(msg.version)] = list(msg.class_names)
        elif name in outputs:
            outputs[name][_stamp(msg)] = msg
    frames_in = sum(1 for _ in read_messages(bag, [topic]))
    latency_ms = [1000.0 * x for x in session.latency_s]
    summary = {
        "frames_in": frames_in, "frames_out": len(outputs["segments"]), "frames_seen_by_monitor": session.frames_sent,
        # Frames without output: superseded by a newer one, in the node's one-slot buffer (counted by the
        # node) or already in the subscription's DDS queue while the node was busy (not seen by the node).
        "frames_without_output": frames_in - len(outputs["segments"]),
        "node_counted": {k: int(session.diagnostics[k]) for k in
                         ("frames_received", "frames_published", "dropped_frames", "dropped_bad_frames",
                          "failed_frames") if k in session.diagnostics},
        "latency_ms": {"median": float(np.median(latency_ms)) if latency_ms else None,
                       "p90": float(np.percentile(latency_ms, 90)) if latency_ms else None},
        "node_stage_latency_ms": {k[len("latency_"):-len("_ms")]: float(v) for k, v in session.diagnostics.items()
                                  if k.startswith("latency_") and k.endswith("_ms") and "_max_" not in k},
        "vocabulary_switch": session.switch, "vocabularies": {str(k): v for k, v in sorted(vocabularies.items())},
        "wall_s": round(session.wall_s, 1),
        "pq": _panoptic_quality(bag, topic, outputs, vocabularies),
    }
    summary["overlay_frames"] = sorted(outputs["overlay"])
    summary["_overlays"] = [outputs["overlay"][k] for k in sorted(outputs["overlay"])]
    return summary


def _panoptic_quality(bag: Path, topic: str, outputs: dict, vocabularies: dict) -> dict:
    """PQ of the node's output against the bag's ground truth, one entry per vocabulary version. Ground-truth
    segments of classes outside the active vocabulary count as void (nobody asked for them)."""
    from maskclip_ros.data.world import categories
    from maskclip_ros.evaluation.metrics import PanopticEvaluator, categories_from_coco
    from maskclip_ros.ros.bags import read_messages

    gt_topics = [f"{topic}/ground_truth/panoptic", f"{topic}/ground_truth/segments"]
    gt = {}
    for t, _, msg in read_messages(bag, gt_topics):
        gt.setdefault(_stamp(msg), {})["panoptic" if t.endswith("panoptic") else "segments"] = msg
    if not gt:
        return {"note": "the bag has no ground truth; PQ not computed"}
    cats = categories_from_coco(categories())
    by_name = {c.name: c.id for c in cats}
    result = {}
    for version, names in sorted(vocabularies.items()):
        if not set(names) <= set(by_name):
            result[str(version)] = {"note": f"classes {sorted(set(names) - set(by_name))} are not in the world"}
            continue
        evaluator = PanopticEvaluator([c for c in cats if c.name in names])
        frames = 0
        for stamp, seg in outputs["segments"].items():
            if seg.vocabulary_version != version or stamp not in gt or stamp not in outputs["panoptic"]:
                continue
            gt_segments = {i.id: i.class_index for i in gt[stamp]["segments"].instances if i.class_name in names}
            pred_segments = {i.id: by_name[i.class_name] for i in seg.instances}
            evaluator.update(_pixels(outputs["panoptic"][stamp]), pred_segments,
                             _pixels(gt[stamp]["panoptic"]), gt_segments)
            frames += 1
        if frames:
            scores = evaluator.compute()
            result[str(version)] = {"frames": frames, **{k: scores[k] for k in ("all", "things", "stuff")}}
    return result


def _write_outputs(summary: dict, out: Path) -> None:
    """Overlay PNGs + GIF, summary.json and summary.md; print where they are."""
    from PIL import Image as PILImage

    overlays = summary.pop("_overlays")
    (out / "overlays").mkdir(exist_ok=True)
    frames = []
    for index, msg in enumerate(overlays):
        picture = PILImage.fromarray(_pixels(msg))
        picture.save(out / "overlays" / f"{index:04d}.png")
        frames.append(picture.resize((picture.width // 2, picture.height // 2)))
    if frames:
        frames[0].save(out / "demo.gif", save_all=True, append_images=frames[1:], duration=200, loop=0)
    summary.pop("overlay_frames")
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    text = _markdown(summary, out)
    (out / "summary.md").write_text(text)
    print(text)


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.1f}"


def _markdown(s: dict, out: Path) -> str:
    lines = ["# maskclip_ros demo", "",
             f"- frames in: {s['frames_in']}, frames out: {s['frames_out']} (the node works on the newest frame "
             f"only; {s['frames_without_output']} frames were superseded while it was busy; node counters: "
             f"{s['node_counted']})",
             f"- end-to-end latency (camera frame received -> segments received): median "
             f"{_fmt(s['latency_ms']['median'])} ms, p90 {_fmt(s['latency_ms']['p90'])} ms",
             f"- node stage latency (ms, mean over the last window): "
             + ", ".join(f"{k} {v:.1f}" for k, v in s["node_stage_latency_ms"].items()),
             f"- vocabulary switched mid-stream: {s['vocabulary_switch'].get('message', '')}",
             f"- wall time of the session: {s['wall_s']} s", "", "| vocabulary | frames | PQ | PQ things | PQ stuff |",
             "|---|---|---|---|---|"]
    for version, pq in s["pq"].items():
        if "frames" in pq:
            vocab = ", ".join(s["vocabularies"].get(version, []))
            lines.append(f"| v{version}: {vocab} | {pq['frames']} | {_fmt(pq['all']['pq'])} | "
                         f"{_fmt(pq['things']['pq'])} | {_fmt(pq['stuff']['pq'])} |")
        else:
            lines.append(f"| {version} | {pq.get('note', '')} | | | |")
    lines += ["", f"outputs: {out}/output_bag (node outputs), {out}/overlays/*.png, {out}/demo.gif, "
              f"{out}/summary.json", ""]
    return "\n".join(lines)
