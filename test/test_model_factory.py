"""The one loader: CLIP sources, offline behaviour, checkpoint errors, RMA checkpoints and their mismatches."""
from __future__ import annotations

import dataclasses

import open_clip
import pytest
import torch

from maskclip_ros.config import ConfigError, from_dict
from maskclip_ros.model.factory import (ClipConfig, build_clip, build_maskclip, load_rma_checkpoint,
                                        load_rma_checkpoint_extra, save_rma_checkpoint)
from maskclip_ros.model.maskclip import MaskCLIPConfig
from maskclip_ros.model.rma import RelativeMaskAttention
from maskclip_ros.pipeline import load_segmenter_config
from model_helpers import TINY, maskclip_config, randomize, rma_config, scene, tiny_tower

CLIP = ClipConfig(model_name=TINY, pretrained="", checkpoint="", random_init=True, allow_download=False,
                  cache_dir="", short_side=64)


def test_defaults_come_from_the_params_file():
    cfg = load_segmenter_config()
    assert cfg.clip.short_side > 0 and cfg.maskclip.mode in ("crop", "tokens", "rma")
    with pytest.raises(ConfigError, match="unknown keys"):
        from_dict(MaskCLIPConfig, {**dataclasses.asdict(cfg.maskclip), "moed": "rma"}, "maskclip")
    with pytest.raises(ConfigError, match="lacks"):
        from_dict(ClipConfig, {"model_name": TINY}, "clip")


def test_random_init_is_seeded_and_frozen():
    torch.manual_seed(0)
    first = build_clip(CLIP)
    torch.manual_seed(0)
    second = build_clip(CLIP)
    assert TINY in open_clip.list_models()  # asset configs registered
    torch.testing.assert_close(first.visual.proj, second.visual.proj)
    assert not any(p.requires_grad for p in first.parameters())


def test_exactly_one_weight_source():
    with pytest.raises(ValueError, match="exactly one"):
        dataclasses.replace(CLIP, random_init=False)
    with pytest.raises(ValueError, match="exactly one"):
        dataclasses.replace(CLIP, checkpoint="x.pt")


def test_unknown_model_and_uncached_tag_fail_without_network(tmp_path):
    with pytest.raises(ValueError, match="unknown open_clip model"):
        build_clip(dataclasses.replace(CLIP, model_name="ViT-Q-99"))
    cfg = dataclasses.replace(CLIP, model_name="ViT-B-16", pretrained="openai", random_init=False,
                              cache_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="allow_download"):
        build_clip(cfg)
    with pytest.raises(ValueError, match="no pretrained tag"):
        build_clip(dataclasses.replace(cfg, pretrained="no-such-tag"))


def test_fp16_checkpoint_loads_as_fp32(tmp_path):
    torch.manual_seed(1)
    source = open_clip.create_model(TINY, pretrained=None)
    path = tmp_path / "clip.pt"
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in source.state_dict().items()}, path)
    tower = build_clip(dataclasses.replace(CLIP, random_init=False, checkpoint=str(path)))
    assert tower.visual.proj.dtype == torch.float32
    torch.testing.assert_close(tower.visual.proj, source.visual.proj.half().float())


def test_bad_checkpoints_give_clear_errors(tmp_path):
    cfg = dataclasses.replace(CLIP, random_init=False, checkpoint=str(tmp_path / "missing.pt"))
    with pytest.raises(FileNotFoundError, match="not found"):
        build_clip(cfg)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="corrupt"):
        build_clip(dataclasses.replace(cfg, checkpoint=str(corrupt)))
    other = open_clip.create_model(TINY, pretrained=None, vision_cfg={"image_size": 64, "patch_size": 16,
                                                                      "width": 64, "layers": 2, "head_width": 16})
    mismatched = tmp_path / "mismatch.pt"
    torch.save(other.state_dict(), mismatched)
    with pytest.raises(ValueError, match="does not match the model config"):
        build_clip(dataclasses.replace(cfg, checkpoint=str(mismatched)))


def test_rma_checkpoint_round_trip(tmp_path):
    tower = tiny_tower(seed=0)
    mcfg = maskclip_config(mode="rma", rma_refine_hidden=8, rma_layers="2,4")
    model = build_maskclip(mcfg, tower)
    assert model.rma.config.block_indices == (1, 3)
    randomize(model.rma, std=0.2)
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=1e-4)
    path = save_rma_checkpoint(model.rma, tmp_path / "rma.pt",
                               extra={"step": 7, "optimizer": optimizer.state_dict()})
    payload = torch.load(path, weights_only=True)
    assert set(payload) == {"format", "config", "state_dict", "extra"} and payload["extra"]["step"] == 7
    optimizer.load_state_dict(load_rma_checkpoint_extra(path)["optimizer"])
    assert all(k.startswith(("layers.", "no_object")) for k in payload["state_dict"])  # only added params
    loaded = build_maskclip(maskclip_config(mode="rma", rma_refine_hidden=8, rma_layers="", rma_checkpoint=str(path)),
                            tower)
    image, masks = scene()
    with torch.no_grad():
        a, b = model(image, masks), loaded(image, masks)
    torch.testing.assert_close(a.embeddings, b.embeddings)
    torch.testing.assert_close(a.masks, b.masks)


def test_rma_checkpoint_mismatches_are_refused(tmp_path):
    tower = tiny_tower(seed=0)
    rma = RelativeMaskAttention(rma_config(tower, blocks=(1, 3), refine_hidden=8))
    path = save_rma_checkpoint(rma, tmp_path / "rma.pt")
    mcfg = maskclip_config(mode="rma", rma_refine_hidden=8)
    assert load_rma_checkpoint(path, tower, mcfg).config.block_indices == (1, 3)
    with pytest.raises(ValueError, match="layers"):
        load_rma_checkpoint(path, tower, dataclasses.replace(mcfg, rma_layers="1,2"))
    with pytest.raises(ValueError, match="refine"):
        load_rma_checkpoint(path, tower, dataclasses.replace(mcfg, rma_refine=False))
    with pytest.raises(ValueError, match="other maskclip-ros-test-tiny weights"):
        load_rma_checkpoint(path, tiny_tower(seed=1), mcfg)  # same architecture, other CLIP weights
    deeper = tiny_tower(seed=0, vision_cfg={"image_size": 64, "patch_size": 16, "width": 64, "layers": 6,
                                            "head_width": 16})
    with pytest.raises(ValueError, match="another CLIP: depth"):
        load_rma_checkpoint(path, deeper, mcfg)
    renamed = tiny_tower(seed=0)
    renamed.model_name = "ViT-B-16"
    with pytest.raises(ValueError, match="another CLIP: clip_model_name"):
        load_rma_checkpoint(path, renamed, mcfg)
    (tmp_path / "bad.pt").write_bytes(b"\x00" * 10)
    with pytest.raises(ValueError, match="corrupt"):
        load_rma_checkpoint(tmp_path / "bad.pt", tower, mcfg)
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="not an RMA checkpoint"):
        load_rma_checkpoint(tmp_path / "foreign.pt", tower, mcfg)


def test_build_maskclip_modes_from_params():
    tower = tiny_tower(seed=0)
    for mode in ("crop", "tokens", "rma"):
        model = build_maskclip(maskclip_config(mode=mode), tower)
        assert model.mode == mode and (model.rma is not None) == (mode == "rma")
        assert model.trainable_parameters() == ([] if mode != "rma" else list(model.rma.parameters()))
    rma = build_maskclip(maskclip_config(mode="rma", rma_layers="", rma_num_layers=2), tower).rma
    assert rma.config.block_indices == (1, 3)  # evenly spaced, ending at the last of 4 blocks
    assert float(rma.no_object_embedding.detach().abs().sum()) == 0.0


def test_offline_building_leaves_the_process_environment_alone(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    build_clip(CLIP)  # allow_download false: the tokenizer is built offline, the variable set only meanwhile
    import os

    assert "HF_HUB_OFFLINE" not in os.environ


def test_checkpoint_build_hides_open_clips_random_init_notice(tmp_path, caplog):
    tower = tiny_tower(seed=3)
    path = tmp_path / "clip.pt"
    torch.save(tower.clip.state_dict(), path)
    caplog.clear()  # tiny_tower's own open_clip call logged the notice
    with caplog.at_level("INFO"):
        built = build_clip(dataclasses.replace(CLIP, random_init=False, checkpoint=str(path)))
    assert not any("initialized randomly" in r.getMessage() for r in caplog.records)
    assert any(str(path) in r.getMessage() for r in caplog.records)  # the factory says which file it loaded
    torch.testing.assert_close(built.visual.proj, tower.visual.proj)
