"""MaskCLIP encoder: mask class tokens (Eq. 1), RMA (Eq. 3/5), crop baseline, on tiny seeded random CLIPs."""
from __future__ import annotations

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F

from maskclip_ros.model.maskclip import classify, mask_boxes, square_crop
from maskclip_ros.model.masks import mask_patches
from maskclip_ros.model.rma import RelativeMaskAttention, default_block_indices, parse_layers
from model_helpers import literal_reference, make_maskclip, randomize, rma_config, scene, tiny_tower

ATOL = 1e-5


@pytest.fixture(scope="module")
def tower():
    return tiny_tower(seed=0)


@pytest.fixture(scope="module")
def data():
    return scene(48, 80, seed=0)


def run(model, image, masks, **kw):
    with torch.no_grad():
        return model(image, masks, **kw)


# ------------------------------------------------------------------------------------ tokens mode
def test_tokens_equal_literal_eq1_reference(tower, data):
    image, masks = data
    reference, _ = literal_reference(tower, image, masks)
    out = run(make_maskclip(tower, "tokens"), image, masks)
    assert out.embeddings.shape == (4, tower.embed_dim)
    torch.testing.assert_close(out.embeddings, reference, atol=ATOL, rtol=0)


def test_tokens_equal_literal_reference_with_layerscale():
    tower = tiny_tower(seed=3, vision_cfg={"image_size": 64, "patch_size": 16, "width": 64, "layers": 3,
                                           "head_width": 16, "ls_init_value": 0.5})
    assert tower.blocks[0].ls_1.__class__.__name__ == "LayerScale"
    image, masks = scene(40, 72, seed=1)
    reference, _ = literal_reference(tower, image, masks)
    torch.testing.assert_close(run(make_maskclip(tower, "tokens"), image, masks).embeddings, reference,
                               atol=ATOL, rtol=0)


def test_image_tokens_unchanged_by_mask_tokens(tower, data):
    image, masks = data
    _, with_masks = literal_reference(tower, image, masks)
    with torch.no_grad():
        pixels, _ = tower.preprocess(image)
        plain = tower.visual.transformer(tower.embed(pixels))[0]  # open_clip, no mask tokens
    torch.testing.assert_close(with_masks, plain, atol=ATOL, rtol=0)
    out = run(make_maskclip(tower, "tokens"), image, masks)
    torch.testing.assert_close(out.image_embedding, tower.readout(plain[0]), atol=ATOL, rtol=0)


def test_full_image_mask_gives_class_token_embedding(tower, data):
    image, masks = data
    out = run(make_maskclip(tower, "tokens"), image, masks)
    torch.testing.assert_close(out.embeddings[3], out.image_embedding, atol=1e-6, rtol=0)
    assert not torch.allclose(out.embeddings[0], out.image_embedding, atol=1e-3)


def test_mask_embedding_independent_of_other_masks(tower, data):
    image, masks = data
    model = make_maskclip(tower, "tokens")
    alone = run(model, image, masks[1:2]).embeddings[0]
    changed = masks.copy()
    changed[0] = 1.0 - changed[0]
    extra = np.concatenate([changed, masks[:2][::-1]])  # other masks changed, reordered, duplicated
    torch.testing.assert_close(run(model, image, masks).embeddings[1], alone, atol=ATOL, rtol=0)
    torch.testing.assert_close(run(model, image, extra).embeddings[1], alone, atol=ATOL, rtol=0)
    torch.testing.assert_close(run(model, image, extra).embeddings[4], alone, atol=ATOL, rtol=0)


@pytest.mark.parametrize("mode", ["crop", "tokens", "rma"])
def test_empty_and_one_pixel_masks_are_finite(tower, data, mode):
    image, _ = data
    masks = np.zeros((2, 48, 80), np.float32)
    masks[1, 17, 33] = 1.0
    rma = randomize(RelativeMaskAttention(rma_config(tower))) if mode == "rma" else None
    out = run(make_maskclip(tower, mode, rma=rma), image, masks)
    assert out.embeddings.shape == (2, tower.embed_dim)
    assert torch.isfinite(out.embeddings).all() and torch.isfinite(out.masks).all()
    torch.testing.assert_close(out.embeddings.norm(dim=-1), torch.ones(2))
    none = run(make_maskclip(tower, mode, rma=rma), image, masks[:0])
    assert none.embeddings.shape == (0, tower.embed_dim)


def test_one_pixel_mask_sees_only_its_patch(tower, data):
    from maskclip_ros.model.masks import MaskState
    image, _ = data
    masks = np.zeros((1, 48, 80), np.float32)
    masks[0, 5, 70] = 1.0  # 48x80 -> input 64x112 (4x7 patches): the pixel lies in patch row 0, col 6
    _, geometry = tower.preprocess(image)
    for subdivisions in (None, 4):  # tokens mode and the rma cascade's working resolution agree
        state = MaskState.initial(torch.as_tensor(masks), geometry, threshold=0.5, dtype=torch.float32,
                                  subdivisions=subdivisions)
        open_columns = torch.isfinite(state.bias[0, 0, 0]).nonzero()[:, 0].tolist()
        assert geometry.grid == (4, 7) and open_columns == [0, 1 + 6]  # class token + its one patch


# --------------------------------------------------------------------------------------- rma mode
def test_rma_without_layers_equals_tokens(tower, data):
    image, masks = data
    tokens = run(make_maskclip(tower, "tokens"), image, masks)
    rma = RelativeMaskAttention(rma_config(tower, blocks=()))
    out = run(make_maskclip(tower, "rma", rma=rma), image, masks)
    torch.testing.assert_close(out.embeddings, tokens.embeddings, atol=1e-6, rtol=0)
    torch.testing.assert_close(out.masks, torch.as_tensor(masks))


@pytest.mark.parametrize("resolution", [4, 16])
def test_untrained_rma_starts_as_tokens(tower, data, resolution):
    image, masks = data
    tokens = run(make_maskclip(tower, "tokens"), image, masks)
    rma = RelativeMaskAttention(rma_config(tower, blocks=(1, 3), mask_resolution=resolution))
    out = run(make_maskclip(tower, "rma", rma=rma), image, masks)
    torch.testing.assert_close(out.embeddings, tokens.embeddings, atol=ATOL, rtol=0)
    torch.testing.assert_close(out.masks, torch.as_tensor(masks), atol=2e-4, rtol=0)  # logit clamp only


def test_rma_refined_masks_shape_range_and_input_untouched(tower, data):
    image, masks = data
    for given in (masks.copy(), torch.as_tensor(masks.copy())):
        before = given.copy() if isinstance(given, np.ndarray) else given.clone()
        rma = randomize(RelativeMaskAttention(rma_config(tower, blocks=(0, 2, 3))), std=0.3)
        out = run(make_maskclip(tower, "rma", rma=rma), image, given, with_aux=True)
        assert out.masks.shape == masks.shape
        assert float(out.masks.min()) >= 0.0 and float(out.masks.max()) <= 1.0
        assert not torch.allclose(out.masks, torch.as_tensor(masks), atol=1e-3)  # refinement acts
        assert (given == before).all()
        assert len(out.aux_mask_logits) == 3
        assert out.aux_mask_logits[-1].shape == (4, 4 * 4, 7 * 4)  # 4x7 patches, 4x4 values per patch
        coarse = F.adaptive_avg_pool2d(out.masks[:, None], (16, 28))[:, 0]
        assert (torch.sigmoid(out.aux_mask_logits[-1]) - coarse).abs().mean() < 0.05


def test_rma_refined_masks_at_lower_proposal_resolution(tower, data):
    image, masks = data
    low = torch.as_tensor(masks)[:, ::2, ::2].clone()  # (4, 24, 40) for a 48x80 image
    rma = randomize(RelativeMaskAttention(rma_config(tower)), std=0.3)
    out = run(make_maskclip(tower, "rma", rma=rma), image, low)
    assert out.masks.shape == (4, 24, 40)


def test_rma_changes_embeddings_when_trained_params_nonzero(tower, data):
    image, masks = data
    tokens = run(make_maskclip(tower, "tokens"), image, masks)
    rma = randomize(RelativeMaskAttention(rma_config(tower, refine_hidden=0)), std=0.3)
    out = run(make_maskclip(tower, "rma", rma=rma), image, masks)
    assert (out.embeddings - tokens.embeddings).abs().max() > 1e-3
    torch.testing.assert_close(out.image_embedding, tokens.image_embedding, atol=ATOL, rtol=0)


def test_gradients_reach_every_rma_parameter_and_no_clip_parameter(tower, data):
    image, masks = data
    rma = randomize(RelativeMaskAttention(rma_config(tower, blocks=(1, 3))))
    model = make_maskclip(tower, "rma", rma=rma).train()
    assert {id(p) for p in model.trainable_parameters()} == {id(p) for p in rma.parameters()}
    out = model(image, masks, with_aux=True)
    text = F.normalize(torch.randn(3, tower.embed_dim, generator=torch.Generator().manual_seed(0)), dim=-1)
    scores = model.classify(out.embeddings, text)
    loss = -(scores.probs[:, 0] + 1e-6).log().sum() + sum(l.sigmoid().mean() for l in out.aux_mask_logits)
    loss.backward()
    for name, p in rma.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(p.grad is None for p in tower.parameters())
    assert not any(p.requires_grad for p in tower.parameters())
    assert not tower.clip.training  # CLIP stays in eval mode while RMA trains


@pytest.mark.parametrize("resolution", [4, 16])
def test_relative_term_equals_naive_mxnxd_formula(tower, data, resolution):
    _, masks = data
    cfg = rma_config(tower, blocks=(0,), mask_resolution=resolution)
    layer = randomize(RelativeMaskAttention(cfg), std=0.2).layer(0)
    _, geometry = tower.preprocess(data[0])
    size = (geometry.grid[0] * resolution, geometry.grid[1] * resolution)
    work = F.adaptive_avg_pool2d(torch.as_tensor(masks)[:, None], size)  # (M, 1, gh*s, gw*s)
    image_tokens = torch.randn(geometry.num_patches, tower.width)
    fast = layer.relative_logits(mask_patches(work[:, 0], resolution), image_tokens)  # (M, heads, N)
    t_mp = layer.mask_patch_embed(work).flatten(2).transpose(1, 2)  # (M, N, D): f_2, the paper's T_MP
    q = layer.mask_query(t_mp)  # (M, N, D)
    k = layer.image_key(image_tokens)  # (N, D)
    naive = (q * k).view(*q.shape[:2], tower.heads, -1).sum(-1).permute(0, 2, 1)  # per-head sums (M, heads, N)
    torch.testing.assert_close(fast, naive, atol=1e-4, rtol=1e-4)


def test_default_rma_layers_derive_from_depth():
    assert [i + 1 for i in default_block_indices(24, 4)] == [6, 12, 18, 24]  # the paper's ViT-L layers
    assert [i + 1 for i in default_block_indices(12, 4)] == [3, 6, 9, 12]
    assert default_block_indices(6, 4)[-1] == 5 and len(default_block_indices(6, 4)) == 4
    assert default_block_indices(2, 4) == (0, 1)
    assert parse_layers("6, 12,18,24", 24) == (5, 11, 17, 23)
    with pytest.raises(ValueError, match="outside"):
        parse_layers("0,3", 12)
    with pytest.raises(ValueError, match="integers"):
        parse_layers("last", 12)


# ----------------------------------------------------------------------------------- geometry
@pytest.mark.parametrize("size", [64, 224])
def test_native_square_input_equals_open_clip_encode_image(size):
    tower = tiny_tower(seed=5, short_side=size, force_image_size=size)
    image = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    pixels, geometry = tower.preprocess(image)
    assert geometry.input_size == (size, size) and geometry.grid == tower.native_grid
    with torch.no_grad():
        theirs = F.normalize(tower.clip.encode_image(pixels), dim=-1)
        ours = run(make_maskclip(tower, "tokens"), image, np.ones((1, size, size), np.float32))
    torch.testing.assert_close(tower.encode_images(pixels), theirs, atol=1e-6, rtol=0)
    torch.testing.assert_close(ours.image_embedding, theirs[0], atol=ATOL, rtol=0)
    torch.testing.assert_close(ours.embeddings[0], theirs[0], atol=ATOL, rtol=0)


def test_non_square_inputs_keep_aspect_ratio_and_cache_positions(tower):
    assert tower.geometry((480, 640)).input_size == (64, 80)  # short side 64, long side rounded to patches
    assert tower.geometry((640, 480)).grid == (5, 4)
    assert tower.geometry((100, 1000)).grid == (4, 40)  # extreme aspect ratio: no squashing to a square
    image, masks = scene(45, 130, seed=2)
    out = run(make_maskclip(tower, "tokens"), image, masks)
    assert torch.isfinite(out.embeddings).all()
    grid = tower.geometry((45, 130)).grid
    cached = tower.positional_embedding(grid)
    assert cached.shape == (1 + grid[0] * grid[1], tower.width)
    assert tower.positional_embedding(grid) is cached
    torch.testing.assert_close(cached[0], tower.visual.positional_embedding[0])  # class position unchanged


def test_unsupported_towers_fail_clearly():
    avg = tiny_tower(seed=0, vision_cfg={"image_size": 64, "patch_size": 16, "width": 64, "layers": 2,
                                         "head_width": 16, "pool_type": "avg"})
    with pytest.raises(ValueError, match="class-token CLIP"):
        make_maskclip(avg, "tokens")
    image, masks = scene()
    assert run(make_maskclip(avg, "crop"), image, masks).embeddings.shape == (4, avg.embed_dim)
    custom = tiny_tower(seed=0, vision_cfg={"image_size": 64, "patch_size": 16, "width": 64, "layers": 2,
                                            "head_width": 16, "block_type": "custom"})
    with pytest.raises(ValueError, match="CustomResidualAttentionBlock"):
        make_maskclip(custom, "rma", rma=RelativeMaskAttention(rma_config(custom)))


# --------------------------------------------------------------------------------------- crop mode
def test_crop_full_mask_of_native_image_equals_encode_image(tower):
    image = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    out = run(make_maskclip(tower, "crop"), image, np.ones((1, 64, 64), np.float32))
    pixels, _ = tower.preprocess(image)
    with torch.no_grad():
        expected = F.normalize(tower.clip.encode_image(pixels), dim=-1)[0]
    torch.testing.assert_close(out.embeddings[0], expected, atol=1e-5, rtol=0)
    assert out.image_embedding is None


def test_crop_is_masked_boxed_and_padded_not_squashed():
    pixels = torch.rand(3, 40, 60)
    binary = torch.zeros(40, 60, dtype=torch.bool)
    binary[10:20, 5:45] = True  # a 10 x 40 box
    binary[12, 44] = False
    box = mask_boxes(binary[None])[0].tolist()
    assert box == [10, 20, 5, 45]
    crop = square_crop(pixels, binary, box, (64, 64))
    assert crop.shape == (3, 64, 64)
    assert crop[:, :20].abs().max() == 0 and crop[:, -20:].abs().max() == 0  # 10:40 aspect -> zero bands
    assert crop[:, 28:36].abs().mean() > 0.1
    empty = mask_boxes(torch.zeros(1, 40, 60, dtype=torch.bool))[0].tolist()
    assert empty == [0, 40, 0, 60]


def test_crop_batches_give_same_embeddings(tower, data):
    image, masks = data
    one = make_maskclip(tower, "crop")
    one.crop_batch_size = 1
    torch.testing.assert_close(run(one, image, masks).embeddings,
                               run(make_maskclip(tower, "crop"), image, masks).embeddings, atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------- classification
def test_classify_softmax_and_explicit_no_object():
    emb = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), dim=-1)
    text = F.normalize(torch.tensor([[1.0, 0.0], [0.6, 0.8]]), dim=-1)
    plain = classify(emb, text, logit_scale=10.0)
    torch.testing.assert_close(plain.probs, (10.0 * emb @ text.T).softmax(-1))
    assert plain.no_object is None
    scored = classify(emb, text, 10.0, no_object_embedding=torch.tensor([0.0, 2.0]))
    torch.testing.assert_close(scored.probs.sum(1) + scored.no_object, torch.ones(2))
    assert scored.probs.shape == (2, 2)  # never an extra column
    assert scored.no_object[1] > scored.probs[1].max() and scored.no_object[0] < scored.probs[0].max()


def test_modes_share_proposals_and_differ(tower, data):
    image, masks = data
    crop = run(make_maskclip(tower, "crop"), image, masks).embeddings
    tokens = run(make_maskclip(tower, "tokens"), image, masks).embeddings
    assert crop.shape == tokens.shape
    assert (crop - tokens).abs().max() > 1e-3


def test_constructor_rejects_bad_modes(tower):
    with pytest.raises(ValueError, match="mode"):
        make_maskclip(tower, "pixels")
    with pytest.raises(ValueError, match="RelativeMaskAttention"):
        make_maskclip(tower, "rma")
    assert open_clip.__version__ == "3.3.0"


def test_a_read_only_frame_is_read_without_a_warning_and_left_alone(tower, data):
    """Frames decoded from message buffers are read-only arrays: the tower reads them (no torch warning about
    non-writable memory) and gives the same pixels as for a writable copy."""
    import warnings
    image, _ = data
    frozen = image.copy()
    frozen.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pixels, _ = tower.preprocess(frozen)
    torch.testing.assert_close(pixels, tower.preprocess(image.copy())[0], atol=0, rtol=0)
    assert not frozen.flags.writeable and np.array_equal(frozen, image)
