"""Settings of the small CLIP's training and evaluation (config/small_clip.yaml)."""
from __future__ import annotations

from dataclasses import dataclass

CONFIG_FILE = "small_clip.yaml"


@dataclass(frozen=True)
class SmallClipTrainConfig:
    """`maskclip-ros train-clip` settings: the ``train_clip`` section of config/small_clip.yaml."""
    config_name: str        # open_clip config in assets/clip_configs/
    seed: int               # world, init and sampling seed
    pool_scenes: int        # scenes held in memory
    refresh_per_step: int   # pool scenes replaced after each step
    max_window: int         # largest crop window (patches per side)
    stuff_min_window: int   # smallest stuff window (patches per side)
    stuff_purity: float     # least fraction of a stuff window that is that stuff
    region_prob: float      # probability that a stuff sample is its whole region
    init: str               # checkpoint to start from ("" = random init)
    scene_every: int        # whole-scene batch every n steps (0 = never)
    scene_batch: int        # whole scenes per scene step
    lr: float               # peak learning rate
    weight_decay: float     # AdamW weight decay
    beta1: float            # AdamW beta1
    beta2: float            # AdamW beta2
    warmup_steps: int       # linear warmup steps
    steps: int              # total steps (cosine length)
    minutes: float          # wall-clock budget (minutes)
    save_every: int         # checkpoint period (steps)
    threads: int            # torch CPU threads
    device: str             # torch device: cpu, cuda or cuda:N
    bf16: bool              # bf16 autocast
    multi_positive: bool    # every caption true of a sample is its positive (no false negatives)
    token_scenes: int       # scenes per step whose segments go through MaskCLIP mask tokens (0 = off)
    token_weight: float     # weight of the mask-token contrastive loss
    dense_weight: float     # weight of the dense patch loss on the mask-token scenes (0 = off)
    window_dense_weight: float  # weight of the dense patch loss on the window batch (0 = off)
    monitor_every: int      # steps between quick held-out accuracy checks (0 = never)
    monitor_scenes: int     # scenes of each check
    monitor_seed: int       # world seed of the checks (not eval_clip.seed)
    resume: bool            # continue from <out>.state.pt when it exists


@dataclass(frozen=True)
class EvalClipConfig:
    """`maskclip-ros eval-clip` settings: the ``eval_clip`` section of config/small_clip.yaml."""
    seed: int               # world seed of the held-out scenes
    num_scenes: int         # held-out scenes
