"""`maskclip-ros bench-node`: what the node costs on top of the model.

The same frames are timed twice in one run: model only (``Segmenter.segment`` in this process) and end to
end (publish an Image to the node running in its own process -> the last of its panoptic / semantic /
segments outputs for that stamp received here). One frame is in flight at a time, so nothing is dropped
and the difference is conversion, publishing and transport. Writes JSON.

With the external proposals backend (or no proposer configured) both paths get the scenes' ground-truth
segments as proposals: passed to segment() directly, and published as a label image to the node.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

OUTPUTS = ("panoptic", "semantic", "segments")


def _frames(count: int, width: int, height: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """`count` generated scenes: ((H, W, 3) uint8 RGB, (H, W) int32 segment ids used as proposals)."""
    from maskclip_ros.data.world import WorldConfig, generate_scene

    cfg = WorldConfig.load(width=width, height=height)
    scenes = [generate_scene(seed, i, cfg) for i in range(count)]
    return [(s.image, s.panoptic.astype(np.int32)) for s in scenes]


def _external(params: dict) -> bool:
    return params.get("proposals", {}).get("backend", "external") == "external"


def _summary(ms: list[float]) -> dict[str, float]:
    values = np.asarray(ms)
    return {"median": float(np.median(values)), "mean": float(values.mean()),
            "p90": float(np.percentile(values, 90)), "min": float(values.min())}


def _params(params_file: str | None) -> dict:
    """config/default.yaml updated with `params_file` (as the node sees them)."""
    from maskclip_ros.config import deep_update, load_params

    params = load_params()
    return deep_update(params, load_params(params_file)) if params_file else params


def time_model(params_file: str | None, frames: list[tuple[np.ndarray, np.ndarray]], warmup: int) -> list[float]:
    """Milliseconds of Segmenter.segment per frame (after `warmup` untimed frames), this process."""
    import torch

    from maskclip_ros.pipeline import build_segmenter
    from maskclip_ros.ros.frames import labels_to_masks

    params = _params(params_file)
    if params["num_threads"] > 0:
        torch.set_num_threads(params["num_threads"])
    segmenter = build_segmenter(params, device=params["device"], precision=params["precision"])
    vocab = params["vocabulary"]
    vocabulary = segmenter.make_vocabulary(vocab["class_names"], vocab["is_thing"], vocab["prompt_templates"])
    external = _external(params)
    times = []
    for index, (image, labels) in enumerate(frames):
        masks = labels_to_masks(labels) if external else None
        start = time.perf_counter()
        segmenter.segment(image, vocabulary, external_masks=masks)
        if index >= warmup:
            times.append(1000 * (time.perf_counter() - start))
    return times


def time_node(params_file: str | None, frames: list[tuple[np.ndarray, np.ndarray]], warmup: int, log: Path,
              timeout: float = 120.0) -> list[float]:
    """Milliseconds from publishing each frame to receiving all of the node's outputs for it."""
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from maskclip_ros.msg import Segmentation
    from maskclip_ros.ros.conversions import ImageConverter

    cmd = [sys.executable, "-m", "maskclip_ros.cli", "node", *(["--params-file", params_file] if params_file else []),
           "--ros-args", *[arg for topic in ("/image", "/proposals")  # reliable, as the bench publishes
                           for arg in ("-p", f"qos_overrides.{topic}.subscription.reliability:=reliable")]]
    with open(log, "w") as log_file:
        proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    rclpy.init()
    node = rclpy.create_node("maskclip_bench")
    try:
        arrived: dict[tuple[str, int], float] = {}
        qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        for name in OUTPUTS:
            node.create_subscription(Segmentation if name == "segments" else Image, f"/maskclip/{name}",
                                     lambda msg, n=name: arrived.setdefault(
                                         (n, msg.header.stamp.sec), time.perf_counter()), qos)
        publisher = node.create_publisher(Image, "/image", qos)
        proposals = node.create_publisher(Image, "/proposals", qos) if _external(_params(params_file)) else None
        _spin_until(node, lambda: publisher.get_subscription_count() > 0 and all(
            node.count_publishers(f"/maskclip/{n}") for n in OUTPUTS), timeout, proc, "the node to become active")
        converter, times = ImageConverter(), []
        for index, (image, labels) in enumerate(frames):
            msg = converter.rgb_to_image(image)
            msg.header.stamp.sec, msg.header.frame_id = index + 1, "camera"
            start = time.perf_counter()
            if proposals is not None:
                proposals.publish(converter.labels_to_image(labels, "32SC1", msg.header))
            publisher.publish(msg)
            _spin_until(node, lambda: all((n, index + 1) in arrived for n in OUTPUTS), timeout, proc,
                        f"the outputs of frame {index}")
            if index >= warmup:
                times.append(1000 * (max(arrived[(n, index + 1)] for n in OUTPUTS) - start))
        return times
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(30)


def _spin_until(node, condition, timeout: float, proc, what: str) -> None:
    import rclpy

    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise RuntimeError(f"the node exited (code {proc.returncode}) while waiting for {what}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        rclpy.spin_once(node, timeout_sec=0.005)


def bench(params_file: str | None, count: int, warmup: int, width: int, height: int, out: Path,
          seed: int = 0) -> dict:
    """Run both timings on the same frames; returns (and writes to `out`) the JSON report."""
    frames = _frames(count + warmup, width, height, seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    model_ms = time_model(params_file, frames, warmup)
    node_ms = time_node(params_file, frames, warmup, out.with_suffix(".node.log"))
    model, node = _summary(model_ms), _summary(node_ms)
    report = {
        "frames": count, "warmup": warmup, "width": width, "height": height,
        "params_file": params_file or "config/default.yaml", "input_qos": "reliable",
        "model_ms": model, "end_to_end_ms": node,
        "overhead_ms_median": node["median"] - model["median"],
        "overhead_ratio_median": node["median"] / model["median"] - 1,
        "target_overhead_ratio": 0.05,
        "per_frame": {"model_ms": model_ms, "end_to_end_ms": node_ms},
    }
    out.write_text(json.dumps(report, indent=2))
    return report
