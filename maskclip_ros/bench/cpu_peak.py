"""This CPU's fp32 FMA limit (cores x FLOP per cycle x clock, derived from /proc/cpuinfo) and the best GEMM
throughput each inference library reaches on it (`maskclip-ros bench-backends`).

**The limit.** ``cpu_limit`` = cores (``os.sched_getaffinity``: the CPUs this process may run on) x fp32
FLOP per cycle per core x clock. FLOP per cycle = FMA pipes x fp32 lanes per pipe x 2 (an FMA is a
multiply and an add). The lanes are the *datapath* width, not the instruction width: AMD Zen 4 runs
AVX-512 instructions on 256-bit units (two halves), so it does 2 x 8 x 2 = 32 fp32 FLOP per cycle, as
Zen 2/3 do with AVX2; Zen 5 (server, desktop) has full 512-bit units: 2 x 16 x 2 = 64. Known AMD families
are looked up (``AMD_CORES``); elsewhere the width comes from the ISA flags (avx512f 512 bits, avx2/fma 256,
else 128) with two FMA pipes assumed, and the result says so. The clock is cpufreq's
``cpuinfo_max_freq`` where the kernel has it, else /proc/cpuinfo's ``cpu MHz`` (under a hypervisor that is
the nominal clock: a core boosting above it can make a measured GEMM exceed the derived limit; the report
then gives the clock the GEMM implies).

**GEMMs.** An n x n x n fp32 (and bf16) matrix product, 2 n^3 FLOP, best of a few runs with all threads,
in each library: ``torch.matmul``, an OpenVINO model of one MatMul (constant weights, as in a network),
an ONNX Runtime session of one MatMul.
"""
from __future__ import annotations

import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

CPUINFO = Path("/proc/cpuinfo")
CPUFREQ_MAX = Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")  # kHz
FLOP_PER_FMA = 2
FP32_BITS = 32
# AMD (family, first model, last model) -> (name, FMA pipes, datapath bits); from AMD's optimisation guides
AMD_CORES = (
    (0x17, 0x00, 0x2F, "Zen / Zen+", 2, 128),
    (0x17, 0x30, 0xFF, "Zen 2", 2, 256),
    (0x19, 0x10, 0x1F, "Zen 4", 2, 256),  # Genoa: AVX-512 on 2 x 256-bit
    (0x19, 0x60, 0x7F, "Zen 4", 2, 256),  # Raphael, Phoenix
    (0x19, 0xA0, 0xAF, "Zen 4", 2, 256),  # Bergamo, Siena
    (0x19, 0x00, 0xFF, "Zen 3", 2, 256),
    (0x1A, 0x20, 0x2F, "Zen 5 (mobile)", 2, 256),
    (0x1A, 0x00, 0xFF, "Zen 5", 2, 512),
)
ISA_BITS = (("avx512f", 512), ("avx2", 256), ("fma", 256))  # widest vector ISA by flag (x86)
DEFAULT_BITS, DEFAULT_FMA_PIPES = 128, 2
GEMM_WARMUP = 1


@dataclass(frozen=True)
class CpuLimit:
    """The derived fp32 FMA limit and every number it came from."""
    cpu: str                    # model name
    family: int                 # cpu family (x86), -1 unknown
    model: int                  # model number (x86), -1 unknown
    core: str                   # microarchitecture, or "unknown"
    cores: int                  # CPUs this process may use (os.sched_getaffinity)
    isa_bits: int               # widest vector instructions by the flags
    datapath_bits: int          # width of one FMA unit
    fma_pipes: int              # FMA units per core
    flop_per_cycle: int         # fp32 FLOP per cycle per core = pipes x (datapath / 32) x 2
    clock_ghz: float            # clock used for the limit
    clock_source: str           # where the clock came from
    gflops: float               # cores x flop_per_cycle x clock
    assumption: str             # what was assumed rather than known

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        return (f"fp32 FMA limit {self.gflops:.0f} GFLOP/s = {self.cores} cores x {self.flop_per_cycle} FLOP/cycle "
                f"({self.fma_pipes} FMA pipes x {self.datapath_bits // FP32_BITS} fp32 lanes x {FLOP_PER_FMA}; "
                f"{self.core}, {self.isa_bits}-bit ISA on {self.datapath_bits}-bit units) x {self.clock_ghz:.2f} GHz "
                f"({self.clock_source}). {self.assumption}")


def parse_cpuinfo(text: str) -> dict[str, str]:
    """The first processor block of /proc/cpuinfo as {key: value} (keys lower-case)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip().lower(), value.strip())
    return fields


def cpu_limit(cpuinfo: str | None = None, cores: int | None = None, max_freq_khz: float | None = None) -> CpuLimit:
    """The fp32 FMA limit of this machine (or of the given /proc/cpuinfo text, cores, cpufreq maximum)."""
    if cpuinfo is None:
        cpuinfo = CPUINFO.read_text() if CPUINFO.exists() else ""
        max_freq_khz = max_freq_khz if max_freq_khz is not None else _read_number(CPUFREQ_MAX)
    fields = parse_cpuinfo(cpuinfo)
    cores = cores or len(os.sched_getaffinity(0))
    flags = set((fields.get("flags") or fields.get("features") or "").split())
    family, model = _int(fields.get("cpu family")), _int(fields.get("model"))
    isa = next((bits for flag, bits in ISA_BITS if flag in flags), DEFAULT_BITS)
    core, pipes, datapath = _amd_core(family, model) if fields.get("vendor_id") == "AuthenticAMD" else (None, 0, 0)
    assumption = ("FMA pipes and datapath width from the CPU model (AMD's documentation)" if core else
                  f"unknown core: {DEFAULT_FMA_PIPES} FMA pipes of the ISA's full width assumed "
                  "(true for most server cores; some have one 512-bit pipe)")
    if not core:
        core, pipes, datapath = "unknown", DEFAULT_FMA_PIPES, isa
    clock, source = _clock(fields, max_freq_khz)
    flop = pipes * (datapath // FP32_BITS) * FLOP_PER_FMA
    return CpuLimit(cpu=fields.get("model name", "unknown"), family=family, model=model, core=core, cores=cores,
                    isa_bits=isa, datapath_bits=datapath, fma_pipes=pipes, flop_per_cycle=flop, clock_ghz=clock,
                    clock_source=source, gflops=cores * flop * clock, assumption=assumption)


def implied_clock_ghz(limit: CpuLimit, gflops: float) -> float:
    """The clock at which ``gflops`` would be exactly this CPU's fp32 FMA limit."""
    return gflops / (limit.cores * limit.flop_per_cycle)


def _amd_core(family: int, model: int) -> tuple[str | None, int, int]:
    for fam, first, last, name, pipes, bits in AMD_CORES:
        if family == fam and first <= model <= last:
            return name, pipes, bits
    return None, 0, 0


def _clock(fields: dict[str, str], max_freq_khz: float | None) -> tuple[float, str]:
    if max_freq_khz:
        return max_freq_khz / 1e6, f"cpufreq cpuinfo_max_freq {max_freq_khz:.0f} kHz"
    if fields.get("cpu mhz"):
        return float(fields["cpu mhz"]) / 1e3, ("/proc/cpuinfo cpu MHz (nominal clock; boost, if any, "
                                                "is not visible here)")
    named = re.search(r"@\s*([\d.]+)\s*GHz", fields.get("model name", ""))
    if named:
        return float(named.group(1)), "the model name's nominal GHz"
    return 0.0, "unknown (no cpufreq, no cpu MHz)"


def _int(value: str | None) -> int:
    try:
        return int(value, 0) if value is not None else -1
    except ValueError:
        return -1


def _read_number(path: Path) -> float | None:
    try:
        return float(path.read_text().strip())
    except (OSError, ValueError):
        return None


# ------------------------------------------------------------------------------------------ GEMMs
def gemm_throughput(n: int, repeats: int, threads: int) -> dict[str, float]:
    """Best GFLOP/s of an n^3 GEMM per "library precision" (torch fp32/bf16 and, when installed, openvino
    fp32/bf16, onnxruntime fp32); bf16 only where the CPU computes it natively."""
    from maskclip_ros.model.runtimes import cpu_supports_bf16

    bf16 = cpu_supports_bf16()
    runs = {"torch fp32": lambda: _torch_gemm(n, repeats, "fp32")}
    if bf16:
        runs["torch bf16"] = lambda: _torch_gemm(n, repeats, "bf16")
    if _installed("openvino"):
        runs["openvino fp32"] = lambda: _openvino_gemm(n, repeats, "fp32", threads)
        if bf16:
            runs["openvino bf16"] = lambda: _openvino_gemm(n, repeats, "bf16", threads)
    if _installed("onnxruntime"):
        runs["onnxruntime fp32"] = lambda: _onnxruntime_gemm(n, repeats, threads)
    return {name: FLOP_PER_FMA * n ** 3 / seconds / 1e9 for name, seconds in ((k, run()) for k, run in runs.items())}


def _installed(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def _best_seconds(run, repeats: int) -> float:
    for _ in range(GEMM_WARMUP):
        run()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def _matrices(n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, n), np.float32), rng.standard_normal((n, n), np.float32)


def _torch_gemm(n: int, repeats: int, precision: str) -> float:
    import torch

    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a, b = (torch.from_numpy(m).to(dtype) for m in _matrices(n))
    return _best_seconds(lambda: torch.matmul(a, b), repeats)


def _openvino_gemm(n: int, repeats: int, precision: str, threads: int) -> float:
    import openvino as ov
    import openvino.opset13 as ops

    from maskclip_ros.model.runtimes import OPENVINO_PRECISION

    a, b = _matrices(n)
    x = ops.parameter([n, n], ov.Type.f32, name="a")
    model = ov.Model([ops.matmul(x, ops.constant(b), False, False)], [x], "gemm")
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": OPENVINO_PRECISION[precision],
                                                      "INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1,
                                                      "PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()
    return _best_seconds(lambda: request.infer({0: a}), repeats)


def _onnxruntime_gemm(n: int, repeats: int, threads: int) -> float:
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from maskclip_ros.model.export_cache import OPSET

    a, b = _matrices(n)
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "gemm",
                              [helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n])],
                              [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])],
                              initializer=[numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = min(model.ir_version, onnx.IR_VERSION)
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return _best_seconds(lambda: session.run(None, {"a": a}), repeats)
