"""Inference backends side by side in one run (`maskclip-ros bench-backends`): torch eager, the exported
encoder under OpenVINO and ONNX Runtime (whichever are installed), fp32 and bf16 (torch autocast, OpenVINO's
precision hint; bf16 only on CPUs that compute it natively), in ``tokens`` and ``rma`` mode, for several
mask counts M and CLIP models at 640x480.

* **Inputs.** A seeded synthetic frame and M seeded elliptical proposals (``bench.model``) at the mask size
  the proposers return (``proposals.mask_long_side``), the same for every backend; the export bound is
  ``proposals.max_proposals`` as in the node. Models: an open_clip name with random weights, or with a CLIP
  checkpoint (``clip_checkpoints``); rma mode with an RMA checkpoint (``rma_checkpoints``) or untrained.
* **Timing.** One warm-up pass per backend, then ``repeats`` rounds; in each round every M and every backend
  run one after another on the same inputs, so load from other processes hits all alike (the load average
  is recorded). Medians are reported; speed-ups are against torch fp32 of the same model, mode and M.
* **Build.** Each model gets a fresh temporary export cache, so the first build really exports (ONNX, once
  per model and mode: the ONNX file does not depend on the runtime) and compiles; a second build then comes
  from the cache (OpenVINO also caches its compiled blob). Both are timed.
* **Throughput.** The FLOPs of a forward are counted once per model, mode and M by
  ``torch.utils.flop_counter`` on the torch fp32 pass (matmuls, convolutions, attention); each backend's
  GFLOP/s is set against this CPU's fp32 FMA limit and the best GEMM of each library measured in the same
  run (``bench.cpu_peak``).
* **Memory.** Peak RSS growth of one forward pass at the largest M, per backend and mode, in a fresh
  subprocess (``bench.model``'s method: the kernel's peak mark is reset right before the pass).
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass

import numpy as np

from maskclip_ros.bench.model import ellipse_masks, synthetic_frame, time_forward

# every (backend, precision) pair measured, in report order; bf16 ones only where the CPU has bf16
VARIANTS = (("torch", "fp32"), ("torch", "bf16"), ("onnxruntime", "fp32"), ("openvino", "fp32"),
            ("openvino", "bf16"))
REFERENCE = "torch fp32"
EXPORTED = ("onnxruntime", "openvino")


@dataclass(frozen=True)
class BackendsBench:
    """What `maskclip-ros bench-backends` measures (its options; defaults in config/commands.yaml)."""
    models: tuple[str, ...]            # open_clip model names
    clip_checkpoints: dict             # model name -> CLIP checkpoint (models not listed: random init)
    rma_checkpoints: dict              # model name -> RMA checkpoint (models not listed: untrained RMA)
    backends: tuple[str, ...]          # backends to measure (those not installed are skipped, reported)
    modes: tuple[str, ...]             # tokens and/or rma
    masks: tuple[int, ...]             # proposal counts M
    width: int                         # frame width in pixels
    height: int                        # frame height in pixels
    short_side: int                    # CLIP input short side (0 = the params' clip.short_side)
    repeats: int                       # timed rounds (medians reported)
    threads: int                       # CPU threads of torch and the runtimes (0 = all this process may use)
    seed: int                          # seeds the frame, the proposals and random weights
    memory: bool                       # measure peak memory in subprocesses
    gemm_side: int                     # n of the n^3 GEMMs
    gemm_repeats: int                  # GEMM runs per library (best reported)
    export_cache: str                  # export cache ("" = a fresh temporary one per model: builds really export)
    params_files: tuple[str, ...]      # node params files over config/default.yaml
    sets: tuple[str, ...]              # dotted overrides of the model settings
    targets: dict                      # target figures (config/commands.yaml bench_backends.target_*)


def variant_name(backend: str, precision: str) -> str:
    return f"{backend} {precision}"


def available_variants(backends) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """The (backend, precision) pairs this machine can run among ``backends`` (torch fp32, the reference,
    always first), and why the others cannot."""
    from maskclip_ros.model.runtimes import cpu_supports_bf16

    chosen, skipped = [], {}
    for backend, precision in VARIANTS:
        name = variant_name(backend, precision)
        if backend not in backends and name != REFERENCE:
            continue
        if backend != "torch" and importlib.util.find_spec(backend) is None:
            skipped[name] = f"{backend} is not installed"
        elif precision == "bf16" and not cpu_supports_bf16():
            skipped[name] = "this CPU has no native bf16 (avx512_bf16 / amx_bf16)"
        else:
            chosen.append((backend, precision))
    return chosen, skipped


def model_config(opts: BackendsBench, model: str, **maskclip_changes):
    """The params' model settings for ``model`` (its checkpoint, or random init) and maskclip changes."""
    from maskclip_ros.pipeline import load_segmenter_config

    checkpoint = opts.clip_checkpoints.get(model, "")
    sets = [*opts.sets, f"clip.model_name={model}", "clip.pretrained=", f"clip.checkpoint={checkpoint}",
            f"clip.random_init={'false' if checkpoint else 'true'}"]
    sets += [f"clip.short_side={opts.short_side}"] if opts.short_side else []
    sets += [f"maskclip.{k}={v}" for k, v in maskclip_changes.items()]
    return load_segmenter_config(*opts.params_files, overrides=sets)


class Autocast:
    """A MaskCLIP model run under CPU/CUDA autocast (``time_forward`` and the exported models' interface)."""

    def __init__(self, model, dtype):
        self.model, self.dtype = model, dtype

    @property
    def tower(self):
        return self.model.tower

    def __call__(self, image, masks):
        import torch

        with torch.autocast(device_type=self.tower.device.type, dtype=self.dtype):
            return self.model(image, masks)


def run_backends(opts: BackendsBench) -> dict:
    """Every model, mode, backend and M side by side; the results dict (see ``report``)."""
    import torch

    from maskclip_ros.bench.cpu_peak import cpu_limit, gemm_throughput

    threads = opts.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    variants, skipped = available_variants(opts.backends)
    results = {"options": _options(opts), "threads": threads, "machine": _machine(),
               "variants": [variant_name(*v) for v in variants], "skipped": skipped,
               "cpu_limit": cpu_limit().to_dict()}
    results["gemm_gflops"] = gemm_throughput(opts.gemm_side, opts.gemm_repeats, threads)
    results["models"] = {model: bench_one_model(opts, model, variants, threads) for model in opts.models}
    results["summary"] = summarise(results, opts.targets)
    results["machine"]["load_average_end"] = list(os.getloadavg())
    return results


def bench_one_model(opts: BackendsBench, model: str, variants, threads: int) -> dict:
    """All modes of one model: timings, build times, parity, FLOPs (and memory), with a fresh export cache."""
    import torch

    from maskclip_ros.model.factory import build_clip
    from maskclip_ros.proposals.common import scaled_size

    torch.manual_seed(opts.seed)
    cfg = model_config(opts, model)
    tower = build_clip(cfg.clip, "cpu")
    frame = (opts.height, opts.width)
    mask_size = scaled_size(*frame, cfg.proposals.mask_long_side)
    out = {"weights": cfg.clip.checkpoint or "random init", "input_size": list(tower.geometry(frame).input_size),
           "mask_size": list(mask_size), "max_masks": cfg.proposals.max_proposals, "modes": {}}
    with export_cache(opts.export_cache) as cache_dir:
        for mode in opts.modes:
            maskclip = _build_maskclip(opts, model, mode, tower)
            runners, builds = build_runners(maskclip, variants, cfg, cache_dir, frame, mask_size, threads)
            entry = time_mode(runners, opts, frame, mask_size)
            entry["build"] = builds
            entry["export_s"] = max((b["first"]["export_s"] for b in builds.values()), default=0.0)
            if mode == "rma":
                out["rma_layers_1based"] = [i + 1 for i in maskclip.rma.config.block_indices]
            del runners
            if opts.memory:
                entry["peak_memory_mb"] = {name: _memory_subprocess(opts, model, mode, name, cache_dir)
                                           for name in (variant_name(*v) for v in variants)}
            out["modes"][mode] = entry
    return out


@contextlib.contextmanager
def export_cache(path: str):
    """``path``, or a fresh temporary folder (removed afterwards) when it is ""."""
    if path:
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="maskclip-bench-export-") as fresh:
        yield fresh


def _build_maskclip(opts: BackendsBench, model: str, mode: str, tower):
    from maskclip_ros.model.factory import build_maskclip

    rma = opts.rma_checkpoints.get(model, "") if mode == "rma" else ""
    cfg = model_config(opts, model, mode=mode, rma_checkpoint=rma)
    return build_maskclip(cfg.maskclip, tower).eval()


def build_runners(maskclip, variants, cfg, cache_dir, frame, mask_size, threads) -> tuple[dict, dict]:
    """name -> model with MaskCLIP's call interface, and name -> build times of the exported ones (first
    build: export if this cache has no ONNX file yet, then compile; second build: from the cache)."""
    import time

    import torch

    from maskclip_ros.model.export import build_exported_maskclip

    runners, builds = {}, {}
    for backend, precision in variants:
        name = variant_name(backend, precision)
        if backend == "torch":
            runners[name] = maskclip if precision == "fp32" else Autocast(maskclip, torch.bfloat16)
            continue
        timed = []
        for _ in ("first", "cached"):
            start = time.perf_counter()
            exported = build_exported_maskclip(maskclip, backend=backend, precision=precision, cache_dir=cache_dir,
                                               max_masks=cfg.proposals.max_proposals, image_size=frame,
                                               mask_size=mask_size, threads=threads)
            info = exported.builds[0]
            timed.append({"export_s": info.export_seconds, "compile_s": info.compile_seconds,
                          "total_s": time.perf_counter() - start, "runtime": info.runtime})
        runners[name], builds[name] = exported, dict(zip(("first", "cached"), timed))
    return runners, builds


def time_mode(runners: dict, opts: BackendsBench, frame, mask_size) -> dict:
    """Warm-up (+ FLOP count and parity against torch fp32), then interleaved timed rounds."""
    image = synthetic_frame(*frame, opts.seed)
    masks = {m: ellipse_masks(m, *mask_size, opts.seed) for m in opts.masks}
    top = max(opts.masks)
    counted = {m: count_flops(runners[REFERENCE], image, masks[m]) for m in opts.masks}  # torch's warm-up
    flops, reference = {m: f for m, (f, _) in counted.items()}, counted[top][1]
    parity = {name: _parity(reference if name == REFERENCE else _forward(run, image, masks[top]), reference)
              for name, run in runners.items()}  # the others' warm-up
    samples: dict[str, dict[int, list[float]]] = {name: {m: [] for m in opts.masks} for name in runners}
    for _ in range(opts.repeats):
        for m in opts.masks:
            for name, run in runners.items():
                samples[name][m].append(time_forward(run, image, masks[m]))
    latency = {name: {m: statistics.median(ts) for m, ts in per_m.items()} for name, per_m in samples.items()}
    return {"gflop": {str(m): f / 1e9 for m, f in flops.items()},
            "latency_s": {n: {str(m): t for m, t in per_m.items()} for n, per_m in latency.items()},
            "samples_s": {n: {str(m): ts for m, ts in per_m.items()} for n, per_m in samples.items()},
            "speedup": {n: {str(m): latency[REFERENCE][m] / t for m, t in per_m.items()}
                        for n, per_m in latency.items()},
            "gflops_per_s": {n: {str(m): flops[m] / t / 1e9 for m, t in per_m.items()} for n, per_m in latency.items()},
            "parity_at_max_m": parity}


def count_flops(model, image: np.ndarray, masks: np.ndarray):
    """FLOPs of one forward (torch.utils.flop_counter: matmuls, convolutions, attention) and its output.

    The CPU's fused attention kernel (``aten._scaled_dot_product_flash_attention_for_cpu``) is missing from
    the counter's registry (it has the CUDA kernels only): it is counted with the library's own formula."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    cpu_attention = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    counter = FlopCounterMode(display=False, custom_mapping={cpu_attention: _sdpa_flop})
    with torch.inference_mode(), counter:
        out = model(image, masks)
    return int(counter.get_total_flops()), out


def _sdpa_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _forward(run, image, masks):
    import torch

    with torch.inference_mode():
        return run(image, masks)


def _parity(out, ref) -> dict:
    """Max abs differences to torch fp32 (embeddings, image embedding, output masks)."""
    diff = {"embeddings_max_abs": (out.embeddings.float() - ref.embeddings.float()).abs().max().item(),
            "image_embedding_max_abs": (out.image_embedding.float() - ref.image_embedding.float()).abs().max().item(),
            "masks_max_abs": (out.masks.float() - ref.masks.float()).abs().max().item()}
    return {k: float(v) for k, v in diff.items()}


# ---------------------------------------------------------------------------------------- memory
def _memory_subprocess(opts: BackendsBench, model: str, mode: str, variant: str, cache_dir: str) -> dict:
    """``memory_probe`` in a fresh interpreter (the exported encoder comes from ``cache_dir``)."""
    code = ("import json, sys; from maskclip_ros.bench.backends import BackendsBench, memory_probe; "
            "a = json.loads(sys.argv[1]); print(json.dumps(memory_probe(BackendsBench(**a['opts']), "
            "a['model'], a['mode'], a['variant'], a['cache_dir'])))")
    args = {"opts": dataclasses.asdict(opts), "model": model, "mode": mode, "variant": variant, "cache_dir": cache_dir}
    done = subprocess.run([sys.executable, "-c", code, json.dumps(args)], capture_output=True, text=True)
    if done.returncode:
        return {"error": done.stderr.strip()[-500:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def memory_probe(opts: BackendsBench, model: str, mode: str, variant: str, cache_dir: str) -> dict:
    """In this process: build one backend, then one forward pass at the largest M; peak RSS growth in MB."""
    import torch

    from maskclip_ros.bench.model import reset_peak_rss, status_mb
    from maskclip_ros.model.factory import build_clip
    from maskclip_ros.proposals.common import scaled_size

    threads = opts.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    torch.manual_seed(opts.seed)
    cfg = model_config(opts, model)
    frame = (opts.height, opts.width)
    mask_size = scaled_size(*frame, cfg.proposals.mask_long_side)
    maskclip = _build_maskclip(opts, model, mode, build_clip(cfg.clip, "cpu"))
    backend, precision = variant.split()
    runners, _ = build_runners(maskclip, [(backend, precision)], cfg, cache_dir, frame, mask_size, threads)
    image, masks = synthetic_frame(*frame, opts.seed), ellipse_masks(max(opts.masks), *mask_size, opts.seed)
    before = status_mb("VmRSS")
    if not reset_peak_rss():
        return {"error": "cannot reset the peak RSS mark (/proc/self/clear_refs)"}
    seconds = time_forward(runners[variant], image, masks)
    peak = status_mb("VmHWM")
    return {"masks": max(opts.masks), "rss_before_mb": before, "peak_rss_mb": peak,
            "forward_growth_mb": peak - before, "seconds": seconds}


# --------------------------------------------------------------------------------------- summary
def summarise(results: dict, targets: dict) -> dict:
    """Best backends, shares of the fp32 limit and of the best fp32 GEMM, and the targets."""
    limit = results["cpu_limit"]["gflops"]
    fp32_gemm = max(v for k, v in results["gemm_gflops"].items() if k.endswith("fp32"))
    out: dict = {"fp32_limit_gflops": limit, "best_fp32_gemm_gflops": fp32_gemm, "models": {}}
    for model, entry in results["models"].items():
        for mode, res in entry["modes"].items():
            top = max(res["latency_s"][REFERENCE], key=int)
            speed = {n: per_m[top] for n, per_m in res["speedup"].items()}
            fp32 = [n for n in speed if n.endswith("fp32")]
            best_fp32 = max(fp32, key=speed.get)
            best_exported = max((n for n in fp32 if n.split()[0] in EXPORTED), key=speed.get, default=None)
            bf16 = [n for n in speed if n.endswith("bf16")]
            out["models"].setdefault(model, {})[mode] = {
                "masks": int(top), "best_fp32": best_fp32, "best_fp32_speedup": speed[best_fp32],
                "best_exported_fp32": best_exported, "best_exported_fp32_speedup": speed.get(best_exported),
                "best_bf16": max(bf16, key=speed.get) if bf16 else None,
                "best_bf16_speedup": max((speed[n] for n in bf16), default=None),
                "share_of_fp32_limit": {n: res["gflops_per_s"][n][top] / limit for n in speed},
                "best_fp32_share_of_best_fp32_gemm": res["gflops_per_s"][best_fp32][top] / fp32_gemm}
    out["targets"] = _targets(results, out, targets)
    return out


def _targets(results: dict, summary: dict, targets: dict) -> dict[str, bool | None]:
    """Each target (issue 13) -> met / missed / None when its model or backend was not measured."""
    model = targets["model"]
    per_mode = summary["models"].get(model, {})
    checks: dict[str, bool | None] = {}
    for mode in ("tokens", "rma"):
        s = per_mode.get(mode)
        speed = s and s["best_exported_fp32_speedup"]
        checks[f"{model} {mode}: best exact exported backend >= {targets['exported_speedup']:g}x torch fp32"] = (
            None if not speed else speed >= targets["exported_speedup"])
        parity = s and s["best_exported_fp32"] and results["models"][model]["modes"][mode]["parity_at_max_m"][
            s["best_exported_fp32"]]
        checks[f"{model} {mode}: its embeddings and masks within {targets['parity']:g} of torch"] = (
            None if not parity else max(parity.values()) <= targets["parity"])
    bf16 = [per_mode[m]["best_bf16_speedup"] for m in per_mode if per_mode[m]["best_bf16_speedup"]]
    checks[f"{model}: best bf16 path >= {targets['bf16_speedup']:g}x torch fp32"] = (
        None if not bf16 else max(bf16) >= targets["bf16_speedup"])
    share = per_mode.get("tokens", {}).get("best_fp32_share_of_best_fp32_gemm")
    checks[f"{model} tokens: best fp32 forward >= {100 * targets['gemm_share']:g}% of the best fp32 GEMM"] = (
        None if share is None else share >= targets["gemm_share"])
    return checks


def _options(opts: BackendsBench) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(opts).items()}


def _machine() -> dict:
    import platform

    import torch

    versions = {"torch": torch.__version__}
    for name in EXPORTED:
        if importlib.util.find_spec(name) is not None:
            from maskclip_ros.model.runtimes import runtime_version

            versions[name] = runtime_version(name)
    return {"cpus": len(os.sched_getaffinity(0)), "platform": platform.platform(), "python": platform.python_version(),
            "versions": versions, "load_average_start": list(os.getloadavg())}
