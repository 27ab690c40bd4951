"""Issue 7, overload (cross-process): 640x480 frames at 30 Hz for 10 s into a node whose inference is slower
than the frame period (the 480x640 CLIP config, random init, default sensor-data QoS). The one-slot buffer
keeps latency bounded, drops grow, memory stays flat and the vocabulary service still answers at once."""
import time

import numpy as np
import pytest
import rclpy

from helpers.node_harness import node_session, scene, write_params
from maskclip_ros.srv import SetVocabulary

pytestmark = [pytest.mark.ros, pytest.mark.slow]
RATE_HZ, SECONDS = 30.0, 10.0
PARAMS = {
    "clip": {"model_name": "maskclip-ros-tiny-vit16", "short_side": 480},
    "num_threads": 1,
    "diagnostics": {"period": 0.5, "window": 4.0},
}  # inputs stay reliable (TINY_PARAMS): best-effort 640x480 frames are fragmented and lost on plain Fast DDS


def _inference_ms(values: dict, statistic: str = "") -> float:
    """Mean (or with statistic "_max", the sum of the per-stage maxima) of the model's time per frame."""
    return sum(values[f"latency{statistic}_ms"][stage] for stage in ("proposals", "clip", "merge"))


def test_overload_latency_bounded_drops_counted_memory_flat_service_responsive(tmp_path, ros_isolation):
    rgb, labels = scene(1, height=480, width=640)
    with node_session(tmp_path, write_params(tmp_path / "params.yaml", PARAMS), name="overload") as (node, peer):
        peer.wait_active()
        sent: dict[tuple[int, int], float] = {}
        client = peer.node.create_client(SetVocabulary, "/maskclip/set_vocabulary")
        peer.spin_until(client.service_is_ready, 30, "the vocabulary service")
        start, index, rss, drops, service = time.monotonic(), 0, {}, {}, {}
        while (now := time.monotonic()) - start < SECONDS:
            if now >= start + index / RATE_HZ:  # the next frame is due
                stamp = (1000 + index, 0)
                sent[stamp] = peer.publish(rgb, labels, stamp)
                index += 1
            elapsed = now - start
            for mark in (3.0, 6.0):  # after warm-up, and later
                if elapsed >= mark and mark not in rss:
                    rss[mark] = node.rss_mb()
                    drops[mark] = int(peer.diagnostics[-1]["dropped_frames"])
            if elapsed >= 5.0 and "future" not in service:
                service["sent"] = time.monotonic()
                service["future"] = client.call_async(SetVocabulary.Request(
                    class_names=["traffic cone", "forklift", "pallet", "concrete floor"],
                    is_thing=[True, True, True, False]))
            if "future" in service and "answered" not in service and service["future"].done():
                service["answered"] = time.monotonic()
            rclpy.spin_once(peer.node, timeout_sec=0.002)
        peer.spin_until(lambda: service["future"].done(), 10, "the vocabulary reply")
        service.setdefault("answered", time.monotonic())
        end_values = peer.latest_diagnostics()
        rss["end"] = node.rss_mb()

    assert service["future"].result().success
    assert service["answered"] - service["sent"] < 1.0, "the service answers during inference"

    inference = _inference_ms(end_values)
    assert inference > 1000 / RATE_HZ, f"the test needs inference ({inference:.0f} ms) slower than the frames"
    received = peer.outputs["segments"]
    latencies = np.array([1000 * (received[s][1] - sent[s]) for s in received if s in sent])
    processed = len(latencies)
    assert 5 <= processed < index / 2, f"{processed} of {index} frames processed: the node keeps up by dropping"
    # Receive -> publish in the node: a frame waits at most for the inference in progress, then its own.
    worst = 2 * _inference_ms(end_values, "_max") + end_values["latency_max_ms"]["publish"]
    assert end_values["latency_max_ms"]["total"] <= worst, end_values
    # Publish -> output here (adds transport both ways): typically below two inference times.
    assert np.median(latencies) < 2 * inference, (latencies, inference)
    # Drops are counted and keep growing while the camera is faster than the model.
    assert 0 < drops[3.0] < drops[6.0] < int(end_values["dropped_frames"])
    assert int(end_values["frames_received"]) >= index * 0.8, "the callbacks take (nearly) every frame in time"
    # Memory stays flat: no queue grows with the backlog.
    assert rss["end"] - rss[3.0] < 40, rss
