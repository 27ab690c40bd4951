"""``mmdet`` backend: a class-agnostic mmdet 3.x instance-segmentation network (the paper's stage one:
Mask R-CNN R50-FPN or Mask2Former R50 with one "object" class).

``load_mmdet_model`` is the one place that builds the network and loads its weights; ``MMDetProposer``
only runs it. mmdet/mmcv are imported lazily (``make setup-mmdet`` installs them), so the other backends
work without them.
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from maskclip_ros.config import resource
from maskclip_ros.proposals.base import Proposals
from maskclip_ros.proposals.common import check_image, scaled_size, select

OUTPUT_CHUNK = 16  # masks downscaled per step (bounds the temporary full-resolution float copy)
SETUP_HINT = "install mmdet with `make setup-mmdet` (builds mmcv with ops, then installs mmengine and mmdet)"


@dataclass(frozen=True)
class MMDetConfig:
    """Parameters of the mmdet backend (``proposals.mmdet`` in config/default.yaml)."""
    config: str              # mmdet config file; relative paths resolve against config/proposals/
    checkpoint: str          # trained weights ("" = none)
    random_init: bool        # allow random weights without a checkpoint (tests, benchmarks)
    score_threshold: float   # drop proposals with a lower objectness
    test_width: int          # resize inputs to fit test_width x test_height (0 = the config's test scale)
    test_height: int         # see test_width


def configs_dir() -> Path:
    """The shipped class-agnostic mmdet configs (config/proposals/ beside config/default.yaml)."""
    return resource("config", "proposals")


def resolve_config(path: str) -> Path:
    """A config path as given, or relative to configs_dir(); FileNotFoundError naming both places."""
    candidate = Path(path).expanduser()
    for p in (candidate, configs_dir() / candidate):
        if p.is_file():
            return p
    raise FileNotFoundError(f"mmdet config {path!r} not found (looked at {candidate} and {configs_dir() / candidate}); "
                            f"shipped configs: {sorted(p.name for p in configs_dir().glob('*.py'))}")


def import_mmdet():
    """Import mmdet (and register its modules) or raise ImportError saying how to install it."""
    try:
        import mmdet  # noqa: F401
        import mmdet.models  # noqa: F401  (needs mmcv's compiled ops)
        from mmdet.utils import register_all_modules
    except ImportError as err:
        raise ImportError(f"the mmdet proposal backend needs mmdet, mmengine and mmcv with ops ({err}); "
                          f"{SETUP_HINT}") from err
    register_all_modules(init_default_scope=True)


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Weights of a proposal network checkpoint: a state dict, or a dict holding one under ``state_dict``
    (mmengine checkpoints, maskclip-ros train-proposals). Loaded with ``weights_only=True``.

    Raises FileNotFoundError (missing) or ValueError (unreadable / not a state dict) saying what to do."""
    from maskclip_ros.model.factory import load_weights_file

    data = load_weights_file(Path(path).expanduser(), what="proposal checkpoint",
                             fix="set proposals.mmdet.checkpoint to a trained checkpoint (maskclip-ros "
                                 "train-proposals writes one) or use proposals.backend regions")
    state = data.get("state_dict", data) if isinstance(data, dict) else None
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"proposal checkpoint {path} holds no state dict of tensors "
                         "(expected {'state_dict': {...}} or a plain state dict)")
    return state


def load_mmdet_model(cfg: MMDetConfig, device: str = "cpu"):
    """Build the detector of ``cfg.config`` on ``device`` and load ``cfg.checkpoint`` (strict: every key and
    shape must match). Returns the model in eval mode, with ``model.cfg`` set to the (adjusted) config."""
    import_mmdet()
    from mmdet.registry import MODELS
    from mmengine.config import Config

    config = Config.fromfile(str(resolve_config(cfg.config)))
    if cfg.test_width > 0 and cfg.test_height > 0:
        _set_test_scale(config, (int(cfg.test_width), int(cfg.test_height)))
    if not cfg.checkpoint and not cfg.random_init:
        raise ValueError("proposals.mmdet.checkpoint is empty: set it to a trained class-agnostic checkpoint "
                         "(maskclip-ros train-proposals), or set proposals.mmdet.random_init (tests only)")
    if cfg.checkpoint:
        state = load_state_dict(cfg.checkpoint)  # before building: a bad path fails fast
        model = MODELS.build(config.model)
        _load_strict(model, state, cfg)
    else:
        with torch.random.fork_rng(devices=[]), _quiet_mmengine():  # reproducible, caller's RNG untouched
            torch.manual_seed(0)
            model = MODELS.build(config.model)
            model.init_weights()
    model.cfg = config
    return model.to(device).eval()


@contextlib.contextmanager
def _quiet_mmengine():
    """Silence mmengine's INFO logging (init_weights dumps one line per parameter)."""
    from mmengine.logging import MMLogger

    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def _set_test_scale(config, scale: tuple[int, int]) -> None:
    """Make every Resize of the test pipeline fit ``scale`` (w, h), aspect ratio kept."""
    found = False
    for step in _test_pipeline(config):
        if step["type"].split(".")[-1] == "Resize":
            step["scale"], step["keep_ratio"] = scale, True
            found = True
    if not found:
        raise ValueError("the mmdet config's test pipeline has no Resize step to apply test_width/test_height to")


def _test_pipeline(config) -> list:
    """The config's test pipeline: its test dataloader's, else a top-level ``test_pipeline`` (our
    class-agnostic configs define no test loop)."""
    if config.get("test_dataloader"):
        from mmdet.utils import get_test_pipeline_cfg
        return get_test_pipeline_cfg(config)
    if config.get("test_pipeline"):
        return config.test_pipeline
    raise ValueError("the mmdet config has neither test_dataloader nor test_pipeline")


def _load_strict(model: torch.nn.Module, state: dict, cfg: MMDetConfig) -> None:
    ours = model.state_dict()
    missing = sorted(set(ours) - set(state))
    unexpected = sorted(set(state) - set(ours))
    wrong = sorted(k for k in set(ours) & set(state) if ours[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        raise ValueError(f"checkpoint {cfg.checkpoint} does not fit config {cfg.config}: "
                         f"{len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} unexpected "
                         f"(e.g. {unexpected[:3]}), {len(wrong)} of another shape (e.g. {wrong[:3]}); "
                         "use the config it was trained with")
    model.load_state_dict(state, strict=True)


class MMDetProposer:
    """Runs a loaded class-agnostic mmdet detector: (H, W, 3) uint8 RGB -> Proposals (binary masks as
    probabilities 0/1 at ``mask_long_side``, objectness scores, boxes). Deterministic in eval mode."""

    def __init__(self, *, model, max_proposals: int, min_area: float, mask_long_side: int,
                 score_threshold: float):
        from mmcv.transforms import Compose

        pipeline = [dict(step) for step in _test_pipeline(model.cfg)]
        pipeline[0] = dict(pipeline[0], type="mmdet.LoadImageFromNDArray")  # frames come as arrays
        self.model = model
        self.pipeline = Compose(pipeline)
        self.max_proposals = int(max_proposals)
        self.min_area = float(min_area)
        self.mask_long_side = int(mask_long_side)
        self.score_threshold = float(score_threshold)

    @torch.no_grad()
    def __call__(self, image: np.ndarray) -> Proposals:
        height, width = check_image(image)
        data = self.pipeline(dict(img=np.ascontiguousarray(image[..., ::-1]), img_id=0))  # mmdet wants BGR
        sample = self.model.test_step(dict(inputs=[data["inputs"]], data_samples=[data["data_samples"]]))[0]
        pred = sample.pred_instances
        scores = pred.scores.float().cpu().numpy()                       # (N,)
        areas = pred.masks.flatten(1).sum(1).cpu().numpy()               # (N,) image pixels
        valid = np.flatnonzero(scores >= self.score_threshold)
        keep = valid[select(scores[valid], areas[valid], self.max_proposals, self.min_area)]
        index = torch.from_numpy(keep).to(pred.masks.device)
        masks = _downscale(pred.masks[index], scaled_size(height, width, self.mask_long_side))
        return Proposals(masks=masks, scores=scores[keep].astype(np.float32),
                         boxes=pred.bboxes[index].float().cpu().numpy().reshape(-1, 4),
                         image_size=(height, width))


def _downscale(masks: torch.Tensor, size: tuple[int, int], chunk: int = OUTPUT_CHUNK) -> np.ndarray:
    """(K, H, W) bool masks -> (K, *size) float32 numpy, area-averaged, a few at a time (bounded memory)."""
    out = np.empty((len(masks), *size), np.float32)
    for start in range(0, len(masks), chunk):
        part = masks[start:start + chunk].float()[:, None]                # (k, 1, H, W)
        if tuple(part.shape[-2:]) != tuple(size):
            part = F.interpolate(part, size=size, mode="area")
        out[start:start + chunk] = part[:, 0].cpu().numpy()
    return out
