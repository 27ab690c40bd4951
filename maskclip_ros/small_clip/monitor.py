"""Progress of a small-CLIP training run: quick held-out accuracy checks of the model being trained and
the loss/accuracy plot written beside the checkpoint."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from maskclip_ros.small_clip.config import SmallClipTrainConfig

MONITOR_MODES = ("window", "tokens")
MONITOR_METRICS = ("things", "stuff", "thing_shape")
SMOOTH_MAX = 50        # largest running-mean window of the plotted loss (steps)
SMOOTH_FRACTION = 10   # ... and at most 1/SMOOTH_FRACTION of the steps so far
PLOT_SIZE = (11, 4)    # inches
PLOT_DPI = 80


class Monitor:
    """Held-out accuracies (MONITOR_METRICS of MONITOR_MODES) on tc.monitor_scenes scenes of world seed
    tc.monitor_seed, computed like eval-clip (fp32, no grad, eval mode; MaskCLIP settings from
    config/default.yaml, the run's prompt templates)."""

    def __init__(self, tower, tc: SmallClipTrainConfig, templates):
        from maskclip_ros.pipeline import load_segmenter_config
        cfg = load_segmenter_config()
        self.cfg = dataclasses.replace(cfg, vocabulary=dataclasses.replace(cfg.vocabulary,
                                                                           prompt_templates=tuple(templates)))
        self.tower, self.tc = tower, tc

    def __call__(self, model) -> dict:
        """{"<mode>_<metric>": accuracy}; ``model`` (the tower's CLIP) is back in train mode afterwards."""
        from maskclip_ros.small_clip.evaluate import evaluate_tower
        model.eval()
        try:
            result = evaluate_tower(self.tower, self.cfg, num_scenes=self.tc.monitor_scenes,
                                    seed=self.tc.monitor_seed, max_window=self.tc.max_window, modes=MONITOR_MODES)
        finally:
            model.train()
        return {f"{mode}_{k}": result[mode][k]["accuracy"] for mode in MONITOR_MODES for k in MONITOR_METRICS}


def plot_training(meta: dict, path: Path) -> None:
    """Loss (raw and a running mean) and the monitor accuracies against the step, as a PNG at ``path``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    steps = [r["step"] for r in meta["losses"]]
    loss = np.asarray([r["loss"] for r in meta["losses"]])
    window = max(1, min(SMOOTH_MAX, len(loss) // SMOOTH_FRACTION))
    smooth = np.convolve(loss, np.ones(window) / window, mode="valid")
    fig, (left, right) = plt.subplots(1, 2, figsize=PLOT_SIZE)
    left.plot(steps, loss, alpha=0.3, label="loss")
    left.plot(steps[window - 1:], smooth, label=f"mean of {window}")
    left.set_xlabel("step")
    left.set_ylabel("training loss (all parts)")
    left.legend()
    checks = meta.get("monitor") or []
    for key in (k for k in (checks[0] if checks else {}) if k != "step"):
        right.plot([m["step"] for m in checks], [m[key] for m in checks], marker=".", label=key)
    right.set_xlabel("step")
    right.set_ylabel("held-out accuracy (monitor)")
    right.set_ylim(0, 1)
    if checks:
        right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=PLOT_DPI)
    plt.close(fig)
