"""The export cache: one folder per graph key (everything that changes the exported encoder), checked by
metadata, size and SHA-256, written atomically (a temporary folder renamed into place)."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Callable

import torch

from maskclip_ros.model.maskclip import MaskCLIP
from maskclip_ros.model.tower import InputGeometry

LOG = logging.getLogger(__name__)
EXPORT_FORMAT = "maskclip_ros.export/1"  # bump when the graph's contract changes
OPSET = 18  # ONNX opset of the export (plain MatMul/Softmax attention; both runtimes take it)
MODEL_FILE, META_FILE = "encoder.onnx", "meta.json"
# Model-core sources the graph is traced from: a change to any of them invalidates cached exports.
TRACED_SOURCES = ("maskclip.py", "tower.py", "masks.py", "rma.py", "export.py", "export_cache.py")
HASH_CHUNK = 1 << 24  # bytes per read when hashing cache files


class ExportError(RuntimeError):
    """Exporting or compiling the encoder failed; the message says what to do."""


def tensor_digest(tensors: dict[str, torch.Tensor], extra: object = None) -> str:
    """SHA-256 over names, dtypes, shapes and bytes of tensors (plus a JSON-able ``extra``)."""
    digest = hashlib.sha256(json.dumps(extra, sort_keys=True, default=str).encode())
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())  # no copy
    return digest.hexdigest()


def graph_key(maskclip: MaskCLIP, geometry: InputGeometry, *, mask_size: tuple[int, int],
              max_masks: int) -> dict:
    """Everything that changes the exported graph (JSON-able)."""
    try:
        import onnx
        import onnxscript
    except ImportError as err:
        raise ExportError("exporting the encoder needs onnx and onnxscript (pip install onnx==1.23.2 "
                          "onnxscript==0.7.2), or use maskclip.backend: torch") from err
    tower, rma = maskclip.tower, maskclip.rma
    source_dir = Path(__file__).resolve().parent
    return {
        "format": EXPORT_FORMAT, "opset": OPSET, "mode": maskclip.mode, "clip": tower.model_name,
        "clip_weights": tensor_digest(tower.visual.state_dict()),
        "rma": None if rma is None else tensor_digest(rma.state_dict(), rma.config.to_dict()),
        "rma_layers": None if rma is None else list(rma.config.block_indices),
        "mask_threshold": maskclip.mask_threshold, "input_size": list(geometry.input_size),
        "grid": list(geometry.grid), "mask_size": list(mask_size), "max_masks": max_masks,
        "code": hashlib.sha256(b"".join((source_dir / n).read_bytes() for n in TRACED_SOURCES)).hexdigest(),
        "versions": {"torch": torch.__version__, "onnx": onnx.__version__, "onnxscript": onnxscript.__version__},
    }


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def entry_problem(entry: Path, key: dict) -> str | None:
    """None when ``entry`` holds a complete export for ``key``, else what is wrong with it."""
    if not entry.exists():
        return "missing"
    try:
        meta = json.loads((entry / META_FILE).read_text())
        model = entry / MODEL_FILE
        if meta.get("key") != key:
            return "stale (its key differs)"
        if model.stat().st_size != meta["bytes"] or file_sha256(model) != meta["sha256"]:
            return "corrupt (size or SHA-256 of the ONNX file differs)"
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"unreadable ({type(err).__name__}: {err})"
    return None


def cached_export(key: dict, cache_dir: Path, write: Callable[[Path], None]) -> tuple[Path, float]:
    """The cache entry (folder) for ``key``, made now with ``write(onnx_path)`` if missing or broken; and the
    export seconds (0 on a hit). Writes into a temporary folder and renames it, so a killed export leaves no
    half entry."""
    entry = cache_dir / hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
    problem = entry_problem(entry, key)
    if problem is None:
        LOG.info("exported encoder found in the cache: %s", entry)
        return entry, 0.0
    if problem != "missing":
        LOG.warning("export cache entry %s is %s: rebuilding it", entry, problem)
    tmp = cache_dir / f".tmp-{entry.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir(parents=True)
    except OSError as err:
        raise ExportError(f"cannot write the export cache {cache_dir} ({err}): point the export cache dir at a "
                          "writable folder, or use maskclip.backend: torch") from err
    start = time.perf_counter()
    try:
        write(tmp / MODEL_FILE)
        meta = {"key": key, "bytes": (tmp / MODEL_FILE).stat().st_size, "sha256": file_sha256(tmp / MODEL_FILE)}
        (tmp / META_FILE).write_text(json.dumps(meta, indent=1, sort_keys=True))
        _publish(tmp, entry, key)
    except Exception as err:
        raise ExportError(f"exporting the MaskCLIP encoder ({key['clip']}, mode {key['mode']}) to ONNX failed: "
                          f"{type(err).__name__}: {err}. Use maskclip.backend: torch (same results, slower), "
                          "or check the torch / onnx / onnxscript versions against constraints.txt") from err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    seconds = time.perf_counter() - start
    LOG.info("exported the MaskCLIP encoder to %s in %.1f s", entry, seconds)
    return entry, seconds


def _publish(tmp: Path, entry: Path, key: dict) -> None:
    """Rename the finished export ``tmp`` to ``entry`` (replacing a broken one); another process that
    published a good entry for the same key first wins."""
    shutil.rmtree(entry, ignore_errors=True)
    try:
        os.replace(tmp, entry)
    except OSError:
        if entry_problem(entry, key) is not None:
            raise
