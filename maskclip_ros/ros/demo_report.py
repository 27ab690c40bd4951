"""The demo's results: frames in and out, latency, PQ per vocabulary version, and the tracking figures (IDF1,
MOTA, ID switches of the node's track ids; 3D centroid error) from the input bag (ground truth) and the
output bag (the node's outputs); then overlay PNGs with the projected 3D boxes, a GIF, summary.json and
summary.md."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from maskclip_ros.ros.bags import image_pixels, read_messages
from maskclip_ros.ros.interface import COUNTERS


def _stamp(msg) -> tuple[int, int]:
    return (msg.header.stamp.sec, msg.header.stamp.nanosec)


STAMPED = ("segments", "panoptic", "overlay")  # outputs read back by the frame's stamp


def read_outputs(output_bag: Path) -> tuple[dict, dict]:
    """The node's per-frame outputs by topic name and stamp, and the vocabularies by version."""
    outputs: dict[str, dict] = {n: {} for n in STAMPED}
    vocabularies: dict[int, list] = {}
    for topic, _, msg in read_messages(output_bag):
        name = topic.rsplit("/", 1)[-1]
        if name == "vocabulary":
            vocabularies[int(msg.version)] = list(msg.class_names)
        elif name in outputs:
            outputs[name][_stamp(msg)] = msg
    return outputs, vocabularies


def summarise(bag: Path, output_bag: Path, topic: str, session) -> dict:
    """Frames, drops, latency and PQ (per vocabulary version) from the two bags and the monitor's view."""
    outputs, vocabularies = read_outputs(output_bag)
    frames_in = sum(1 for _ in read_messages(bag, [topic]))
    latency_ms = [1000.0 * x for x in session.latency_s]
    diagnostics = session.diagnostics
    return {
        "frames_in": frames_in, "frames_out": len(outputs["segments"]), "frames_seen_by_monitor": session.frames_sent,
        # Frames without output: superseded by a newer one in the node's one-slot buffer (counted by the
        # node) or already in the subscription's DDS queue while the node was busy (not seen by the node).
        "frames_without_output": frames_in - len(outputs["segments"]),
        "node_counted": {k: diagnostics[k] for k in COUNTERS if k in diagnostics},
        "latency_ms": {"median": float(np.median(latency_ms)) if latency_ms else None,
                       "p90": float(np.percentile(latency_ms, 90)) if latency_ms else None},
        "node_stage_latency_ms": dict(diagnostics.get("latency_ms", {})),
        "vocabulary_switch": session.switch, "vocabularies": {str(k): v for k, v in sorted(vocabularies.items())},
        "wall_s": round(session.wall_s, 1),
        "pq": panoptic_quality(bag, topic, outputs, vocabularies),
        "tracking": tracking_quality(bag, topic, outputs),
        "overlays": [(outputs["overlay"][k], outputs["segments"].get(k)) for k in sorted(outputs["overlay"])],
        "camera_k": _camera_k(bag),
    }


def panoptic_quality(bag: Path, topic: str, outputs: dict, vocabularies: dict) -> dict:
    """PQ of the node's output against the bag's ground truth, one entry per vocabulary version. Ground-truth
    segments of classes outside the active vocabulary count as void (nobody asked for them)."""
    from maskclip_ros.data.world import categories
    from maskclip_ros.evaluation.metrics import PanopticEvaluator, categories_from_coco

    gt = _ground_truth(bag, topic)
    if not gt:
        return {"note": "the bag has no ground truth; PQ not computed"}
    cats = categories_from_coco(categories())
    by_name = {c.name: c.id for c in cats}
    result = {}
    for version, names in sorted(vocabularies.items()):
        if not set(names) <= set(by_name):
            result[str(version)] = {"note": f"classes {sorted(set(names) - set(by_name))} are not in the world"}
            continue
        evaluator, frames = PanopticEvaluator([c for c in cats if c.name in names]), 0
        for stamp, seg in outputs["segments"].items():
            if seg.vocabulary_version != version or stamp not in gt or stamp not in outputs["panoptic"]:
                continue
            gt_segments = {i.id: i.class_index for i in gt[stamp]["segments"].instances if i.class_name in names}
            pred_segments = {i.id: by_name[i.class_name] for i in seg.instances}
            evaluator.update(image_pixels(outputs["panoptic"][stamp]), pred_segments,
                             image_pixels(gt[stamp]["panoptic"]), gt_segments)
            frames += 1
        if frames:
            scores = evaluator.compute()
            result[str(version)] = {"frames": frames, **{k: scores[k] for k in ("all", "things", "stuff")}}
    return result


def _ground_truth(bag: Path, topic: str) -> dict:
    """stamp -> {"panoptic": Image, "segments": Segmentation} of the bag's ground-truth topics."""
    gt: dict = {}
    for t, _, msg in read_messages(bag, [f"{topic}/ground_truth/panoptic", f"{topic}/ground_truth/segments"]):
        gt.setdefault(_stamp(msg), {})["panoptic" if t.endswith("panoptic") else "segments"] = msg
    return gt


def _objects(panoptic: np.ndarray, segmentation, things_only: bool = True) -> list:
    """TrackedObjects of the tracked thing segments of one Segmentation (mask, track id, 3D centroid)."""
    from maskclip_ros.evaluation.tracking import TrackedObject

    out = []
    for inst in segmentation.instances:
        if inst.track_id and (inst.is_thing or not things_only):
            c = inst.geometry.centroid
            out.append(TrackedObject(mask=panoptic == inst.id, track_id=int(inst.track_id),
                                     centroid=np.array([c.x, c.y, c.z]) if inst.geometry.valid else None))
    return out


def tracking_quality(bag: Path, topic: str, outputs: dict) -> dict:
    """IDF1, MOTA, ID switches (mask IoU matching) of the node's track ids over the frames it processed, and
    the 3D centroid error against the ground truth (``evaluation.tracking``)."""
    from maskclip_ros.evaluation.tracking import TrackingEvalConfig, TrackingEvaluator

    gt = _ground_truth(bag, topic)
    if not any(i.track_id for g in gt.values() for i in g["segments"].instances):
        return {"note": "the bag has no ground-truth track ids"}
    evaluator = TrackingEvaluator(config=TrackingEvalConfig(iou_threshold=0.5, min_gt_area=0))
    for stamp in sorted(outputs["segments"]):
        if stamp in gt and stamp in outputs["panoptic"]:
            truth = _objects(image_pixels(gt[stamp]["panoptic"]), gt[stamp]["segments"])
            evaluator.update("demo", truth, _objects(image_pixels(outputs["panoptic"][stamp]), outputs["segments"][stamp]))
    metrics = evaluator.compute()
    return {k: metrics[k] for k in ("idf1", "mota", "id_switches", "num_frames", "centroid_error_median",
                                    "centroid_error_rel_median", "centroid_error_rel_p90") if k in metrics}


def _camera_k(bag: Path):
    """The 3x3 K of the bag's first camera_info (None without one)."""
    with_info = [m for _, _, m in read_messages(bag) if hasattr(m, "k") and hasattr(m, "distortion_model")]
    return np.asarray(with_info[0].k, np.float64).reshape(3, 3) if with_info else None


def draw_boxes(picture: np.ndarray, segmentation, k: np.ndarray | None) -> np.ndarray:
    """The segments' 3D boxes projected into the image (wireframes), on a copy of ``picture``."""
    import cv2

    out = picture.copy()
    if segmentation is None or k is None:
        return out
    signs = np.array([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)])  # (8, 3)
    edges = [(a, b) for a in range(8) for b in range(a + 1, 8) if bin(a ^ b).count("1") == 1]
    for inst in segmentation.instances:
        g = inst.geometry
        if not (g.valid and inst.is_thing):
            continue
        centre = np.array([g.box_center.position.x, g.box_center.position.y, g.box_center.position.z])
        corners = centre + signs * np.array([g.box_size.x, g.box_size.y, g.box_size.z])  # (8, 3) metres
        uv = (k @ corners.T).T
        uv = (uv[:, :2] / uv[:, 2:3]).round().astype(int)
        for a, b in edges:
            cv2.line(out, tuple(uv[a]), tuple(uv[b]), (255, 255, 0), 1, cv2.LINE_AA)
    return out


def write_outputs(summary: dict, out: Path, gif_frame_ms: int, gif_scale: float) -> None:
    """Overlay PNGs + GIF, summary.json and summary.md (``summary["overlays"]`` is consumed); prints the
    markdown."""
    from PIL import Image as PILImage

    (out / "overlays").mkdir(exist_ok=True)
    frames, k = [], summary.pop("camera_k")
    for index, (msg, segmentation) in enumerate(summary.pop("overlays")):
        picture = PILImage.fromarray(draw_boxes(image_pixels(msg), segmentation, k))
        picture.save(out / "overlays" / f"{index:04d}.png")
        frames.append(picture.resize((round(picture.width * gif_scale), round(picture.height * gif_scale))))
    if frames:
        frames[0].save(out / "demo.gif", save_all=True, append_images=frames[1:], duration=gif_frame_ms, loop=0)
    summary["overlay_images"] = len(frames)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    text = markdown(summary, out)
    (out / "summary.md").write_text(text)
    print(text)


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.1f}"


def _tracking_line(t: dict) -> str:
    if "idf1" not in t:
        return f"- tracking: {t.get('note', 'not evaluated')}"
    rel = t.get("centroid_error_rel_median")
    return (f"- tracking over {t['num_frames']} processed frames: IDF1 {_fmt(100 * t['idf1'])}%, MOTA "
            f"{_fmt(100 * t['mota'])}%, {t['id_switches']} ID switches; 3D centroid error median "
            f"{'n/a' if rel is None else f'{100 * rel:.1f}% of the depth'}")


def markdown(s: dict, out: Path) -> str:
    lines = ["# maskclip_ros demo", "",
             f"- frames in: {s['frames_in']}, frames out: {s['frames_out']} (the node works on the newest frame "
             f"only; {s['frames_without_output']} frames were superseded while it was busy; node counters: "
             f"{s['node_counted']})",
             f"- end-to-end latency (camera frame received -> segments received): median "
             f"{_fmt(s['latency_ms']['median'])} ms, p90 {_fmt(s['latency_ms']['p90'])} ms",
             "- node stage latency (ms, mean over the last window): "
             + ", ".join(f"{k} {v:.1f}" for k, v in s["node_stage_latency_ms"].items()),
             f"- vocabulary switched mid-stream: {s['vocabulary_switch'].get('message', '')}",
             f"- wall time of the session: {s['wall_s']} s",
             _tracking_line(s["tracking"]), "", "| vocabulary | frames | PQ | PQ things | PQ stuff |",
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
