"""The MaskCLIP visual encoder exported to ONNX and run under OpenVINO or ONNX Runtime, with a disk cache.

**What is exported.** ``EncoderGraph`` wraps an existing ``MaskCLIP`` (``tokens`` or ``rma`` mode) and runs
its own pieces (``tower.embed``, ``mask_token_block``, ``rma_block``, ``MaskState``, ``tower.readout``) on
normalised pixels (1, 3, h, w) at one fixed input geometry and masks (M, mh, mw) at one fixed mask size;
M is dynamic, 1 <= M <= the declared bound (M = 0 runs with one padding mask, dropped afterwards). Outputs:
mask embeddings (M, E), the image embedding (E,) and, in ``rma`` mode with refinement, the refined masks
(M, mh, mw). Preprocessing (resize, normalise), the text tower, the vocabulary and the classification stay
in torch, so a vocabulary change never touches the exported graph.

**Exactness.** ``adaptive_avg_pool2d`` exports as is; ``adaptive_max_pool2d`` (Eq. 1's "mask has a pixel in
the patch") has no ONNX translation when the sizes do not divide, so it is decomposed into an exact
equivalent before the ONNX translation: static windows, gathered and max-reduced per axis (max is
separable). The -inf attention bias goes through unchanged (the class column is never blocked).

**Shapes.** One compiled model per input geometry, for the mask size it was first built with (the factory's
``mask_size``, else the first frame's): a frame of another geometry gets its own model (exported or loaded
from the cache on first sight, logged). Masks of another size than the model's are resized bilinearly to
it (the result then differs slightly from torch on those masks; refined masks are resized back to the
caller's size). More than ``max_masks`` masks run in chunks (exact: masks never see each other).

**Cache.** ``build_exported_maskclip`` exports and compiles on first use and caches the ONNX file on disk
(``~/.cache/maskclip_ros/export`` by default), one entry per graph key: a digest of the CLIP's visual
weights, of the RMA parameters and config, the mode, RMA layers, mask threshold, input geometry, mask size,
M bound, the model-core source and the torch / onnx / onnxscript versions. Runtime artefacts (OpenVINO's
compiled-blob cache, TensorRT engines) live in a sub-folder per runtime, runtime version and precision. An
entry whose metadata, size or SHA-256 does not match (stale, truncated, corrupt) is rebuilt with a log line.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from maskclip_ros.model.export_cache import MODEL_FILE, OPSET, ExportError, cached_export, graph_key
from maskclip_ros.model.maskclip import MaskCLIP, MaskCLIPOutput, mask_token_block, rma_block
from maskclip_ros.model.masks import MaskState, as_mask_tensor, prob_to_logit
from maskclip_ros.model.runtimes import (BACKENDS, INPUT_NAMES, OnnxRuntimeEncoder, OpenVinoEncoder,
                                         check_precision, runtime_version)
from maskclip_ros.model.tower import InputGeometry

LOG = logging.getLogger(__name__)

EXPORT_MODES = ("tokens", "rma")
DEFAULT_CACHE_DIR = Path("~/.cache/maskclip_ros/export")
EXAMPLE_MASKS = 3  # masks in the example input (torch.export specialises sizes 0 and 1)
MIN_MASK_BOUND = 2  # smallest declared M bound (a dynamic dimension needs a range)
# exporter loggers that report every graph rewrite at INFO level; held at WARNING while exporting
EXPORTER_LOGGERS = ("onnx_ir", "onnxscript", "torch.onnx", "torch.export", "torch._export")


class EncoderGraph(nn.Module):
    """The traceable encoder: ``forward(pixels (1, 3, h, w), masks (M, mh, mw))`` ->
    (embeddings (M, E), image embedding (E,)[, refined masks (M, mh, mw)]) of one fixed input geometry."""

    def __init__(self, *, maskclip: MaskCLIP, geometry: InputGeometry):
        super().__init__()
        if maskclip.mode not in EXPORT_MODES:
            raise ValueError(f"only modes {EXPORT_MODES} export; mode {maskclip.mode!r} runs on backend torch")
        self.maskclip = maskclip
        self.geometry = geometry
        self.cascade = maskclip.rma is not None and bool(maskclip.rma.config.block_indices)
        self.refines = self.cascade and any(maskclip.rma.layer(i).refine is not None
                                            for i in maskclip.rma.config.block_indices)
        # the interpolated positional embedding is computed (and cached by the tower) before tracing
        maskclip.tower.positional_embedding(geometry.grid)

    @property
    def output_names(self) -> tuple[str, ...]:
        return ("embeddings", "image_embedding") + (("masks_out",) if self.refines else ())

    def forward(self, pixels: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, ...]:
        model, tower = self.maskclip, self.maskclip.tower
        rma, grid = model.rma, self.geometry.grid
        x = tower.embed(pixels)  # (1, 1 + N, D)
        m = x[:, :1].expand(-1, masks.shape[0], -1)  # (1, M, D) copies of the class token
        state = MaskState.initial(masks, self.geometry, threshold=model.mask_threshold, dtype=x.dtype,
                                  subdivisions=rma.config.mask_resolution if self.cascade else None)
        for index, block in enumerate(tower.blocks):
            layer = rma.layer(index) if rma is not None else None
            if layer is None:
                x, m = mask_token_block(tower, block, x, m, state.bias)
                continue
            x, m, patch_logits = rma_block(tower, block, layer, x, m, state)
            if layer.refine is not None:
                delta = layer.refine(patch_logits.reshape(*patch_logits.shape[:2], *grid))  # (M, gh, gw)
                state, _ = state.refined(delta, need_bias=index < tower.depth - 1,
                                         need_patches=rma.next_index(index) is not None)
        outputs = (tower.readout(m[0]), tower.readout(x[0, 0]))
        return outputs + ((refined_masks(state),) if self.refines else ())


def refined_masks(state: MaskState) -> torch.Tensor:
    """``MaskState.output_masks`` in one piece (its chunk loop cannot trace a dynamic M): (M, h, w)."""
    up = F.interpolate(state.residual[:, None], size=state.probs0.shape[-2:], mode="bilinear",
                       align_corners=False)[:, 0]  # (M, h, w)
    return torch.sigmoid(up + prob_to_logit(state.probs0))


def exact_adaptive_max_pool2d(x: torch.Tensor, output_size) -> tuple[torch.Tensor, torch.Tensor]:
    """aten.adaptive_max_pool2d for static spatial sizes, in ops that export: (..., H, W) -> (..., oh, ow).

    Windows as PyTorch's: [floor(i*H/oh), ceil((i+1)*H/oh)). Divisible sizes use a plain max pool; others
    gather each window (short ones padded by repeating their last index) and take the max, per axis.
    Returns (values, indices); the indices are a placeholder (zeros): the traced code never uses them."""
    out = tuple(int(s) for s in output_size)
    size = tuple(int(s) for s in x.shape[-2:])
    if all(s % o == 0 for s, o in zip(size, out)):
        kernel = tuple(s // o for s, o in zip(size, out))
        values = F.max_pool2d(x, kernel, kernel)
    else:
        values = _window_max(_window_max(x, -2, size[0], out[0]), -1, size[1], out[1])
    return values, torch.zeros_like(values, dtype=torch.int64)


def _window_max(x: torch.Tensor, dim: int, size_in: int, size_out: int) -> torch.Tensor:
    """Max over adaptive-pooling windows along ``dim`` (-2 or -1): length size_in -> size_out."""
    width = max(math.ceil((i + 1) * size_in / size_out) - math.floor(i * size_in / size_out)
                for i in range(size_out))  # longest window
    out = torch.arange(size_out, device=x.device)
    start = out * size_in // size_out  # (out,) floor(i * L / out)
    last = ((out + 1) * size_in + size_out - 1) // size_out - 1  # (out,) ceil((i + 1) * L / out) - 1
    index = torch.minimum(start[:, None] + torch.arange(width, device=x.device), last[:, None])  # (out, k)
    picked = x.index_select(dim, index.flatten())  # (..., out * k, ...)
    return picked.unflatten(dim, (size_out, width)).amax(dim)


def export_onnx(graph: EncoderGraph, path: Path, *, mask_size: tuple[int, int], max_masks: int) -> None:
    """torch.export (dynamic M in 1..max_masks) -> exact max-pool decomposition -> ONNX file at ``path``."""
    pixels = torch.zeros(1, 3, *graph.geometry.input_size, device=graph.maskclip.tower.device)
    masks = torch.rand(min(EXAMPLE_MASKS, max_masks), *mask_size,
                       generator=torch.Generator().manual_seed(0)).to(pixels.device)  # (M, mh, mw)
    count = torch.export.Dim("masks", min=1, max=max_masks)
    with torch.no_grad(), _quiet_exporter_logs():
        program = torch.export.export(graph, (pixels, masks), strict=False,
                                      dynamic_shapes={"pixels": None, "masks": {0: count}})
        program = program.run_decompositions(
            {torch.ops.aten.adaptive_max_pool2d.default: exact_adaptive_max_pool2d})
        onnx_program = torch.onnx.export(program, (pixels, masks), input_names=list(INPUT_NAMES),
                                         output_names=list(graph.output_names), opset_version=OPSET,
                                         dynamo=True, verbose=False)
    onnx_program.save(str(path), external_data=False)


@contextlib.contextmanager
def _quiet_exporter_logs():
    """Hold the exporter's chatty loggers at WARNING (restored afterwards)."""
    loggers = [logging.getLogger(name) for name in EXPORTER_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(max(logger.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


# ------------------------------------------------------------------------------------ the cache
# --------------------------------------------------------------------------- the exported model
@dataclass(frozen=True)
class ExportSpec:
    """How to export and run: the arguments of ``build_exported_maskclip`` after validation."""

    backend: str  # openvino or onnxruntime
    precision: str  # fp32 or bf16 (openvino only)
    cache_dir: Path  # export cache root (outside the repository)
    max_masks: int  # declared upper bound of M per graph run
    threads: int  # runtime threads


@dataclass(frozen=True)
class BuildInfo:
    """How one compiled encoder came to be (logs, benchmarks, tests)."""

    entry: Path  # cache entry folder holding the ONNX file
    input_size: tuple[int, int]  # (h, w) ViT input of the graph
    mask_size: tuple[int, int]  # (mh, mw) mask size of the graph
    exported: bool  # False = the ONNX file came from the cache
    export_seconds: float  # 0.0 on a cache hit
    compile_seconds: float  # loading + compiling in the runtime
    runtime: str  # runtime, version, device / precision


class ExportedMaskCLIP:
    """A ``MaskCLIP`` stand-in whose ``tokens`` / ``rma`` encoder runs exported (same call interface as the
    pipeline uses: ``__call__(image, masks) -> MaskCLIPOutput``, ``classify``, ``tower``, ``mode``, ``eval``).

    One compiled model per input geometry, for the mask size first seen with it (or given to the factory);
    every M from 0 to ``max_masks`` runs on it, more masks run in chunks of ``max_masks`` (exact: a mask's
    embedding and refinement never depend on the other masks). Built by ``build_exported_maskclip``."""

    def __init__(self, *, maskclip: MaskCLIP, spec: ExportSpec):
        self.maskclip = maskclip
        self.spec = spec
        self._compiled: dict[tuple, tuple[object, BuildInfo]] = {}  # (input size, grid) -> runtime, info
        self._warned: set[tuple] = set()

    @property
    def tower(self):
        return self.maskclip.tower

    @property
    def mode(self) -> str:
        return self.maskclip.mode

    @property
    def no_object_embedding(self) -> torch.Tensor | None:
        return self.maskclip.no_object_embedding

    @property
    def builds(self) -> list[BuildInfo]:
        """One BuildInfo per compiled model, in build order."""
        return [info for _, info in self._compiled.values()]

    def classify(self, embeddings: torch.Tensor, text_embeddings: torch.Tensor):
        """As ``MaskCLIP.classify`` (in torch: the vocabulary never enters the exported graph)."""
        return self.maskclip.classify(embeddings, text_embeddings)

    def eval(self) -> "ExportedMaskCLIP":
        self.maskclip.eval()
        return self

    def prepare(self, image_size: tuple[int, int], mask_size: tuple[int, int]) -> BuildInfo:
        """Export / compile now for frames of ``image_size`` (H, W) with masks of ``mask_size`` (mh, mw)."""
        return self._runtime(self.tower.geometry(image_size), tuple(int(s) for s in mask_size))[1]

    def __call__(self, image: np.ndarray | torch.Tensor, masks: np.ndarray | torch.Tensor, *,
                 with_aux: bool = False) -> MaskCLIPOutput:
        """As ``MaskCLIP.forward``: image (H, W, 3) uint8, masks (M, h, w) (not modified), any M >= 0."""
        if with_aux:
            raise ValueError("per-layer mask logits (training) need maskclip.backend: torch")
        tower = self.tower
        probs = as_mask_tensor(masks, tower.device)  # (M, h, w) new float tensor
        with torch.no_grad(), torch.autocast(device_type=tower.device.type, enabled=False):
            pixels, geometry = tower.preprocess(image)  # (1, 3, h, w)
        runtime, info = self._runtime(geometry, tuple(probs.shape[-2:]))
        embeddings, image_embedding, refined = self._run(runtime, pixels, self._fit_masks(probs, info.mask_size))
        out_masks = probs
        if refined is not None:
            out_masks = refined.to(tower.device)  # (M, mh, mw)
            if tuple(out_masks.shape[-2:]) != tuple(probs.shape[-2:]):
                out_masks = F.interpolate(out_masks[:, None], size=probs.shape[-2:], mode="bilinear",
                                          align_corners=False)[:, 0]
        return MaskCLIPOutput(embeddings=embeddings.to(tower.device), masks=out_masks,
                              image_embedding=image_embedding.to(tower.device))

    def _run(self, runtime, pixels: torch.Tensor, masks: torch.Tensor):
        """pixels (1, 3, h, w), masks (M, mh, mw) -> embeddings (M, E), image embedding (E,), refined masks
        (M, mh, mw) or None; in chunks of at most max_masks, M = 0 as one padding mask (dropped)."""
        pixels_np, bound, count = pixels.cpu().numpy(), self.spec.max_masks, masks.shape[0]
        padded = masks if count else masks.new_zeros(1, *masks.shape[-2:])
        chunks = [runtime.run(pixels_np, padded[i:i + bound].cpu().numpy())
                  for i in range(0, padded.shape[0], bound)]
        joined = [np.concatenate(parts)[:count] for parts in zip(*chunks)]  # per output, padding dropped
        refined = torch.from_numpy(joined[2]) if len(joined) > 2 else None
        return torch.from_numpy(joined[0]), torch.from_numpy(np.asarray(chunks[0][1])), refined

    def _fit_masks(self, probs: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """(M, h, w) -> (M, mh, mw), resized bilinearly when the graph has another mask size (logged once)."""
        shape = tuple(probs.shape[-2:])
        if shape == size or probs.shape[0] == 0:
            return probs if shape == size else probs.new_zeros(0, *size)
        if (shape, size) not in self._warned:
            self._warned.add((shape, size))
            LOG.warning("masks of size %s resized to the exported encoder's mask size %s (results then differ "
                        "slightly from the torch backend)", shape, size)
        return F.interpolate(probs[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]

    def _runtime(self, geometry: InputGeometry, mask_size: tuple[int, int]) -> tuple[object, BuildInfo]:
        """The compiled model of this input geometry (built for ``mask_size`` when there is none yet)."""
        key = (tuple(geometry.input_size), tuple(geometry.grid))
        if key not in self._compiled:
            if self._compiled:
                LOG.warning("new input geometry %s: building another exported encoder", geometry.input_size)
            self._compiled[key] = compile_encoder(self.maskclip, geometry, mask_size, self.spec)
        return self._compiled[key]


def compile_encoder(maskclip: MaskCLIP, geometry: InputGeometry, mask_size: tuple[int, int],
                    spec: ExportSpec) -> tuple[object, BuildInfo]:
    """Export (or take from the cache) and compile the encoder of one input geometry and mask size. A cached
    entry the runtime cannot load is rebuilt once; failures raise ExportError saying what to do."""
    graph = EncoderGraph(maskclip=maskclip, geometry=geometry)
    key = graph_key(maskclip, geometry, mask_size=mask_size, max_masks=spec.max_masks)

    def write(path: Path) -> None:
        export_onnx(graph, path, mask_size=mask_size, max_masks=spec.max_masks)

    entry, export_seconds = cached_export(key, spec.cache_dir, write)
    start = time.perf_counter()
    try:
        runtime = open_runtime(entry, spec, maskclip.tower.device, mask_size)
    except Exception as err:
        if export_seconds:
            raise _runtime_error(spec, err) from err
        LOG.warning("cached export %s does not load in %s (%s: %s): rebuilding it", entry, spec.backend,
                    type(err).__name__, err)
        shutil.rmtree(entry, ignore_errors=True)
        entry, export_seconds = cached_export(key, spec.cache_dir, write)
        start = time.perf_counter()
        try:
            runtime = open_runtime(entry, spec, maskclip.tower.device, mask_size)
        except Exception as again:
            raise _runtime_error(spec, again) from again
    seconds = time.perf_counter() - start
    LOG.info("compiled the exported encoder under %s in %.1f s (export %.1f s)", runtime.name, seconds,
             export_seconds)
    return runtime, BuildInfo(entry=entry, input_size=tuple(geometry.input_size), mask_size=mask_size,
                              exported=export_seconds > 0, export_seconds=export_seconds,
                              compile_seconds=seconds, runtime=runtime.name)


def open_runtime(entry: Path, spec: ExportSpec, device: torch.device, mask_size: tuple[int, int]):
    """The runtime over the entry's ONNX file; its own artefacts go to a per-runtime sub-folder."""
    version = re.sub(r"[^A-Za-z0-9._-]+", "_", runtime_version(spec.backend))  # OpenVINO's has slashes
    runtime_dir = entry / f"{spec.backend}-{version}-{spec.precision}"
    runtime_dir.mkdir(exist_ok=True)
    if spec.backend == "openvino":
        return OpenVinoEncoder(model_path=entry / MODEL_FILE, threads=spec.threads, precision=spec.precision,
                               max_masks=spec.max_masks, cache_dir=runtime_dir)
    return OnnxRuntimeEncoder(model_path=entry / MODEL_FILE, threads=spec.threads, device=device,
                              max_masks=spec.max_masks, mask_size=mask_size, cache_dir=runtime_dir)


def _runtime_error(spec: ExportSpec, err: Exception) -> ExportError:
    return ExportError(f"{spec.backend} could not compile the exported MaskCLIP encoder ({type(err).__name__}: "
                       f"{err}); use maskclip.backend: torch, or check the {spec.backend} version against "
                       "constraints.txt")


def build_exported_maskclip(maskclip: MaskCLIP, *, backend: str, precision: str, cache_dir: str | os.PathLike,
                            max_masks: int, image_size: tuple[int, int] | None,
                            mask_size: tuple[int, int] | None, threads: int = 0) -> ExportedMaskCLIP:
    """The one factory: ``maskclip`` (tokens or rma mode) with its encoder exported and compiled under
    ``backend`` (openvino or onnxruntime) at ``precision`` (fp32; bf16 with openvino on CPUs that have it),
    for up to ``max_masks`` masks per graph run (proposals.max_proposals). With ``image_size`` (H, W) and
    ``mask_size`` (mh, mw) the first model is built now (export errors surface here, e.g. at configure);
    None = on the first frame. Cached under ``cache_dir`` ("" = ~/.cache/maskclip_ros/export); ``threads``
    0 = torch's thread count.

    Raises ValueError for impossible combinations, ExportError when export or compilation fails."""
    if backend not in BACKENDS or backend == "torch":
        raise ValueError(f"build_exported_maskclip runs openvino or onnxruntime, got {backend!r} (backend torch "
                         "uses the MaskCLIP model itself)")
    check_precision(backend, precision, maskclip.tower.device)
    if maskclip.mode not in EXPORT_MODES:
        raise ValueError(f"maskclip.mode {maskclip.mode!r} does not export (only {EXPORT_MODES}): use "
                         "maskclip.backend: torch")
    if max_masks < 1:
        raise ValueError(f"max_masks must be positive, got {max_masks}")
    spec = ExportSpec(backend=backend, precision=precision,
                      cache_dir=Path(os.path.expanduser(str(cache_dir or DEFAULT_CACHE_DIR))),
                      max_masks=max(int(max_masks), MIN_MASK_BOUND), threads=int(threads) or torch.get_num_threads())
    exported = ExportedMaskCLIP(maskclip=maskclip.eval(), spec=spec)
    if image_size is not None and mask_size is not None:
        exported.prepare(image_size, mask_size)
    return exported
