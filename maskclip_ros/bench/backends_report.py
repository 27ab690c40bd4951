"""The printed table and the plot of `maskclip-ros bench-backends` (``bench.backends`` results)."""
from __future__ import annotations

from pathlib import Path

from maskclip_ros.bench.backends import REFERENCE

PLOT_DPI = 100
PLOT_CELL = (5.5, 4.0)  # inches per subplot (width, height)


def report(results: dict) -> str:
    """Text tables of ``run_backends``' results (and of the accuracy and frame parts when present)."""
    lines: list[str] = []
    _header(results, lines.append)
    for model, entry in results["models"].items():
        _model_table(model, entry, results, lines.append)
    if "accuracy" in results:
        lines += ["", accuracy_report(results["accuracy"])]
    if "frames" in results:
        lines += ["", frames_report(results["frames"])]
    lines.append("")
    for name, ok in results["summary"]["targets"].items():
        lines.append(f"[{'not measured' if ok is None else 'met' if ok else 'MISSED'}] {name}")
    return "\n".join(lines)


def _header(results: dict, print) -> None:
    from maskclip_ros.bench.cpu_peak import CpuLimit, implied_clock_ghz

    machine, limit = results["machine"], CpuLimit(**results["cpu_limit"])
    print(f"bench-backends: {results['threads']} threads; load average {machine['load_average_start'][0]:.1f} at "
          f"the start, {machine['load_average_end'][0]:.1f} at the end; {machine['versions']}")
    print(f"CPU: {limit.cpu} (family {limit.family} model {limit.model})")
    print(limit.describe())
    side = results["options"]["gemm_side"]
    gemms = results["gemm_gflops"]
    print(f"best {side}^3 GEMM per library: " + ", ".join(
        f"{name} {g:.0f} GFLOP/s ({100 * g / limit.gflops:.0f}% of the fp32 limit)" for name, g in gemms.items()))
    best = results["summary"]["best_fp32_gemm_gflops"]
    if best > limit.gflops:
        print(f"the best fp32 GEMM exceeds the limit at {limit.clock_ghz:.2f} GHz: the cores ran at >= "
              f"{implied_clock_ghz(limit, best):.2f} GHz (boost above the nominal clock)")
    for name, why in results["skipped"].items():
        print(f"skipped {name}: {why}")


def _model_table(model: str, entry: dict, results: dict, print) -> None:
    summary = results["summary"]
    print(f"\n{model} ({entry['weights']}), input {entry['input_size'][1]}x{entry['input_size'][0]}, masks "
          f"{entry['mask_size'][1]}x{entry['mask_size'][0]}, export bound M <= {entry['max_masks']}"
          + (f", rma layers {entry['rma_layers_1based']}" if "rma_layers_1based" in entry else ""))
    for mode, res in entry["modes"].items():
        counts = list(res["latency_s"][REFERENCE])
        top = counts[-1] if counts else None
        s = summary["models"][model][mode]
        print(f"  {mode}: {res['gflop'][top]:.1f} GFLOP per frame at M={top}; ONNX export {res['export_s']:.1f} s "
              "(once per model and mode)")
        head = "".join(f" {'M=' + m + ' s (x)':>15}" for m in counts)
        print(f"  {'backend':<17}{head} {'GFLOP/s':>8} {'% limit':>8} {'1st build s':>11} {'cached s':>9} "
              f"{'+MB':>6} {'max|d emb|':>10} {'max|d mask|':>11}")
        for name in res["latency_s"]:
            cells = "".join(f" {res['latency_s'][name][m]:8.3f} ({res['speedup'][name][m]:4.2f})" for m in counts)
            build = res.get("build", {}).get(name)
            first = f"{build['first']['total_s']:.1f}" if build else "-"
            cached = f"{build['cached']['total_s']:.1f}" if build else "-"
            mem = res.get("peak_memory_mb", {}).get(name, {})
            grow = f"{mem['forward_growth_mb']:.0f}" if "forward_growth_mb" in mem else "-"
            parity = res["parity_at_max_m"][name]
            print(f"  {name:<17}{cells} {res['gflops_per_s'][name][top]:8.1f} "
                  f"{100 * s['share_of_fp32_limit'][name]:7.0f}% {first:>11} {cached:>9} {grow:>6} "
                  f"{parity['embeddings_max_abs']:10.1e} {parity['masks_max_abs']:11.1e}")
        print(f"  best fp32: {s['best_fp32']} ({s['best_fp32_speedup']:.2f}x), its forward reaches "
              f"{100 * s['best_fp32_share_of_best_fp32_gemm']:.0f}% of the best fp32 GEMM; best bf16: "
              f"{s['best_bf16']} ({s['best_bf16_speedup'] or 0:.2f}x)")


def accuracy_report(acc: dict) -> str:
    """bf16 (and exact control) agreement with torch fp32 on held-out scenes."""
    lines = [f"accuracy against torch fp32: {acc['model']} ({acc['clip_checkpoint']}), {acc['scenes']} held-out "
             f"scenes (world seed {acc['seed']}), {acc['regions']} ground-truth regions as proposals, "
             f"{len(acc['classes'])} classes",
             f"  {'mode':<7} {'backend':<17} {'top-1 agreement':>16} {'mean cosine':>12} {'min cosine':>11} "
             f"{'max|d emb|':>10} {'accuracy vs GT':>15}"]
    for mode, per in acc["modes"].items():
        for name, r in per.items():
            lines.append(f"  {mode:<7} {name:<17} {100 * r['agreement']:15.2f}% {r['mean_cosine']:12.6f} "
                         f"{r['min_cosine']:11.6f} {r['embeddings_max_abs']:10.1e} {100 * r['gt_accuracy']:14.1f}%"
                         + (f"  flips at fp32 margins {r['flip_margins']} (median margin {r['median_margin']:.3f})"
                            if r["disagreements"] else ""))
    return "\n".join(lines)


def frames_report(frames: dict) -> str:
    """Whole-frame (proposals + MaskCLIP + merge) medians per backend."""
    lines = [f"whole frames ({frames['params']}: {frames['description']}), {frames['frames']} generated scenes "
             f"(seed {frames['seed']}), export cached",
             f"  {'backend':<17} {'frame ms':>9} {'speed-up':>9} {'proposals ms':>13} {'clip ms':>8} {'merge ms':>9}"
             f" {'frames/s':>9}"]
    for name, r in frames["variants"].items():
        st = r["stages_ms"]
        lines.append(f"  {name:<17} {r['frame_ms']:9.0f} {r['speedup']:8.2f}x {st['proposals']:13.0f} "
                     f"{st['clip']:8.0f} {st['merge']:9.0f} {1000.0 / r['frame_ms']:9.2f}")
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    """Seconds per frame against M, one panel per model and mode, one line per backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(model, mode) for model, entry in results["models"].items() for mode in entry["modes"]]
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(PLOT_CELL[0] * len(panels), PLOT_CELL[1]), squeeze=False)
    for axis, (model, mode) in zip(axes[0], panels):
        res = results["models"][model]["modes"][mode]
        for name, per_m in res["latency_s"].items():
            counts = list(per_m)
            top = counts[-1]
            axis.plot([int(m) for m in counts], [per_m[m] for m in counts], marker="o",
                      label=f"{name} ({res['speedup'][name][top]:.2f}x at M={top})")
        axis.set(xlabel="mask proposals M", ylabel="seconds per 640x480 frame (CPU)", yscale="log",
                 title=f"{model} {mode}")
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=7)
    fig.suptitle(f"bench-backends, {results['threads']} threads, load average "
                 f"{results['machine']['load_average_start'][0]:.1f}", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=PLOT_DPI)
    plt.close(fig)
