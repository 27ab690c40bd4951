"""The node's inference worker: one thread that takes the newest frame from the one-slot buffer, runs the
model core (Segmenter, then the tracking / depth stage) with one config and one vocabulary for the whole
frame, publishes, and records the per-stage times. A frame that fails is counted and logged (throttled);
the worker goes on."""
from __future__ import annotations

import threading
import time

from maskclip_ros.ros.frames import LatestFrameSlot, stamp_key, stamp_seconds
from maskclip_ros.ros.messages import SegmentTrack

FAILED_FRAME_WARN_S = 1.0
# Why a frame had no 3D (tracking.stage.DepthProblem values) -> the stats event it counts as; missing depth
# and camera_info are counted by the inputs, where they are noticed.
DEPTH_PROBLEM_EVENTS = {"bad_camera_info": "camera_info_bad", "bad_encoding": "depth_bad", "bad_shape": "depth_bad",
                        "size_mismatch": "depth_bad", "all_invalid": "depth_all_invalid"}


class InferenceWorker:
    """Runs ``process`` for every frame taken from ``slot`` until the slot is closed (``join`` waits)."""

    def __init__(self, *, slot: LatestFrameSlot, node, outputs, inputs, stats) -> None:
        self._slot, self._node, self._outputs, self._inputs, self._stats = slot, node, outputs, inputs, stats
        self._thread = threading.Thread(target=self._run, name="maskclip-worker", daemon=True)
        self._thread.start()

    def join(self) -> None:
        self._thread.join()

    def _run(self) -> None:
        while (frame := self._slot.take()) is not None:
            try:
                self._process(frame)
            except Exception as error:  # noqa: BLE001 - one bad frame must not stop the node
                self._stats.count("failed")
                self._node.get_logger().error(f"frame {stamp_key(frame.header)} failed: {type(error).__name__}: "
                                              f"{error}", throttle_duration_sec=FAILED_FRAME_WARN_S)

    def _process(self, frame) -> None:
        node = self._node
        config, vocabulary = node.config, node.vocabulary  # one config, one vocabulary per frame
        result = node.segmenter.segment(frame.rgb, vocabulary, external_masks=frame.external_masks,
                                        with_embeddings=config.publish_embeddings or config.tracking.enabled)
        depth = (self._inputs.depth_for(frame, config.depth.stamp_tolerance_s, config.depth.wait_s)
                 if config.depth.enabled else None)
        tracked = node.perception.step(result, stamp_seconds(frame.header), *(depth or (None, None)))
        if tracked.depth_problem is not None and tracked.depth_problem.value in DEPTH_PROBLEM_EVENTS:
            self._stats.count(DEPTH_PROBLEM_EVENTS[tracked.depth_problem.value])
            node.get_logger().warning(f"frame {stamp_key(frame.header)} without 3D: depth "
                                      f"{tracked.depth_problem.value}", throttle_duration_sec=FAILED_FRAME_WARN_S)
        elif tracked.depth_m is not None:
            self._stats.count("with_depth")
        tracks = [SegmentTrack(i, g) for i, g in zip(tracked.track_ids, tracked.geometry)]
        start = time.monotonic()
        drawn = self._outputs.result(frame, result, tracks, with_embeddings=config.publish_embeddings,
                                     overlay=config.overlay, cloud_stride=config.depth.cloud_stride,
                                     depth=(tracked.depth_m, tracked.intrinsics) if tracked.depth_m is not None else None)
        if drawn:
            self._stats.count("overlay")
        done = time.monotonic()
        for stage, ms in {**result.timings_ms, **tracked.timings_ms}.items():
            self._stats.latency(stage, ms, done)
        self._stats.latency("publish", 1000 * (done - start), done)
        self._stats.latency("total", 1000 * (done - frame.received), done)
        self._stats.count("published", done)
