"""Inference runtimes for the exported MaskCLIP encoder (``model.export``), and the precision checks.

* ``OnnxRuntimeEncoder``: ONNX Runtime, CPU execution provider; on a CUDA device the TensorRT / CUDA
  providers are used when this onnxruntime build has them (``onnxruntime-gpu``), else the CPU provider with a
  warning. fp32 only.
* ``OpenVinoEncoder``: OpenVINO's CPU plugin, fp32 or bf16 through ``INFERENCE_PRECISION_HINT`` (set
  explicitly to f32 for fp32: on AMX CPUs OpenVINO's default would be bf16). The dynamic mask count is
  declared bounded (``1..max_masks``; OpenVINO documents bounded ranges as faster than unbounded ones).
  Compiled blobs are cached by OpenVINO itself under the export cache entry (``CACHE_DIR``).

Both take numpy inputs (pixels (1, 3, h, w) float32, masks (M, mh, mw) float32, 1 <= M <= max_masks) and
return the graph's outputs as float32 numpy arrays, from one compiled model for every M. Runtime packages
are imported lazily: the torch backend never needs them.

bf16 on a CPU is only accepted where the CPU computes it natively (``cpu_supports_bf16``: AVX512_BF16 or
AMX on x86, the BF16 extension on Arm); elsewhere ``check_precision`` refuses it with a clear message.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np
import torch

LOG = logging.getLogger(__name__)

BACKENDS = ("torch", "openvino", "onnxruntime")
# precisions each backend accepts (torch fp16 needs a CUDA device, bf16 on a CPU needs native support)
BACKEND_PRECISIONS = {"torch": ("fp32", "bf16", "fp16"), "openvino": ("fp32", "bf16"), "onnxruntime": ("fp32",)}
CPUINFO = Path("/proc/cpuinfo")
# /proc/cpuinfo flags meaning native bf16 arithmetic: x86 AVX512_BF16 / AMX-BF16, Arm's BF16 extension
BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})
OPENVINO_PRECISION = {"fp32": "f32", "bf16": "bf16"}  # our precision name -> INFERENCE_PRECISION_HINT
TENSORRT_PROVIDER, CUDA_PROVIDER, CPU_PROVIDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider",
                                                  "CPUExecutionProvider")
INPUT_NAMES = ("pixels", "masks")  # the exported graph's inputs, in order


# ------------------------------------------------------------------------------------- precision
def cpu_flags(cpuinfo: Path | None = None) -> frozenset[str]:
    """The CPU feature flags the kernel reports (x86 ``flags``, Arm ``Features``) in ``cpuinfo`` (default
    /proc/cpuinfo); empty where unknown."""
    try:
        text = (cpuinfo or CPUINFO).read_text()
    except OSError:
        return frozenset()
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return frozenset(flags)


def cpu_supports_bf16() -> bool:
    """True when this CPU has native bf16 arithmetic (AVX512_BF16, AMX-BF16 or Arm BF16)."""
    return bool(cpu_flags() & BF16_CPU_FLAGS)


def torch_device(device: str) -> torch.device:
    """The torch device named ``device`` (cpu, cuda or cuda:N); ValueError saying what to do where this
    machine has no such device."""
    try:
        resolved = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"device must be cpu, cuda or cuda:N, got {device!r}") from err
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available here: use device cpu")
        if (resolved.index or 0) >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) present")
    elif resolved.type != "cpu":
        raise ValueError(f"device must be cpu, cuda or cuda:N, got {device!r}")
    return resolved


def check_precision(backend: str, precision: str, device: str | torch.device = "cpu") -> None:
    """Refuse (ValueError, saying what to do) a backend / precision / device combination that cannot run."""
    if backend not in BACKENDS:
        raise ValueError(f"maskclip.backend must be one of {BACKENDS}, got {backend!r}")
    allowed = BACKEND_PRECISIONS[backend]
    if precision not in allowed:
        raise ValueError(f"precision {precision!r} is not available with maskclip.backend {backend}: use one of "
                         f"{allowed}" + (" (or backend openvino for bf16)" if backend == "onnxruntime" else ""))
    on_cuda = torch.device(device).type == "cuda"
    if precision == "fp16" and not on_cuda:
        raise ValueError("precision fp16 needs a CUDA device; on a CPU use fp32, or bf16 where the CPU has it")
    if precision == "bf16" and not on_cuda and not cpu_supports_bf16():
        raise ValueError("precision bf16 needs a CPU with native bf16 (AVX512_BF16 or AMX on x86, BF16 on Arm); "
                         "this CPU reports none of those flags in /proc/cpuinfo: use precision fp32")


def runtime_version(backend: str) -> str:
    """The installed version of a runtime package (ImportError with the install hint when missing)."""
    if backend == "openvino":
        return _import_openvino().get_version()
    if backend == "onnxruntime":
        return _import_onnxruntime().__version__
    raise ValueError(f"{backend!r} is not an export runtime (openvino or onnxruntime)")


def _import_openvino():
    try:
        import openvino
    except ImportError as err:
        raise ImportError("maskclip.backend openvino needs the openvino package (pip install openvino==2026.4.1) "
                          "or use maskclip.backend: torch") from err
    return openvino


def _import_onnxruntime():
    try:
        import onnxruntime
    except ImportError as err:
        raise ImportError("maskclip.backend onnxruntime needs the onnxruntime package (pip install "
                          "onnxruntime==1.32.0) or use maskclip.backend: torch") from err
    return onnxruntime


# -------------------------------------------------------------------------------------- runtimes
class OnnxRuntimeEncoder:
    """An ONNX Runtime session over the exported encoder (one session for every mask count)."""

    def __init__(self, *, model_path: Path, threads: int, device: torch.device, max_masks: int,
                 mask_size: tuple[int, int], cache_dir: Path):
        ort = _import_onnxruntime()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.providers = onnxruntime_providers(device, max_masks=max_masks, mask_size=mask_size,
                                               cache_dir=cache_dir)
        self.session = ort.InferenceSession(str(model_path), options, providers=self.providers)
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.name = f"onnxruntime {ort.__version__} ({self.session.get_providers()[0]})"

    def run(self, pixels: np.ndarray, masks: np.ndarray) -> list[np.ndarray]:
        """pixels (1, 3, h, w), masks (M, mh, mw) float32 -> the graph's outputs (float32 arrays)."""
        return self.session.run(self.output_names, dict(zip(INPUT_NAMES, (pixels, masks))))


def onnxruntime_providers(device: torch.device, *, max_masks: int, mask_size: tuple[int, int],
                          cache_dir: Path) -> list:
    """TensorRT > CUDA > CPU execution providers: the GPU ones only for a CUDA device and when present."""
    available = _import_onnxruntime().get_available_providers()
    if device.type != "cuda":
        return [CPU_PROVIDER]
    gpu = {"device_id": device.index or 0}
    providers: list = []
    if TENSORRT_PROVIDER in available:
        shape = "masks:{}x" + "x".join(str(s) for s in mask_size)  # TensorRT's optimisation profile
        providers.append((TENSORRT_PROVIDER, {
            **gpu, "trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache_dir / "tensorrt"),
            "trt_profile_min_shapes": shape.format(1), "trt_profile_opt_shapes": shape.format(max_masks),
            "trt_profile_max_shapes": shape.format(max_masks)}))
    if CUDA_PROVIDER in available:
        providers.append((CUDA_PROVIDER, gpu))
    if not providers:
        LOG.warning("device %s but this onnxruntime has no CUDA/TensorRT provider (install onnxruntime-gpu): "
                    "running the exported encoder on the CPU", device)
    return providers + [CPU_PROVIDER]


class OpenVinoEncoder:
    """An OpenVINO CPU compiled model over the exported encoder (fp32 or bf16, bounded dynamic M)."""

    def __init__(self, *, model_path: Path, threads: int, precision: str, max_masks: int, cache_dir: Path):
        ov = _import_openvino()
        core = ov.Core()
        if precision == "bf16" and "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            raise ValueError("OpenVINO reports no BF16 support on this CPU: use precision fp32")
        model = core.read_model(str(model_path))
        pixels, masks = model.inputs
        model.reshape({pixels.get_any_name(): pixels.get_partial_shape(),
                       masks.get_any_name(): ov.PartialShape([ov.Dimension(1, max_masks),
                                                              *list(masks.get_partial_shape())[1:]])})
        config = {"INFERENCE_PRECISION_HINT": OPENVINO_PRECISION[precision], "INFERENCE_NUM_THREADS": threads,
                  "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1, "CACHE_DIR": str(cache_dir)}
        self.compiled = core.compile_model(model, "CPU", config)
        self.request = self.compiled.create_infer_request()
        self._lock = threading.Lock()  # one infer request: one frame at a time
        self.name = f"openvino {ov.get_version()} CPU {precision}"

    def run(self, pixels: np.ndarray, masks: np.ndarray) -> list[np.ndarray]:
        """pixels (1, 3, h, w), masks (M, mh, mw) float32 -> the graph's outputs (new float32 arrays)."""
        with self._lock:
            self.request.infer({0: pixels, 1: masks})
            return [self.request.get_output_tensor(i).data.astype(np.float32, copy=True)
                    for i in range(len(self.compiled.outputs))]
