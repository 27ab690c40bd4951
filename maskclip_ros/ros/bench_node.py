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

import dataclasses
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from maskclip_ros.ros.interface import NODE_NAME, parse_diagnostics
from maskclip_ros.ros.spin import spin_until, start_process, stop_process

OUTPUTS = ("panoptic", "semantic", "segments")
INFERENCE_STAGES = ("proposals", "clip", "merge")
SPIN_STEP_S = 0.005  # fine-grained spinning: the end-to-end time is measured here
WHOLE_RUN_WINDOW_S = 600.0  # the node's diagnostics average over the whole run (up to 10 minutes)


@dataclass(frozen=True)
class NodeBench:
    """What `maskclip-ros bench-node` measures (its options; defaults in config/commands.yaml)."""
    params_files: tuple[str, ...]  # node params files over config/default.yaml
    frames: int                    # timed frames
    warmup: int                    # untimed frames first
    width: int                     # frame size
    height: int
    seed: int                      # world seed of the frames
    timeout: float                 # seconds to wait for the node and for each frame's outputs
    target_overhead: float         # the node may add at most this fraction to the model's time
    out: Path                      # JSON report path


def _frames(count: int, width: int, height: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """`count` generated scenes: ((H, W, 3) uint8 RGB, (H, W) int32 segment ids used as proposals)."""
    from maskclip_ros.data.world import default_world_config, generate_scene

    cfg = dataclasses.replace(default_world_config(), width=width, height=height)
    scenes = [generate_scene(seed, i, cfg) for i in range(count)]
    return [(s.image, s.panoptic.astype(np.int32)) for s in scenes]


def _summary(ms: list[float]) -> dict[str, float]:
    values = np.asarray(ms)
    return {"median": float(np.median(values)), "mean": float(values.mean()),
            "p90": float(np.percentile(values, 90)), "min": float(values.min())}


class _Segmenter:
    """The model core in this process, built from the same parameters as the node, run the way the node
    runs it: in one worker thread (torch's CPU threading differs between the main thread and others; on a
    loaded machine a 2-thread pool driven from the main thread was measured 4-5x slower)."""

    def __init__(self, config) -> None:
        from maskclip_ros.model.vocabulary import split_kind_suffixes
        from maskclip_ros.ros.startup import build_segmenter

        self.segmenter = build_segmenter(config)
        vocab = config.vocabulary
        names, flags = split_kind_suffixes(vocab.class_names, vocab.is_thing or None)
        self.vocabulary = self.segmenter.make_vocabulary(names, flags, vocab.prompt_templates)
        self.external = config.proposals.resolved_backend == "external"
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
    """The node in its own process plus a client node here that publishes frames and times the outputs.
    Use as a context manager: the node process is stopped and rclpy shut down even when start-up fails."""

    def __init__(self, params_files, external: bool, log: Path, timeout: float) -> None:
        overrides = [f"qos_overrides.{t}.subscription.reliability:=reliable" for t in ("/image", "/proposals")]
        overrides.append(f"diagnostics.window:={WHOLE_RUN_WINDOW_S}")
        self.cmd = [sys.executable, "-m", "maskclip_ros.cli", "node",
                    *[a for f in params_files for a in ("--params-file", str(f))],
                    "--ros-args", *[a for value in overrides for a in ("-p", value)]]
        self.external, self.log, self.timeout = external, log, timeout
        self.proc = self.node = None
        self.arrived: dict[tuple[str, int], float] = {}
        self.diagnostics: list[dict] = []

    def __enter__(self) -> "_NodeRun":
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        from maskclip_ros.msg import Segmentation
        from maskclip_ros.ros.conversions import ImageConverter

        self.proc = start_process(self.cmd, self.log)
        rclpy.init()
        self.node, self.converter = rclpy.create_node("maskclip_bench"), ImageConverter()
        qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        for name in OUTPUTS:
            self.node.create_subscription(Segmentation if name == "segments" else Image, f"/{NODE_NAME}/{name}",
                                          lambda msg, n=name: self.arrived.setdefault(
                                              (n, msg.header.stamp.sec), time.perf_counter()), qos)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self.images = self.node.create_publisher(Image, "/image", qos)
        self.proposals = self.node.create_publisher(Image, "/proposals", qos) if self.external else None
        self._spin_until(lambda: self.images.get_subscription_count() > 0 and all(
            self.node.count_publishers(f"/{NODE_NAME}/{n}") for n in OUTPUTS), "the node to become active")
        return self

    def __exit__(self, *exc) -> None:
        import rclpy

        if self.node is not None:
            self.node.destroy_node()
        rclpy.try_shutdown()
        if self.proc is not None:
            stop_process(self.proc)

    def _on_diagnostics(self, msg) -> None:
        values = parse_diagnostics(msg, f"/{NODE_NAME}")
        if values is not None:
            self.diagnostics.append(values)

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
        return dict(self.diagnostics[-1]["latency_ms"])

    def _spin_until(self, condition, what: str) -> None:
        spin_until(self.node, condition, self.timeout, what, watch={"node": self.proc}, step=SPIN_STEP_S)


def bench(opts: NodeBench) -> dict:
    """Time every frame both ways (alternating which goes first); returns and writes the JSON report."""
    from maskclip_ros.ros.node_config import NodeConfig

    count, warmup, out = opts.frames, opts.warmup, opts.out
    frames = _frames(count + warmup, opts.width, opts.height, opts.seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    config = NodeConfig.load(*opts.params_files)
    external = config.proposals.resolved_backend == "external"
    with _NodeRun(opts.params_files, external, out.with_suffix(".node.log"), opts.timeout) as run:
        local = _Segmenter(config)
        model_all, node_all = [], []
        for index, (image, labels) in enumerate(frames):
            if index % 2:
                node_all.append(run.time_ms(index + 1, image, labels))
                model_all.append(local.time_ms(image, labels))
            else:
                model_all.append(local.time_ms(image, labels))
                node_all.append(run.time_ms(index + 1, image, labels))
        stages = run.node_stages_ms()  # means over every frame the node processed (warm-up included)
    model_ms, node_ms = model_all[warmup:], node_all[warmup:]
    model, node = _summary(model_ms), _summary(node_ms)
    node_inference = sum(stages.get(s, 0.0) for s in INFERENCE_STAGES)
    paired = np.asarray(node_ms) / np.asarray(model_ms) - 1
    report = {
        "frames": count, "warmup": warmup, "width": opts.width, "height": opts.height,
        "params_files": list(opts.params_files) or ["config/default.yaml"], "input_qos": "reliable",
        "model_ms": model, "end_to_end_ms": node,
        "overhead_ms_median": node["median"] - model["median"],
        "overhead_ratio_median": node["median"] / model["median"] - 1,
        "overhead_ratio_paired_median": float(np.median(paired)),
        "node_stage_means_ms": stages,
        "node_inference_mean_ms": node_inference,
        "end_to_end_mean_all_frames_ms": float(np.mean(node_all)),
        "overhead_vs_node_inference_ratio": (float(np.mean(node_all)) - node_inference) / node_inference,
        "target_overhead_ratio": opts.target_overhead,
        "per_frame": {"model_ms": model_ms, "end_to_end_ms": node_ms},
    }
    out.write_text(json.dumps(report, indent=2))
    return report
