"""`maskclip-ros bench-model` runs end to end on a tiny model and writes consistent JSON."""
from __future__ import annotations

import json

import numpy as np

from maskclip_ros.bench.model import ellipse_masks
from maskclip_ros.cli import main

TINY = ["--model", "maskclip-ros-test-tiny", "--masks", "1", "3", "--width", "64", "--height", "48",
        "--short-side", "48", "--repeats", "2", "--threads", "1", "--no-memory"]


def test_bench_model_writes_side_by_side_json(tmp_path):
    out = tmp_path / "bench.json"
    # targets given on the command line: an unreachable one must be reported missed, a trivial one met
    assert main(["bench-model", *TINY, "--out", str(out), "--target-rma-over-tokens", "1e-6",
                 "--target-crop-over-tokens", "1e-6"]) == 0
    results = json.loads(out.read_text())
    assert results["input_size"] == [48, 64] and results["rma_layers_1based"] == [1, 2, 3, 4]
    for mode in ("crop", "tokens", "rma"):
        for m in ("1", "3"):
            samples = results["samples_s"][mode][m]
            assert len(samples) == 2 and all(s > 0 for s in samples)
            assert min(samples) <= results["latency_s"][mode][m] <= max(samples)  # the median of the repeats
    targets = results["summary"]["targets"]
    assert targets["rma <= 1e-06x tokens at M=3"] is False
    assert targets["tokens >= 1e-06x faster than crop at M=3"] is True


def test_benchmark_proposals_are_seeded_and_varied():
    a, b = ellipse_masks(20, 48, 64, seed=0), ellipse_masks(20, 48, 64, seed=0)
    assert np.array_equal(a, b) and a.dtype == np.float32
    assert not np.array_equal(a, ellipse_masks(20, 48, 64, seed=1))
    areas = a.sum((1, 2))
    assert areas.min() > 0 and areas.max() > 3 * areas.min()
