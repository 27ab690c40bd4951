"""`maskclip-ros bench-node`: what the node costs on top of the model.

The same frames are timed side by side in one run, interleaved frame by frame so that both see the same
machine load: model only (``Segmenter.segment`` in this process) and end to end (publish an Image to the node
running in its own process -> the last of its panoptic / semantic / segments outputs for that stamp received
here). One frame is in flight at a time, so nothing is dropped; the difference is conversion, publishing and
transport. The node's own per-stage times (from /diagnostics) give a second, load-independent view:
end-to-end minus the node's inference on the very same frames. Writes JSON.

With the external proposals backend both paths get the scenes' ground-truth segments as proposals: passed
to segment() directly, and published as a label image to the node.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

OUTPUTS = ("panoptic", "semantic", "segments")
INFERENCE_STAGES = ("proposals", "clip", "merge")


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


class _Segmenter:
    """The model core in this process, built from the same parameters as the node, run the way the node
    runs it: in one worker thread (torch's CPU threading differs between the main thread and others; on a
    loaded machine a 2-thread pool driven from the main thread was measured 4-5x slower)."""

    def __init__(self, params: dict) -> None:
        import torch

        from maskclip_ros.pipeline import build_segmenter

        if params["num_threads"] > 0:
            torch.set_num_threads(params["num_threads"])
        self.segmenter = build_segmenter(params, device=params["device"], precision=params["precision"])
        vocab = params["vocabulary"]
        self.vocabulary = self.segmenter.make_vocabulary(vocab["class_names"], vocab["is_thing"],
                                                         vocab["prompt_templates"])
        self.external = _external(params)
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bench-worker")

    def time_ms(self, image: np.ndarray, labels: np.ndarray) -> float:
        from maskclip_ros.ros.frames import labels_to_masks

        masks = labels_to_masks(labels) if self.external else None
        return self.worker.submit(self._timed_segment, image, masks).result()

    def _timed_segment(self, image: np.ndarray, masks: np.ndarray | None) -> float:
        start = time.perf_counter()
        self.segmenter.segment(image, self.vocabulary, external_masks=masks)
        return 1000 * (time.perf_counter() - start)


class _NodeRun:
    """The node in its own process plus a client node here that publishes frames and times the outputs."""

    def __init__(self, params_file: str | None, external: bool, log: Path, timeout: float = 120.0) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        from maskclip_ros.msg import Segmentation
        from maskclip_ros.ros.conversions import ImageConverter

        overrides = [f"qos_overrides.{t}.subscription.reliability:=reliable" for t in ("/image", "/proposals")]
        overrides.append("diagnostics.window:=600.0")  # averages over the whole run (up to 10 minutes)
        cmd = [sys.executable, "-m", "maskclip_ros.cli", "node",
               *(["--params-file", params_file] if params_file else []),
               "--ros-args", *[a for value in overrides for a in ("-p", value)]]
        with open(log, "w") as log_file:
            self.proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
        self.timeout, self.converter = timeout, ImageConverter()
        rclpy.init()
        self.node = rclpy.create_node("maskclip_bench")
        self.arrived: dict[tuple[str, int], float] = {}
        self.diagnostics: list[dict[str, str]] = []
        qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        for name in OUTPUTS:
            self.node.create_subscription(Segmentation if name == "segments" else Image, f"/maskclip/{name}",
                                          lambda msg, n=name: self.arrived.setdefault(
                                              (n, msg.header.stamp.sec), time.perf_counter()), qos)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", lambda msg: self.diagnostics.extend(
            {kv.key: kv.value for kv in st.values} for st in msg.status if st.name == "/maskclip: segmentation"), 10)
        self.images = self.node.create_publisher(Image, "/image", qos)
        self.proposals = self.node.create_publisher(Image, "/proposals", qos) if external else None
        self._spin_until(lambda: self.images.get_subscription_count() > 0 and all(
            self.node.count_publishers(f"/maskclip/{n}") for n in OUTPUTS), "the node to become active")

    def time_ms(self, stamp: int, image: np.ndarray, labels: np.ndarray) -> float:
        msg = self.converter.rgb_to_image(image)
        msg.header.stamp.sec, msg.header.frame_id = stamp, "camera"
        label_msg = self.converter.labels_to_image(labels, "32SC1", msg.header) if self.proposals else None
        start = time.perf_counter()
        if label_msg is not None:
            self.proposals.publish(label_msg)
        self.images.publish(msg)
        self._spin_until(lambda: all((n, stamp) in self.arrived for n in OUTPUTS), f"the outputs of {stamp}")
        return 1000 * (max(self.arrived[(n, stamp)] for n in OUTPUTS) - start)

    def node_stages_ms(self) -> dict[str, float]:
        """The node's mean per-stage times (ms) over everything it processed, from a fresh /diagnostics."""
        count = len(self.diagnostics)
        self._spin_until(lambda: len(self.diagnostics) > count, "a diagnostics message")
        values = self.diagnostics[-1]
        return {k[len("latency_"):-len("_ms")]: float(v) for k, v in values.items()
                if k.startswith("latency_") and k.endswith("_ms") and not k.endswith("_max_ms")}

    def _spin_until(self, condition, what: str) -> None:
        import rclpy

        deadline = time.monotonic() + self.timeout
        while not condition():
            if self.proc.poll() is not None:
                raise RuntimeError(f"the node exited (code {self.proc.returncode}) while waiting for {what}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {what}")
            rclpy.spin_once(self.node, timeout_sec=0.005)

    def close(self) -> None:
        import rclpy

        self.node.destroy_node()
        rclpy.try_shutdown()
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            self.proc.wait(30)


def bench(params_file: str | None, count: int, warmup: int, width: int, height: int, out: Path,
          seed: int = 0) -> dict:
    """Time every frame both ways (alternating which goes first); returns and writes the JSON report."""
    frames = _frames(count + warmup, width, height, seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    params = _params(params_file)
    run = _NodeRun(params_file, _external(params), out.with_suffix(".node.log"))
    try:
        local = _Segmenter(params)
        model_all, node_all = [], []
        for index, (image, labels) in enumerate(frames):
            if index % 2:
                node_all.append(run.time_ms(index + 1, image, labels))
                model_all.append(local.time_ms(image, labels))
            else:
                model_all.append(local.time_ms(image, labels))
                node_all.append(run.time_ms(index + 1, image, labels))
        stages = run.node_stages_ms()  # means over every frame the node processed (warm-up included)
    finally:
        run.close()
    model_ms, node_ms = model_all[warmup:], node_all[warmup:]
    model, node = _summary(model_ms), _summary(node_ms)
    node_inference = sum(stages.get(s, 0.0) for s in INFERENCE_STAGES)
    paired = np.asarray(node_ms) / np.asarray(model_ms) - 1
    report = {
        "frames": count, "warmup": warmup, "width": width, "height": height,
        "params_file": params_file or "config/default.yaml", "input_qos": "reliable",
        "model_ms": model, "end_to_end_ms": node,
        "overhead_ms_median": node["median"] - model["median"],
        "overhead_ratio_median": node["median"] / model["median"] - 1,
        "overhead_ratio_paired_median": float(np.median(paired)),
        "node_stage_means_ms": stages,
        "node_inference_mean_ms": node_inference,
        "end_to_end_mean_all_frames_ms": float(np.mean(node_all)),
        "overhead_vs_node_inference_ratio": (float(np.mean(node_all)) - node_inference) / node_inference,
        "target_overhead_ratio": 0.05,
        "per_frame": {"model_ms": model_ms, "end_to_end_ms": node_ms},
    }
    out.write_text(json.dumps(report, indent=2))
    return report
