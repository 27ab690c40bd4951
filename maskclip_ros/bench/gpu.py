"""The GPU check (`scripts/gpu_check.sh`, issue 13 item 4): on a machine with a CUDA GPU, frames per second of
MaskCLIP at 640x480 with M = 100 masks, ``tokens`` and ``rma`` mode, per CLIP model (random weights: speed
does not depend on them): torch fp16 autocast and fp32 on the GPU, and the exported encoder under ONNX
Runtime's TensorRT / CUDA execution providers when this onnxruntime has them (``model.runtimes`` picks
TensorRT > CUDA > CPU; the provider actually used is reported). Every output is compared with the same
model's CPU fp32 outputs on the same inputs (max abs difference of the embeddings and, in rma mode, of the
refined masks). The RMA parameters get seeded noise so that the relative term and the refinement are
active. A time budget skips what no longer fits (reported); the JSON is rewritten after every model, so a
run cut short keeps what it measured.

``--dry-run`` runs the same steps on the CPU (fp32 instead of fp16, the tiny test CLIP): the logic is
tested without a GPU. Run as ``python -m maskclip_ros.bench.gpu``; defaults in config/commands.yaml section
``gpu_check``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from maskclip_ros.bench.model import ellipse_masks, synthetic_frame, time_forward

SECTION = "gpu_check"
RESULTS_FILE = "gpu_check.json"
NO_GPU_EXIT = 2  # exit status when no CUDA device is usable (nothing measured)


@dataclass(frozen=True)
class GpuCheck:
    """What the GPU check measures (options of ``main``; defaults in config/commands.yaml ``gpu_check``)."""
    models: tuple[str, ...]   # open_clip model names (random init)
    modes: tuple[str, ...]    # tokens and/or rma
    width: int                # frame width in pixels
    height: int               # frame height in pixels
    short_side: int           # CLIP input short side (0 = the params' clip.short_side)
    masks: int                # proposals per frame
    repeats: int              # timed runs per path (median reported)
    seed: int                 # seeds the weights, the RMA noise, the frame and the masks
    rma_noise: float          # std of the seeded noise added to the RMA parameters
    device: str               # cuda / cuda:N (cpu with dry_run)
    precision: str            # torch autocast precision on the device (fp16; fp32 with dry_run)
    onnxruntime: bool         # also run the exported encoder under ONNX Runtime
    budget_s: float           # seconds for the whole check; later steps are skipped when it runs out
    out: str                  # output directory (gpu_check.json)
    export_cache: str         # export cache ("" = <out>/export_cache)


def gpu_check(opts: GpuCheck) -> dict:
    """Every model in turn (JSON rewritten after each); the results dict."""
    import torch

    deadline = time.monotonic() + opts.budget_s
    results = {"options": asdict(opts), "machine": _machine(opts.device), "models": {}}
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    for model in opts.models:
        if time.monotonic() > deadline:
            results["models"][model] = {"skipped": "time budget spent"}
            continue
        try:
            results["models"][model] = check_model(opts, model, deadline)
        except torch.cuda.OutOfMemoryError as err:
            results["models"][model] = {"error": f"out of GPU memory: {err}"}
        (out / RESULTS_FILE).write_text(json.dumps(results, indent=1) + "\n")
        if opts.device.startswith("cuda"):
            torch.cuda.empty_cache()
    (out / RESULTS_FILE).write_text(json.dumps(results, indent=1) + "\n")
    return results


def check_model(opts: GpuCheck, model: str, deadline: float) -> dict:
    """One model: the CPU fp32 reference, then each path on the device, per mode."""
    from maskclip_ros.proposals.common import scaled_size

    cfg = _config(opts, model)
    frame = (opts.height, opts.width)
    mask_size = scaled_size(*frame, cfg.proposals.mask_long_side)
    image, masks = synthetic_frame(*frame, opts.seed), ellipse_masks(opts.masks, *mask_size, opts.seed)
    cpu_models, device_models = _models(opts, cfg)
    out = {"mask_size": list(mask_size), "input_size": list(cpu_models["tokens" if "tokens" in cpu_models else
                                                                  opts.modes[0]].tower.geometry(frame).input_size),
           "modes": {}}
    for mode in opts.modes:
        start = time.perf_counter()
        reference = _forward(cpu_models[mode], image, masks)
        entry = {"cpu_fp32_reference_s": time.perf_counter() - start}
        for name, runner in _paths(opts, cfg, device_models[mode], frame, mask_size, deadline, entry):
            entry[name] = _measure(runner, image, masks, reference, opts.repeats)
        out["modes"][mode] = entry
    return out


def _paths(opts: GpuCheck, cfg, model, frame, mask_size, deadline: float, entry: dict):
    """(name, runner) for each path on the device; an export that fails or does not fit is noted in ``entry``."""
    import torch

    from maskclip_ros.bench.backends import Autocast

    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(opts.precision)
    if dtype is not None:
        yield f"torch {opts.precision}", Autocast(model, dtype)
    yield "torch fp32", model
    if not opts.onnxruntime:
        return
    if time.monotonic() > deadline:
        entry["onnxruntime"] = {"skipped": "time budget spent"}
        return
    try:
        exported, build = _exported(opts, cfg, model, frame, mask_size)
    except Exception as err:  # a missing provider library, an export the runtime refuses: report, go on
        entry["onnxruntime"] = {"error": f"{type(err).__name__}: {err}"[:2000]}
        return
    entry["onnxruntime_build"] = build
    yield f"onnxruntime ({build['runtime']})", exported


def _exported(opts: GpuCheck, cfg, model, frame, mask_size):
    from maskclip_ros.model.export import build_exported_maskclip

    start = time.perf_counter()
    exported = build_exported_maskclip(model, backend="onnxruntime", precision="fp32",
                                       cache_dir=opts.export_cache or str(Path(opts.out) / "export_cache"),
                                       max_masks=cfg.proposals.max_proposals, image_size=frame, mask_size=mask_size)
    info = exported.builds[0]
    return exported, {"runtime": info.runtime, "export_s": info.export_seconds, "compile_s": info.compile_seconds,
                      "total_s": time.perf_counter() - start}


def _measure(runner, image, masks, reference, repeats: int) -> dict:
    """Warm-up, then ``repeats`` timed runs: frames per second and the parity with the CPU fp32 outputs."""
    out = _forward(runner, image, masks)  # warm-up (kernel selection, TensorRT engine on first run)
    times = [time_forward(runner, image, masks) for _ in range(repeats)]
    seconds = statistics.median(times)
    return {"seconds": seconds, "fps": 1.0 / seconds, "samples_s": times,
            "embeddings_max_abs": _max_abs(out.embeddings, reference.embeddings),
            "image_embedding_max_abs": _max_abs(out.image_embedding, reference.image_embedding),
            "masks_max_abs": _max_abs(out.masks, reference.masks)}


def _max_abs(a, b) -> float:
    return float((a.float().cpu() - b.float().cpu()).abs().max())


def _forward(run, image, masks):
    import torch

    with torch.inference_mode():
        return run(image, masks)


def _config(opts: GpuCheck, model: str):
    from maskclip_ros.pipeline import load_segmenter_config

    sets = [f"clip.model_name={model}", "clip.pretrained=", "clip.checkpoint=", "clip.random_init=true",
            "maskclip.rma_checkpoint=", "maskclip.rma_layers="]
    sets += [f"clip.short_side={opts.short_side}"] if opts.short_side else []
    return load_segmenter_config(overrides=sets)


def _models(opts: GpuCheck, cfg) -> tuple[dict, dict]:
    """mode -> MaskCLIP on the CPU (seeded weights, RMA with seeded noise) and a copy on the device. Built in
    bench-backends' order, so random-init weights match its (and its export cache's) for the same seed."""
    import copy
    import dataclasses

    import torch

    from maskclip_ros.model.factory import build_clip, build_maskclip

    torch.manual_seed(opts.seed)
    cpu_tower = build_clip(cfg.clip, "cpu")
    configs = {mode: dataclasses.replace(cfg.maskclip, mode=mode) for mode in opts.modes}
    cpu = {mode: build_maskclip(mcfg, cpu_tower).eval() for mode, mcfg in configs.items()}
    with torch.no_grad():
        for model in cpu.values():
            for parameter in (model.rma.parameters() if model.rma is not None and opts.rma_noise else ()):
                parameter.add_(torch.randn_like(parameter) * opts.rma_noise)
    device = copy.deepcopy(cpu)  # one copy of the shared tower (and of every config, RMA fingerprints included)
    return cpu, {mode: model.to(opts.device) for mode, model in device.items()}


def _machine(device: str) -> dict:
    import importlib.util

    import torch

    info = {"torch": torch.__version__, "torch_cuda": torch.version.cuda, "device": device}
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    if importlib.util.find_spec("onnxruntime") is not None:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
        info["onnxruntime_file"] = onnxruntime.__file__
        info["onnxruntime_providers"] = onnxruntime.get_available_providers()
    return info


# ------------------------------------------------------------------------------------------- face
def parser() -> argparse.ArgumentParser:
    """Options of ``python -m maskclip_ros.bench.gpu`` (defaults: config/commands.yaml ``gpu_check``)."""
    from maskclip_ros import config

    p = argparse.ArgumentParser(prog="python -m maskclip_ros.bench.gpu", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="on the CPU with the dry_run_* settings (tests the logic)")
    for name, kind in (("models", str), ("modes", str)):
        p.add_argument(f"--{name}", nargs="+", type=kind)
    for name in ("width", "height", "short_side", "masks", "repeats", "seed"):
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, type=int)
    p.add_argument("--rma-noise", type=float)
    p.add_argument("--device")
    p.add_argument("--precision")
    p.add_argument("--onnxruntime", action=argparse.BooleanOptionalAction)
    p.add_argument("--budget-s", type=float)
    p.add_argument("--out")
    p.add_argument("--export-cache")
    for name in ("models", "short_side", "device", "precision"):
        p.add_argument(f"--dry-run-{name.replace('_', '-')}", dest=f"dry_run_{name}", help=argparse.SUPPRESS,
                       **({"nargs": "+"} if name == "models" else {"type": int} if name == "short_side" else {}))
    defaults = config.read_yaml(config.shipped_config("commands.yaml"))[SECTION]
    unknown = sorted(set(defaults) - {a.dest for a in p._actions})
    if unknown:
        raise config.ConfigError(f"config/commands.yaml section {SECTION!r} has keys {unknown} that are not options")
    p.set_defaults(**defaults)
    return p


def main(argv: list[str] | None = None) -> int:
    import torch

    args = parser().parse_args(argv)
    if args.dry_run:
        for name in ("models", "short_side", "device", "precision"):
            setattr(args, name, getattr(args, f"dry_run_{name}"))
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"gpu_check: torch {torch.__version__} (CUDA {torch.version.cuda}) sees no CUDA device: nothing "
              "measured (a CPU-only torch build, or no GPU / driver here); --dry-run checks the logic on the CPU",
              file=sys.stderr)
        return NO_GPU_EXIT
    fields = {f: getattr(args, f) for f in GpuCheck.__dataclass_fields__}
    opts = GpuCheck(**{**fields, "models": tuple(args.models), "modes": tuple(args.modes)})
    results = gpu_check(opts)
    print(report(results))
    print(f"wrote {Path(opts.out) / RESULTS_FILE}")
    return 0


def report(results: dict) -> str:
    """One line per model, mode and path: fps and parity with CPU fp32."""
    lines = [f"GPU check on {results['machine'].get('gpu', results['machine']['device'])}: {results['machine']}"]
    for model, entry in results["models"].items():
        if "modes" not in entry:
            lines.append(f"{model}: {entry}")
            continue
        for mode, paths in entry["modes"].items():
            for name, r in paths.items():
                if isinstance(r, dict) and "fps" in r:
                    lines.append(f"{model} {mode:<6} {name:<40} {r['fps']:7.2f} frames/s  max|d emb| "
                                 f"{r['embeddings_max_abs']:.1e}  max|d mask| {r['masks_max_abs']:.1e}")
                elif isinstance(r, dict):
                    lines.append(f"{model} {mode:<6} {name:<40} {r}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
