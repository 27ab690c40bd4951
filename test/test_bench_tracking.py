"""bench_tracking: the frame time with and without tracking + 3D, side by side (tiny model, tiny frame)."""
from __future__ import annotations

import numpy as np

from maskclip_ros.bench.model import ModelBench
from maskclip_ros.bench.tracking import DEPTH_RANGE_M, bench_tracking, report, synthetic_depth_mm


def test_bench_tracking_measures_both_variants():
    opts = ModelBench(model="maskclip-ros-tiny-vit16", masks=(4, 12), width=96, height=64, short_side=64, repeats=2,
                      threads=1, device="cpu", seed=0, memory=False, params_files=(), sets=(), targets={})
    results = bench_tracking(opts, target_overhead=0.05)
    assert results["masks"] == 12 and results["frame"] == [64, 96]
    assert len(results["samples_s"]["with"]) == len(results["samples_s"]["without"]) == 2
    f = results["frame_s"]
    assert np.isclose(results["overhead"], f["with"] / f["without"] - 1.0)
    assert results["target_met"] == (results["overhead"] <= 0.05)
    seg = results["segments"]
    assert seg["segments"] > 0 and seg["with_geometry"] == seg["segments"]  # the synthetic depth covers all
    assert seg["tracked"] == seg["things"]  # steady state: every thing confirmed after the warm-up frames
    assert results["stage_ms"]["geometry"] > 0 and "overhead" in report(results)


def test_synthetic_depth_is_a_receding_plane():
    depth = synthetic_depth_mm(48, 64)
    assert depth.dtype == np.uint16 and depth.shape == (48, 64)
    assert depth[0, 0] == DEPTH_RANGE_M[1] * 1000 and depth[-1, 0] == DEPTH_RANGE_M[0] * 1000
    assert (np.diff(depth[:, 0].astype(int)) < 0).all()


def test_bench_tracking_command_writes_json(tmp_path, capsys):
    import json

    from maskclip_ros.cli import main
    out = tmp_path / "tracking.json"
    argv = ["bench-tracking", "--model", "maskclip-ros-tiny-vit16", "--masks", "6", "--width", "96", "--height", "64",
            "--short-side", "64", "--repeats", "1", "--threads", "1", "--out", str(out)]
    assert main(argv) == 0
    results = json.loads(out.read_text())
    assert results["masks"] == 6 and results["target_overhead"] == 0.05  # the default of config/commands.yaml
    assert set(results["frame_s"]) == {"with", "without"} and "overhead" in capsys.readouterr().out
