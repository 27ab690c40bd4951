"""The one loader: CLIP towers (open_clip name + pretrained tag, local checkpoint, or random init), MaskCLIP
models, and RMA checkpoints; ``load_weights_file`` also reads the mmdet proposal networks' weights. Nothing
else in the project opens a weights file or downloads.

* Custom open_clip configs in ``maskclip_ros/assets/clip_configs/*.json`` are registered with
  ``open_clip.add_model_config``, so ``clip.model_name`` can name them.
* Downloads happen only with ``clip.allow_download: true``. Otherwise a pretrained tag must already be in
  the local open_clip / Hugging Face cache, else a clear error says what to do (no network call is made:
  the cached file is found first, and the tokenizer is built with ``HF_HUB_OFFLINE`` set for that call only).
* Local checkpoints are ``torch.save``-d state dicts (fp16 allowed: floating tensors are cast to fp32),
  loaded with ``weights_only=True``; relative paths resolve against the package's assets directory.
* RMA checkpoints hold only the added parameters plus their ``RMAConfig``; a checkpoint for another CLIP
  (name, shape or weights) or other layers is refused with a clear error.
"""
from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from maskclip_ros.config import ASSETS_DIR, asset
from maskclip_ros.model.maskclip import MaskCLIP, MaskCLIPConfig
from maskclip_ros.model.rma import RelativeMaskAttention, RMAConfig, default_block_indices, parse_layers
from maskclip_ros.model.tower import ClipTower

LOG = logging.getLogger(__name__)
CLIP_CONFIG_DIR = ASSETS_DIR / "clip_configs"
RMA_CHECKPOINT_FORMAT = "maskclip_ros.rma/1"
FINGERPRINT_SIZE = 8  # class-embedding values stored with RMA checkpoints to identify the CLIP weights
FINGERPRINT_RTOL = 1e-2  # loose enough for fp16 storage / autocast, tight enough for other weights


@dataclass(frozen=True)
class ClipConfig:
    """The ``clip`` section of the params (config/default.yaml documents every field)."""

    model_name: str
    pretrained: str
    checkpoint: str
    random_init: bool
    allow_download: bool
    cache_dir: str
    short_side: int

    def __post_init__(self) -> None:
        sources = [bool(self.pretrained), bool(self.checkpoint), bool(self.random_init)]
        if sum(sources) != 1:
            raise ValueError(
                "set exactly one CLIP weight source: clip.pretrained (an open_clip tag), clip.checkpoint (a "
                f"local file) or clip.random_init: true (tests only); got pretrained={self.pretrained!r}, "
                f"checkpoint={self.checkpoint!r}, random_init={self.random_init}")


def register_asset_configs() -> None:
    """Register the package's open_clip model configs (idempotent)."""
    import open_clip
    from open_clip import factory as oc_factory

    if CLIP_CONFIG_DIR.is_dir() and CLIP_CONFIG_DIR not in getattr(oc_factory, "_MODEL_CONFIG_PATHS", []):
        open_clip.add_model_config(CLIP_CONFIG_DIR)


# ------------------------------------------------------------------------------------------- CLIP
def build_clip(cfg: ClipConfig, device: str | torch.device = "cpu") -> ClipTower:
    """Build the frozen CLIP tower described by ``cfg`` on ``device`` (weights in fp32).

    Raises FileNotFoundError / ValueError with what to do for unknown models, missing or corrupt weights.
    """
    import open_clip

    register_asset_configs()
    if cfg.model_name not in open_clip.list_models():
        raise ValueError(f"unknown open_clip model {cfg.model_name!r}: use a built-in name (e.g. ViT-B-16) or put "
                         f"its config json into {CLIP_CONFIG_DIR}")
    if cfg.checkpoint:
        path = asset(cfg.checkpoint)
        clip = _create_unloaded(cfg.model_name)
        load_clip_state_dict(clip, path)
        LOG.info("CLIP %s: weights from %s", cfg.model_name, path)
    elif cfg.pretrained:
        clip = _create_pretrained(cfg)
        LOG.info("CLIP %s: pretrained weights %s", cfg.model_name, cfg.pretrained)
    else:
        LOG.warning("CLIP %s is randomly initialised (clip.random_init: true): fine for tests, useless for "
                    "recognition", cfg.model_name)
        clip = _create_unloaded(cfg.model_name)
    with _hub_offline(not cfg.allow_download):
        tokenizer = open_clip.get_tokenizer(cfg.model_name)
    return ClipTower(clip=clip, tokenizer=tokenizer, model_name=cfg.model_name,
                     short_side=cfg.short_side).to(device)


class _DropRandomInitNotice(logging.Filter):
    """Hides open_clip's "No pretrained weights loaded ... initialized randomly" line: the factory loads the
    weights itself right afterwards (or says itself that they are random)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("No pretrained weights loaded")


def create_clip_model(model_name: str) -> torch.nn.Module:
    """A randomly initialised open_clip model (a built-in name or a config in assets/clip_configs/), e.g.
    to train from scratch; ``load_clip_state_dict`` loads weights into it. Never downloads."""
    register_asset_configs()
    return _create_unloaded(model_name)


def _create_unloaded(model_name: str) -> torch.nn.Module:
    """An open_clip model without weights (the caller loads them), without open_clip's misleading notice."""
    import open_clip

    notice = _DropRandomInitNotice()
    root = logging.getLogger()
    root.addFilter(notice)
    try:
        return open_clip.create_model(model_name, pretrained=None, device="cpu")
    finally:
        root.removeFilter(notice)


@contextlib.contextmanager
def _hub_offline(offline: bool):
    """``HF_HUB_OFFLINE=1`` for the duration of the block only (restored afterwards)."""
    saved = os.environ.get("HF_HUB_OFFLINE")
    if offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = saved


def load_clip_state_dict(clip: torch.nn.Module, path: Path) -> None:
    """Load a local CLIP state dict (torch.save; fp16 allowed) into ``clip`` strictly."""
    state = load_weights_file(path, what="CLIP checkpoint",
                        fix="point clip.checkpoint at a state dict saved with torch.save(model.state_dict())")
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(torch.is_tensor(v) for v in state.values()):
        raise ValueError(f"CLIP checkpoint {path} is not a state dict of tensors")
    state = {k.removeprefix("module."): (v.float() if v.is_floating_point() else v) for k, v in state.items()}
    result = clip.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(f"CLIP checkpoint {path} does not match the model config: "
                         f"{len(result.missing_keys)} missing keys (e.g. {result.missing_keys[:3]}), "
                         f"{len(result.unexpected_keys)} unexpected (e.g. {result.unexpected_keys[:3]}); "
                         "check clip.model_name")


def _create_pretrained(cfg: ClipConfig) -> torch.nn.Module:
    """open_clip model + pretrained tag, from the local cache unless downloads are allowed."""
    import open_clip

    tag_cfg = open_clip.get_pretrained_cfg(cfg.model_name, cfg.pretrained)
    if not tag_cfg:
        raise ValueError(f"{cfg.model_name} has no pretrained tag {cfg.pretrained!r}; known: "
                         f"{open_clip.list_pretrained_tags_by_model(cfg.model_name)} (or use clip.checkpoint)")
    cache_dir = cfg.cache_dir or None
    cached = _cached_pretrained_file(tag_cfg, cache_dir)
    kwargs: dict[str, Any] = dict(force_quick_gelu=bool(tag_cfg.get("quick_gelu", False)), device="cpu")
    if cached is not None:
        preprocess = {k: tag_cfg[k] for k in ("mean", "std") if k in tag_cfg}
        return open_clip.create_model(cfg.model_name, pretrained=str(cached), force_preprocess_cfg=preprocess,
                                      **kwargs)
    if not cfg.allow_download:
        raise FileNotFoundError(
            f"weights for {cfg.model_name}/{cfg.pretrained} are not in the local cache and clip.allow_download "
            "is false: set clip.allow_download: true on a machine with internet access once, or download the "
            "checkpoint yourself and set clip.checkpoint: /path/to/file")
    try:
        return open_clip.create_model(cfg.model_name, pretrained=cfg.pretrained, cache_dir=cache_dir, **kwargs)
    except Exception as err:  # network, hub and checksum errors all mean the same to the user
        raise FileNotFoundError(f"could not download {cfg.model_name}/{cfg.pretrained}: {err}") from err


def _cached_pretrained_file(tag_cfg: Mapping[str, Any], cache_dir: str | None) -> Path | None:
    """The locally cached weights file of an open_clip pretrained tag, or None (never downloads)."""
    if tag_cfg.get("file"):
        return Path(tag_cfg["file"]) if Path(tag_cfg["file"]).is_file() else None
    if tag_cfg.get("hf_hub"):
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            try_to_load_from_cache = None
        if try_to_load_from_cache is not None:
            repo, filename = os.path.split(tag_cfg["hf_hub"])  # 'org/model/' -> ('org/model', '')
            names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
            for name in names:
                found = try_to_load_from_cache(repo, name, cache_dir=cache_dir)
                if isinstance(found, str) and Path(found).is_file():
                    return Path(found)
    if tag_cfg.get("url"):
        target = Path(cache_dir or os.path.expanduser("~/.cache/clip")) / os.path.basename(tag_cfg["url"])
        if target.is_file():
            return target
    return None


# ------------------------------------------------------------------------------------ MaskCLIP
def build_maskclip(mcfg: MaskCLIPConfig, tower: ClipTower) -> MaskCLIP:
    """MaskCLIP in mode ``mcfg.mode`` on a built CLIP tower (``build_clip``), on the tower's device.

    In ``rma`` mode the RMA parameters come from ``maskclip.rma_checkpoint`` or, when that is "", start
    untrained (equal to ``tokens``)."""
    rma = None
    if mcfg.mode == "rma":
        rma = (load_rma_checkpoint(asset(mcfg.rma_checkpoint), tower, mcfg)
               if mcfg.rma_checkpoint else RelativeMaskAttention(rma_config_for(tower, mcfg)))
    return MaskCLIP(tower=tower, mode=mcfg.mode, mask_threshold=mcfg.mask_threshold,
                    crop_batch_size=mcfg.crop_batch_size, crop_size=mcfg.crop_size, rma=rma).to(tower.device)


def clip_fingerprint(tower: ClipTower) -> tuple[float, ...]:
    """A few of the CLIP's weights (class embedding), identifying its weights in RMA checkpoints."""
    values = tower.visual.class_embedding.detach().float().flatten()[:FINGERPRINT_SIZE]
    return tuple(float(v) for v in values.cpu())


def rma_config_for(tower: ClipTower, mcfg: MaskCLIPConfig) -> RMAConfig:
    """The RMA architecture the params ask for on this CLIP (layers derived from its depth if unset)."""
    blocks = (parse_layers(mcfg.rma_layers, tower.depth) if mcfg.rma_layers.strip()
              else default_block_indices(tower.depth, mcfg.rma_num_layers))
    return RMAConfig(clip_model_name=tower.model_name, clip_fingerprint=clip_fingerprint(tower),
                     depth=tower.depth, width=tower.width, heads=tower.heads, patch_size=tower.patch_size,
                     mask_resolution=min(mcfg.rma_mask_resolution, tower.patch_size),
                     embed_dim=tower.embed_dim, block_indices=blocks,
                     refine_hidden=mcfg.rma_refine_hidden if mcfg.rma_refine else 0,
                     no_object=bool(mcfg.rma_no_object))


def save_rma_checkpoint(rma: RelativeMaskAttention, path: str | os.PathLike,
                        extra: Mapping[str, Any] | None = None) -> Path:
    """Save only the added parameters plus their config (and plain-typed ``extra`` info, e.g. a step)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": RMA_CHECKPOINT_FORMAT, "config": rma.config.to_dict(),
               "state_dict": {k: v.detach().cpu() for k, v in rma.state_dict().items()},
               "extra": dict(extra or {})}
    torch.save(payload, path)
    return path


def load_rma_checkpoint(path: Path, tower: ClipTower, mcfg: MaskCLIPConfig | None = None) -> RelativeMaskAttention:
    """Load RMA parameters for ``tower``; a checkpoint for another CLIP or other layers is a ValueError.

    With ``mcfg``, explicitly configured layers / refinement / no-object must match the checkpoint
    (``rma_layers: ""`` takes the checkpoint's layers)."""
    payload = load_weights_file(path, what="RMA checkpoint",
                          fix="train one with `maskclip-ros train` or set maskclip.rma_checkpoint: \"\"")
    if not isinstance(payload, Mapping) or payload.get("format") != RMA_CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not an RMA checkpoint of this package (format {RMA_CHECKPOINT_FORMAT})")
    config = RMAConfig.from_dict(dict(payload["config"]))
    _check_rma_matches(config, tower, mcfg, path)
    rma = RelativeMaskAttention(config)
    try:
        rma.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as err:
        raise ValueError(f"RMA checkpoint {path} does not match its own config: {err}") from err
    return rma.to(tower.device)


def load_rma_checkpoint_extra(path: str | os.PathLike) -> dict[str, Any]:
    """The ``extra`` dict saved with an RMA checkpoint (e.g. step, optimizer state), weights_only."""
    payload = load_weights_file(Path(path), what="RMA checkpoint",
                          fix="resume from a checkpoint written by `maskclip-ros train`")
    if not isinstance(payload, Mapping) or payload.get("format") != RMA_CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not an RMA checkpoint of this package (format {RMA_CHECKPOINT_FORMAT})")
    return dict(payload.get("extra", {}))


def _check_rma_matches(config: RMAConfig, tower: ClipTower, mcfg: MaskCLIPConfig | None, path: Path) -> None:
    expected = {"clip_model_name": tower.model_name, "depth": tower.depth, "width": tower.width,
                "heads": tower.heads, "patch_size": tower.patch_size, "embed_dim": tower.embed_dim}
    for key, value in expected.items():
        if getattr(config, key) != value:
            raise ValueError(f"RMA checkpoint {path} was trained for another CLIP: {key} = "
                             f"{getattr(config, key)!r}, this CLIP has {value!r}")
    ours = torch.tensor(clip_fingerprint(tower))
    theirs = torch.tensor(config.clip_fingerprint)
    if ours.shape != theirs.shape or not torch.allclose(ours, theirs, rtol=FINGERPRINT_RTOL, atol=1e-4):
        raise ValueError(f"RMA checkpoint {path} was trained on other {tower.model_name} weights "
                         "(same architecture, different values): use the CLIP weights it was trained with")
    if mcfg is None:
        return
    wanted = rma_config_for(tower, mcfg)
    if mcfg.rma_layers.strip() and wanted.block_indices != config.block_indices:
        raise ValueError(f"RMA checkpoint {path} has layers {[i + 1 for i in config.block_indices]} (1-based), "
                         f"maskclip.rma_layers asks for {[i + 1 for i in wanted.block_indices]}: set "
                         "maskclip.rma_layers to \"\" (use the checkpoint's) or to the checkpoint's layers")
    for key, name in (("refine_hidden", "rma_refine / rma_refine_hidden"), ("no_object", "rma_no_object"),
                      ("mask_resolution", "rma_mask_resolution")):
        if getattr(wanted, key) != getattr(config, key):
            raise ValueError(f"RMA checkpoint {path} has {key} = {getattr(config, key)!r} but maskclip.{name} "
                             f"asks for {getattr(wanted, key)!r}: make the params match the checkpoint")


def load_weights_file(path: Path, *, what: str, fix: str) -> Any:
    """torch.load(weights_only=True) with clear errors for missing and corrupt files."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}; {fix}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, pickle or unsafe-type errors
        raise ValueError(f"{what} {path} is corrupt or not a plain tensor file ({type(err).__name__}: {err}); "
                         f"{fix}") from err
