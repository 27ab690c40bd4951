"""`maskclip-ros bench-model` runs end to end on a tiny model and writes consistent JSON."""
from __future__ import annotations

import json

import numpy as np
import pytest

from maskclip_ros.bench_model import proposals
from maskclip_ros.cli import main


def test_bench_model_writes_side_by_side_json(tmp_path):
    out = tmp_path / "bench.json"
    code = main(["bench-model", "--model", "maskclip-ros-test-tiny", "--masks", "1", "3", "--width", "64",
                 "--height", "48", "--short-side", "48", "--repeats", "2", "--threads", "1", "--no-memory",
                 "--out", str(out)])
    assert code == 0
    results = json.loads(out.read_text())
    assert results["input_size"] == [48, 64] and results["rma_layers_1based"] == [1, 2, 3, 4]
    lat, summary = results["latency_s"], results["summary"]
    for m in ("1", "3"):
        assert summary["crop_over_tokens"][m] == pytest.approx(lat["crop"][m] / lat["tokens"][m])
        assert summary["rma_over_tokens"][m] == pytest.approx(lat["rma"][m] / lat["tokens"][m])
        assert len(results["samples_s"]["rma"][m]) == 2
    assert set(summary["targets"]) == {"tokens >= 10x faster than crop at M=3",
                                       "each extra 10 masks <= 2.5% of a frame (tokens)", "rma <= 1.3x tokens at M=3"}


def test_benchmark_proposals_are_seeded_and_varied():
    a, b = proposals(20, 48, 64), proposals(20, 48, 64)
    assert np.array_equal(a, b) and a.dtype == np.float32
    areas = a.sum((1, 2))
    assert areas.min() > 0 and areas.max() > 3 * areas.min()
