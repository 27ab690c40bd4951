"""`maskclip-ros bench-backends` (maskclip_ros.bench.backends, cpu_peak, precision, frames) and the GPU check's
CPU-side logic (maskclip_ros.bench.gpu, scripts/gpu_check.sh) on the tiny test CLIP.

Every part runs the tiny CLIP with seeded random weights at the same geometry (640x480 frames to a 64x48
input, masks at 320x240, bound 100), so the exported encoders (tokens, rma) are exported once into a
module-wide cache and then found there by every later test (exports dominate the time on 2 cores)."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
from pathlib import Path

import pytest

from maskclip_ros.bench import cpu_peak, gpu
from maskclip_ros.bench.backends import VARIANTS, available_variants, variant_name
from maskclip_ros.cli import main
from maskclip_ros.model.runtimes import cpu_supports_bf16

TINY = "maskclip-ros-test-tiny"
SHORT_SIDE = 48
EXACT = 1e-4  # max abs difference of an fp32 runtime to torch fp32
INSTALLED = ["torch"] + [b for b in ("onnxruntime", "openvino") if importlib.util.find_spec(b) is not None]
REPO = Path(__file__).resolve().parents[1]
ZEN4_CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC
cpu MHz\t\t: 2596.128
flags\t\t: fpu sse avx2 fma avx512f avx512_bf16

processor\t: 1
vendor_id\t: AuthenticAMD
cpu MHz\t\t: 1000.0
"""


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("bench_export_cache"))


@pytest.fixture(scope="module")
def tiny_bench(tmp_path_factory, cache):
    """bench-backends on the tiny CLIP: (results, json path)."""
    out = tmp_path_factory.mktemp("bench_backends") / "tiny.json"
    argv = ["bench-backends", "--models", TINY, "--masks", "3", "1", "--short-side", str(SHORT_SIDE), "--repeats",
            "2", "--threads", "1", "--no-memory", "--gemm-side", "64", "--gemm-repeats", "2", "--no-accuracy",
            "--frames", "0", "--export-cache", cache, "--out", str(out), "--target-model", TINY]
    assert main(argv) == 0
    return json.loads(out.read_text()), out


def test_bench_backends_json_has_every_backend(tiny_bench):
    results, out = tiny_bench
    expected = [variant_name(b, p) for b, p in VARIANTS if b in INSTALLED and (p == "fp32" or cpu_supports_bf16())]
    assert results["variants"] == expected
    assert out.with_suffix(".png").stat().st_size > 0
    assert set(results["gemm_gflops"]) == set(expected) and all(g > 0 for g in results["gemm_gflops"].values())
    entry = results["models"][TINY]
    assert entry["input_size"] == [48, 64] and entry["mask_size"] == [240, 320]
    for mode in ("tokens", "rma"):
        res = entry["modes"][mode]
        assert res["gflop"]["3"] > res["gflop"]["1"] > 0  # more masks, more work
        for name in expected:
            samples = res["samples_s"][name]
            assert list(samples) == ["1", "3"] and all(len(s) == 2 and min(s) > 0 for s in samples.values())
            assert min(samples["3"]) <= res["latency_s"][name]["3"] <= max(samples["3"])
            ratio = res["latency_s"]["torch fp32"]["3"] / res["latency_s"][name]["3"]
            assert res["speedup"][name]["3"] == pytest.approx(ratio)
            parity = res["parity_at_max_m"][name]
            assert max(parity.values()) <= (EXACT if name.endswith("fp32") else 0.1)
            if name.split()[0] != "torch":
                assert set(res["build"][name]) == {"first", "cached"}
                assert res["build"][name]["cached"]["export_s"] == 0.0  # the second build is a cache hit
        assert res["speedup"]["torch fp32"]["3"] == 1.0


def test_bench_backends_summary_and_targets(tiny_bench):
    results, _ = tiny_bench
    summary = results["summary"]
    assert summary["best_fp32_gemm_gflops"] == max(v for k, v in results["gemm_gflops"].items() if k.endswith("fp32"))
    tokens = summary["models"][TINY]["tokens"]
    assert tokens["best_fp32"] in results["variants"] and tokens["masks"] == 3
    share = results["models"][TINY]["modes"]["tokens"]["gflops_per_s"][tokens["best_fp32"]]["3"]
    assert tokens["best_fp32_share_of_best_fp32_gemm"] == pytest.approx(share / summary["best_fp32_gemm_gflops"])
    targets = summary["targets"]
    assert len(targets) == 6 and all(v is None or isinstance(v, bool) for v in targets.values())
    if len(INSTALLED) > 1:  # the exact exported backends agree with torch: the parity targets are met
        assert all(ok for name, ok in targets.items() if "within" in name)


def test_memory_probe_measures_a_forward(tiny_bench, cache):
    from maskclip_ros.bench.backends import BackendsBench, memory_probe

    options = dict(tiny_bench[0]["options"])
    opts = BackendsBench(**{k: tuple(v) if isinstance(v, list) else v for k, v in options.items()})
    probe = memory_probe(opts, TINY, "rma", variant_name(INSTALLED[-1], "fp32"), cache)
    assert probe["masks"] == 3 and probe["peak_rss_mb"] >= probe["rss_before_mb"] > 0 and probe["seconds"] > 0


def test_unavailable_backends_are_skipped_with_a_reason(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    monkeypatch.setattr("maskclip_ros.model.runtimes.cpu_supports_bf16", lambda: False)
    chosen, skipped = available_variants(("openvino", "onnxruntime"))
    assert chosen == [("torch", "fp32")]  # the reference always runs
    assert skipped == {"onnxruntime fp32": "onnxruntime is not installed", "openvino fp32": "openvino is not installed",
                       "openvino bf16": "openvino is not installed"}


# ------------------------------------------------------------------------------------------ limit
def test_cpu_limit_of_a_zen4_cpuinfo():
    limit = cpu_peak.cpu_limit(ZEN4_CPUINFO, cores=2)
    assert (limit.core, limit.isa_bits, limit.datapath_bits, limit.fma_pipes) == ("Zen 4", 512, 256, 2)
    assert limit.flop_per_cycle == 32 and limit.clock_ghz == pytest.approx(2.596128)
    assert limit.gflops == pytest.approx(2 * 32 * 2.596128)
    assert "cpu MHz" in limit.clock_source and "166 GFLOP/s" in limit.describe()
    assert cpu_peak.implied_clock_ghz(limit, 192.0) == pytest.approx(3.0)


def test_cpu_limit_other_cores_and_clock_sources():
    zen5 = ZEN4_CPUINFO.replace("cpu family\t: 25", "cpu family\t: 26").replace("model\t\t: 17", "model\t\t: 2")
    assert cpu_peak.cpu_limit(zen5, cores=4).flop_per_cycle == 64
    intel = ("vendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 106\n"
             "model name\t: Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz\nflags\t\t: avx2 fma avx512f\n")
    limit = cpu_peak.cpu_limit(intel, cores=8, max_freq_khz=3200000)
    assert (limit.core, limit.flop_per_cycle, limit.clock_ghz) == ("unknown", 64, 3.2)
    assert "assumed" in limit.assumption and "cpufreq" in limit.clock_source
    limit = cpu_peak.cpu_limit(intel.replace(" avx512f", ""), cores=1)
    assert (limit.flop_per_cycle, limit.clock_ghz) == (32, 2.0) and "model name" in limit.clock_source


# --------------------------------------------------------------------------------------- accuracy
def test_fp32_runtimes_agree_with_torch_on_held_out_scenes(cache):
    from maskclip_ros.bench.precision import AccuracyBench, bf16_accuracy

    exact = tuple(v for v in available_variants(INSTALLED)[0] if v[1] == "fp32")
    acc = bf16_accuracy(AccuracyBench(model=TINY, clip_checkpoint="", rma_checkpoint="", modes=("tokens", "rma"),
                                      variants=exact, scenes=2, seed=1000, short_side=SHORT_SIDE, threads=1,
                                      export_cache=cache, params_files=(), sets=()))
    assert acc["regions"] > 5 and len(acc["classes"]) == 14 and acc["mask_size"] == [240, 320]
    for mode in ("tokens", "rma"):
        assert set(acc["modes"][mode]) == {variant_name(*v) for v in exact}
        for r in acc["modes"][mode].values():
            assert r["agreement"] == 1.0 and r["disagreements"] == 0
            assert r["min_cosine"] > 1 - EXACT and r["embeddings_max_abs"] <= EXACT


def test_whole_frames_per_backend(cache):
    from maskclip_ros.bench.frames import FramesBench, frame_bench

    exact = tuple(v for v in available_variants(INSTALLED)[0] if v[1] == "fp32")
    sets = (f"clip.model_name={TINY}", "clip.checkpoint=", "clip.random_init=true", f"clip.short_side={SHORT_SIDE}",
            "maskclip.rma_checkpoint=")
    frames = frame_bench(FramesBench(params="demo.yaml", variants=exact, frames=1, seed=2026, threads=1,
                                     export_cache=cache, sets=sets))
    assert frames["description"] == f"{TINY} rma mode, auto proposals" and frames["frame"] == [480, 640]
    for name, r in frames["variants"].items():
        assert r["frame_ms"] >= sum(r["stages_ms"].values()) * 0.99 and len(r["samples_ms"]) == 1
        assert r["semantic_agreement"] > 0.99  # exact backends label the same pixels
    assert frames["variants"]["torch fp32"]["speedup"] == 1.0


# -------------------------------------------------------------------------------------------- GPU
def test_gpu_check_dry_run(tmp_path, cache):
    assert gpu.main(["--dry-run", "--out", str(tmp_path), "--masks", "3", "--repeats", "1", "--rma-noise", "0",
                     "--export-cache", cache]) == 0
    results = json.loads((tmp_path / gpu.RESULTS_FILE).read_text())
    modes = results["models"][TINY]["modes"]
    for mode in ("tokens", "rma"):
        assert modes[mode]["torch fp32"]["fps"] > 0 and modes[mode]["torch fp32"]["embeddings_max_abs"] == 0.0
        if "onnxruntime" in INSTALLED:
            name = next(n for n in modes[mode] if n.startswith("onnxruntime ("))
            assert "CPUExecutionProvider" in name and modes[mode]["onnxruntime_build"]["export_s"] == 0.0
            assert modes[mode][name]["embeddings_max_abs"] <= EXACT and modes[mode][name]["masks_max_abs"] <= EXACT


def test_gpu_check_needs_a_cuda_device(monkeypatch, capsys):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert gpu.main(["--out", "unused"]) == gpu.NO_GPU_EXIT
    assert "sees no CUDA device" in capsys.readouterr().err


def test_gpu_script_exits_clearly_without_a_gpu(tmp_path):
    stub = tmp_path / "bin"
    stub.mkdir()
    (stub / "nvidia-smi").write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2\nexit 9\n")
    (stub / "nvidia-smi").chmod(0o755)
    env = {**os.environ, "PATH": f"{stub}:{os.environ['PATH']}"}
    done = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == gpu.NO_GPU_EXIT and "no CUDA GPU" in done.stderr
    assert not (tmp_path / "out" / gpu.RESULTS_FILE).exists()
