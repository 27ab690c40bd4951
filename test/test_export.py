"""The exported MaskCLIP encoder (``model.export``, ``model.runtimes``): parity with the torch model under each
installed runtime (fp32; tokens and rma with non-zero RMA parameters; M in {0, 1, 7, bound}; two input
geometries; the tiny test CLIP and the committed small CLIP), the disk cache (hit, stale, corrupt), failures
that say what to do, and bf16 detection / refusal.

The ONNX files are exported once per (model, mode, geometry) into a module-wide cache and shared by both
runtimes (the cache key does not depend on the runtime). Exports dominate the time (~5-15 s each on 2 cores),
so the small CLIP's second geometry is marked slow."""
from __future__ import annotations

import importlib.util
import json
import logging
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("onnx")
pytest.importorskip("onnxscript")

from maskclip_ros.model import export, export_cache, runtimes  # noqa: E402
from maskclip_ros.model.export import build_exported_maskclip, exact_adaptive_max_pool2d  # noqa: E402
from maskclip_ros.model.export_cache import ExportError, graph_key  # noqa: E402
from maskclip_ros.config import asset  # noqa: E402
from maskclip_ros.model.factory import ClipConfig, build_clip, load_rma_checkpoint  # noqa: E402
from maskclip_ros.model.rma import RelativeMaskAttention  # noqa: E402
from model_helpers import make_maskclip, randomize, rma_config, tiny_tower  # noqa: E402

BACKENDS = [b for b in ("onnxruntime", "openvino") if importlib.util.find_spec(b) is not None]
TOLERANCE = 1e-4  # max abs difference to torch fp32 (embeddings, image embedding, refined masks)
COUNTS = (0, 1, 7)  # mask counts checked besides the bound
# (image size, mask size) per geometry; the first tiny one does not divide the patch grid (exact max pool)
TINY_GEOMETRIES = {"wide": ((48, 80), (48, 80)), "tall": ((96, 64), (48, 32))}
SMALL_GEOMETRIES = {"480x640": ((480, 640), (240, 320)), "300x200": ((300, 200), (150, 100))}
TINY_BOUND, SMALL_BOUND = 12, 100
SMALL_CLIP = "maskclip-ros-tiny-vit16"
SMALL_RMA = "rma/maskclip-ros-tiny-vit16-rma.pt"
SMALL_SHORT_SIDE = {"480x640": 480, "300x200": 224}  # the second geometry at a smaller input

needs_backend = pytest.mark.skipif(not BACKENDS, reason="neither onnxruntime nor openvino is installed")


def random_masks(count: int, size: tuple[int, int], seed: int) -> np.ndarray:
    """(count, h, w) float32: soft ellipses and hard boxes of random size/place; mask 0 empty, mask 1 full."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[:h, :w]
    masks = np.zeros((count, h, w), np.float32)
    for i in range(count):
        cy, cx, ry, rx = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(2, h / 2), rng.uniform(2, w / 2)
        ellipse = 1.5 - ((yy - cy) / ry) ** 2 - ((xx - cx) / rx) ** 2
        masks[i] = np.clip(ellipse, 0, 1) if i % 2 else (ellipse > 0).astype(np.float32)
    if count > 1:
        masks[0], masks[1] = 0.0, 1.0
    return masks


def image_of(size: tuple[int, int], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(*size, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("export_cache")


@pytest.fixture(scope="module")
def tiny_models():
    """mode -> MaskCLIP on the seeded tiny CLIP; rma with random non-zero parameters."""
    tower = tiny_tower(seed=0, short_side=64)
    rma = randomize(RelativeMaskAttention(rma_config(tower, refine_hidden=8)), seed=3, std=0.1)
    return {"tokens": make_maskclip(tower, "tokens").eval(), "rma": make_maskclip(tower, "rma", rma).eval()}


@pytest.fixture(scope="module")
def small_models():
    """(geometry, mode) -> MaskCLIP on the committed small CLIP; rma with the committed trained parameters."""
    models = {}
    for name, short_side in SMALL_SHORT_SIDE.items():
        tower = build_clip(ClipConfig(model_name=SMALL_CLIP, pretrained="", checkpoint=f"clip/{SMALL_CLIP}.pt",
                                      random_init=False, allow_download=False, cache_dir="", short_side=short_side))
        rma = load_rma_checkpoint(asset(SMALL_RMA), tower)
        models[name, "tokens"] = make_maskclip(tower, "tokens").eval()
        models[name, "rma"] = make_maskclip(tower, "rma", rma).eval()
    return models


def assert_parity(model, exported, image: np.ndarray, masks: np.ndarray) -> None:
    with torch.no_grad():
        ref, out = model(image, masks), exported(image, masks)
    assert out.embeddings.shape == ref.embeddings.shape and out.masks.shape == ref.masks.shape
    assert (out.image_embedding - ref.image_embedding).abs().max() <= TOLERANCE
    if masks.shape[0]:
        assert (out.embeddings - ref.embeddings).abs().max() <= TOLERANCE
        assert (out.masks - ref.masks).abs().max() <= TOLERANCE


def check_every_count(model, backend: str, cache_dir, geometry, bound: int) -> None:
    image_size, mask_size = geometry
    exported = build_exported_maskclip(model, backend=backend, precision="fp32", cache_dir=cache_dir,
                                       max_masks=bound, image_size=image_size, mask_size=mask_size)
    image, masks = image_of(image_size), random_masks(bound, mask_size, seed=bound)
    for count in (*COUNTS, bound):
        assert_parity(model, exported, image, masks[:count])
    assert len(exported._compiled) == 1  # one compiled model served every count


# ----------------------------------------------------------------------------------------- parity
@needs_backend
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("geometry", list(TINY_GEOMETRIES))
@pytest.mark.parametrize("mode", ["tokens", "rma"])
def test_tiny_clip_parity(tiny_models, cache_dir, mode, geometry, backend):
    check_every_count(tiny_models[mode], backend, cache_dir, TINY_GEOMETRIES[geometry], TINY_BOUND)


@needs_backend
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("geometry", [pytest.param(name, marks=[pytest.mark.slow] if i else [])
                                      for i, name in enumerate(SMALL_GEOMETRIES)])
@pytest.mark.parametrize("mode", ["tokens", "rma"])
def test_small_clip_parity(small_models, cache_dir, mode, geometry, backend):
    bound = SMALL_BOUND if geometry == "480x640" else TINY_BOUND
    check_every_count(small_models[geometry, mode], backend, cache_dir, SMALL_GEOMETRIES[geometry], bound)


def test_rma_parameters_matter(tiny_models):
    """The parity tests' rma model really differs from tokens (relative term and refinement are active)."""
    image, masks = image_of((48, 80)), random_masks(5, (48, 80), seed=1)
    with torch.no_grad():
        tokens, rma = tiny_models["tokens"](image, masks), tiny_models["rma"](image, masks)
    assert (tokens.embeddings - rma.embeddings).abs().max() > 1e-2
    assert (torch.as_tensor(masks) - rma.masks).abs().max() > 1e-2


@pytest.mark.parametrize("size,out", [((48, 80), (4, 7)), ((50, 70), (30, 40)), ((7, 5), (3, 2)),
                                      ((32, 48), (4, 6))])
def test_exact_adaptive_max_pool(size, out):
    x = torch.randn(3, 2, *size)
    values, _ = exact_adaptive_max_pool2d(x, out)
    assert torch.equal(values, F.adaptive_max_pool2d(x, out))


# -------------------------------------------------------------------------------------- interface
@needs_backend
def test_interface_and_mask_resize(tiny_models, cache_dir):
    """classify / tower / mode / eval as MaskCLIP; masks of another size are resized to the graph's mask
    size (equal to torch on the resized masks), refined masks come back at the caller's size; more masks
    than the bound run in chunks, equal to torch."""
    model = tiny_models["rma"]
    exported = build_exported_maskclip(model, backend=BACKENDS[0], precision="fp32", cache_dir=cache_dir,
                                       max_masks=TINY_BOUND, image_size=(48, 80), mask_size=(48, 80))
    assert exported.eval() is exported and exported.tower is model.tower and exported.mode == "rma"
    image, small = image_of((48, 80)), random_masks(4, (24, 40), seed=2)
    resized = F.interpolate(torch.as_tensor(small)[:, None], size=(48, 80), mode="bilinear",
                            align_corners=False)[:, 0]
    with torch.no_grad():
        out, ref = exported(image, small), model(image, resized)
    assert out.masks.shape == (4, 24, 40)
    assert (out.embeddings - ref.embeddings).abs().max() <= TOLERANCE
    text = torch.nn.functional.normalize(torch.randn(3, model.tower.embed_dim), dim=-1)
    assert torch.equal(exported.classify(out.embeddings, text).probs, model.classify(out.embeddings, text).probs)
    assert_parity(model, exported, image, random_masks(2 * TINY_BOUND + 3, (48, 80), seed=0))  # in chunks


@needs_backend
def test_new_geometry_builds_another_model(tiny_models, cache_dir):
    model = tiny_models["tokens"]
    exported = build_exported_maskclip(model, backend=BACKENDS[0], precision="fp32", cache_dir=cache_dir,
                                       max_masks=TINY_BOUND, image_size=(48, 80), mask_size=(48, 80))
    image_size, mask_size = TINY_GEOMETRIES["tall"]
    assert_parity(model, exported, image_of(image_size), random_masks(3, mask_size, seed=4))
    assert [info.input_size for info in exported.builds] == [(64, 112), (96, 64)]


def test_refuses_crop_mode_and_torch_backend(tiny_models):
    crop = make_maskclip(tiny_models["tokens"].tower, "crop")
    with pytest.raises(ValueError, match="backend: torch"):
        build_exported_maskclip(crop, backend="onnxruntime", precision="fp32", cache_dir="", max_masks=4,
                                image_size=(48, 80), mask_size=(48, 80))
    with pytest.raises(ValueError, match="openvino or onnxruntime"):
        build_exported_maskclip(tiny_models["tokens"], backend="torch", precision="fp32", cache_dir="",
                                max_masks=4, image_size=(48, 80), mask_size=(48, 80))


# ------------------------------------------------------------------------------------------ cache
def build_tiny(model, cache_dir, backend=None):
    return build_exported_maskclip(model, backend=backend or BACKENDS[0], precision="fp32", cache_dir=cache_dir,
                                   max_masks=TINY_BOUND, image_size=(48, 80), mask_size=(48, 80))


@needs_backend
def test_cache_hit_does_not_export(tiny_models, cache_dir, monkeypatch):
    first = build_tiny(tiny_models["tokens"], cache_dir)

    def no_export(*args, **kwargs):
        raise AssertionError("exported although the cache holds the entry")

    monkeypatch.setattr(export, "export_onnx", no_export)
    for backend in BACKENDS:
        again = build_tiny(tiny_models["tokens"], cache_dir, backend)
        assert not again.builds[0].exported and again.builds[0].entry == first.builds[0].entry


@needs_backend
def test_stale_and_corrupt_entries_are_rebuilt(tiny_models, cache_dir, tmp_path, caplog):
    """A copy of a good entry is found; with another key in its metadata it is stale; with a truncated ONNX
    file it is corrupt and rebuilt (logged), and the rebuilt model is right."""
    model = tiny_models["tokens"]
    good = build_tiny(model, cache_dir).builds[0].entry
    entry = tmp_path / good.name
    shutil.copytree(good, entry)
    key = json.loads((entry / export_cache.META_FILE).read_text())["key"]
    assert export_cache.entry_problem(entry, key) is None
    assert export_cache.entry_problem(entry, {**key, "format": "an older format"}).startswith("stale")
    model_file = entry / export_cache.MODEL_FILE
    model_file.write_bytes(model_file.read_bytes()[: model_file.stat().st_size // 2])  # truncated
    with caplog.at_level(logging.WARNING, logger=export_cache.LOG.name):
        rebuilt = build_tiny(model, tmp_path)
    assert rebuilt.builds[0].exported and rebuilt.builds[0].entry == entry and "corrupt" in caplog.text
    assert export_cache.entry_problem(entry, key) is None
    assert_parity(model, rebuilt, image_of((48, 80)), random_masks(3, (48, 80), seed=5))
    assert not list(tmp_path.glob(".tmp-*"))  # no temporary folders left behind


def test_key_covers_what_changes_the_graph(tiny_models):
    model = tiny_models["rma"]
    geometry = model.tower.geometry((48, 80))
    base = graph_key(model, geometry, mask_size=(48, 80), max_masks=TINY_BOUND)
    assert graph_key(model, geometry, mask_size=(48, 80), max_masks=TINY_BOUND) == base
    changed = [graph_key(model, geometry, mask_size=(24, 40), max_masks=TINY_BOUND),
               graph_key(model, geometry, mask_size=(48, 80), max_masks=TINY_BOUND + 1),
               graph_key(model, model.tower.geometry((96, 64)), mask_size=(48, 80), max_masks=TINY_BOUND),
               graph_key(tiny_models["tokens"], geometry, mask_size=(48, 80), max_masks=TINY_BOUND)]
    other_rma = RelativeMaskAttention(model.rma.config)
    other_rma.load_state_dict(model.rma.state_dict())
    with torch.no_grad():
        next(other_rma.parameters()).add_(1e-3)
    changed.append(graph_key(make_maskclip(model.tower, "rma", other_rma), geometry, mask_size=(48, 80),
                             max_masks=TINY_BOUND))
    other_clip = tiny_tower(seed=1, short_side=64)
    changed.append(graph_key(make_maskclip(other_clip, "tokens"), geometry, mask_size=(48, 80),
                             max_masks=TINY_BOUND))
    assert all(key != base for key in changed[:-1]) and changed[-1]["clip_weights"] != base["clip_weights"]


def test_export_failure_says_what_to_do(tiny_models, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("unsupported operator")

    monkeypatch.setattr(export, "export_onnx", broken)
    with pytest.raises(ExportError, match="maskclip.backend: torch"):
        build_tiny(tiny_models["tokens"], tmp_path, backend="onnxruntime")
    assert not list(tmp_path.glob(".tmp-*"))


# -------------------------------------------------------------------------------------- precision
def test_cpu_flag_detection(tmp_path, monkeypatch):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16\n\nprocessor\t: 1\n")
    assert "avx512_bf16" in runtimes.cpu_flags(cpuinfo)
    assert runtimes.cpu_flags(tmp_path / "missing") == frozenset()
    monkeypatch.setattr(runtimes, "CPUINFO", cpuinfo)
    assert runtimes.cpu_supports_bf16()
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse avx2\n")
    assert not runtimes.cpu_supports_bf16()


def test_bf16_refused_where_unsupported(tiny_models, monkeypatch):
    monkeypatch.setattr(runtimes, "cpu_supports_bf16", lambda: False)
    for backend in ("torch", "openvino"):
        with pytest.raises(ValueError, match="use precision fp32"):
            runtimes.check_precision(backend, "bf16", "cpu")
    with pytest.raises(ValueError, match="use precision fp32"):
        build_exported_maskclip(tiny_models["tokens"], backend="openvino", precision="bf16", cache_dir="",
                                max_masks=4, image_size=(48, 80), mask_size=(48, 80))
    with pytest.raises(ValueError, match="not available with maskclip.backend onnxruntime"):
        runtimes.check_precision("onnxruntime", "bf16", "cpu")
    with pytest.raises(ValueError, match="CUDA"):
        runtimes.check_precision("torch", "fp16", "cpu")
    monkeypatch.setattr(runtimes, "cpu_supports_bf16", lambda: True)
    runtimes.check_precision("openvino", "bf16", "cpu")
    runtimes.check_precision("torch", "bf16", "cpu")


@pytest.mark.skipif("openvino" not in BACKENDS or not runtimes.cpu_supports_bf16(),
                    reason="needs openvino and a CPU with native bf16")
def test_openvino_bf16_close_to_fp32(tiny_models, cache_dir):
    model = tiny_models["rma"]
    exported = build_exported_maskclip(model, backend="openvino", precision="bf16", cache_dir=cache_dir,
                                       max_masks=TINY_BOUND, image_size=(48, 80), mask_size=(48, 80))
    image, masks = image_of((48, 80)), random_masks(7, (48, 80), seed=6)
    with torch.no_grad():
        ref, out = model(image, masks), exported(image, masks)
    assert F.cosine_similarity(ref.embeddings, out.embeddings).min() > 0.98


def test_gpu_providers_only_when_present(monkeypatch, tmp_path, caplog):
    ort = pytest.importorskip("onnxruntime")
    kwargs = dict(max_masks=8, mask_size=(24, 32), cache_dir=tmp_path)
    assert runtimes.onnxruntime_providers(torch.device("cpu"), **kwargs) == ["CPUExecutionProvider"]
    monkeypatch.setattr(ort, "get_available_providers",
                        lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])
    names = [p[0] if isinstance(p, tuple) else p for p in runtimes.onnxruntime_providers(torch.device("cuda:1"),
                                                                                           **kwargs)]
    assert names == ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with caplog.at_level(logging.WARNING):
        assert runtimes.onnxruntime_providers(torch.device("cuda"), **kwargs) == ["CPUExecutionProvider"]
    assert "onnxruntime-gpu" in caplog.text
