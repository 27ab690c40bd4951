"""Vocabulary: validation rules, prompt-template ensemble, embedding cache, immutability."""
from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from maskclip_ros.model.vocabulary import (TextEmbedder, VocabularyConfig, VocabularyError, build_vocabulary,
                                           validate_vocabulary)
from maskclip_ros.model import vocabulary
from model_helpers import tiny_tower

CONFIG = VocabularyConfig(class_names=(), is_thing=(), prompt_templates=("a photo of a {}.", "a {}."), max_classes=4, max_name_length=12,
                          embedding_cache_size=100)


@pytest.fixture(scope="module")
def embedder():
    return TextEmbedder(tower=tiny_tower(seed=0), cache_size=CONFIG.embedding_cache_size)


@pytest.mark.parametrize("names, flags, reason", [
    ([], None, "empty"),
    (["cat", "  "], None, "empty class name"),
    (["cat", "dog", "Cat "], None, "duplicate"),
    (["a", "b", "c", "d", "e"], None, "exceed the maximum of 4"),
    (["a" * 13], None, "longer than 12"),
    (["a", "b"], [True], "flags"),
    (["a", 3], None, "strings"),
])
def test_validation_refuses_with_reason(names, flags, reason):
    with pytest.raises(VocabularyError, match=reason) as info:
        validate_vocabulary(names, flags, CONFIG)
    assert reason.split()[0] in info.value.reason


def test_validation_normalises():
    names, flags = validate_vocabulary([" cat ", "floor"], [1, 0], CONFIG)
    assert names == ("cat", "floor") and flags == (True, False)
    assert validate_vocabulary(["cat"], None, CONFIG)[1] == (True,)


def test_templates_need_one_slot():
    with pytest.raises(VocabularyError, match="slot"):
        VocabularyConfig(class_names=(), is_thing=(), prompt_templates=("a photo",), max_classes=2, max_name_length=5, embedding_cache_size=1)
    with pytest.raises(VocabularyError, match="no prompt templates"):
        VocabularyConfig(class_names=(), is_thing=(), prompt_templates=(), max_classes=2, max_name_length=5, embedding_cache_size=1)


def test_embeddings_are_the_normalised_template_average(embedder):
    vocab = build_vocabulary(["cat", "floor"], [True, False], embedder=embedder, config=CONFIG, version=3)
    assert vocab.class_names == ("cat", "floor") and vocab.version == 3 and len(vocab) == 2
    assert vocab.templates == CONFIG.prompt_templates
    tower = embedder.tower
    with torch.no_grad():
        per_template = F.normalize(tower.clip.encode_text(tower.tokenizer(["a photo of a cat.", "a cat."])), dim=-1)
    expected = F.normalize(per_template.mean(0), dim=-0)
    torch.testing.assert_close(vocab.text_embeddings[0], expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(vocab.text_embeddings.norm(dim=-1), torch.ones(2))
    assert vocab.thing_mask.tolist() == [True, False]


def test_cache_by_model_class_and_templates(embedder, monkeypatch):
    calls = []
    original = embedder._embed

    def counting(names, templates):
        calls.append(tuple(names))
        return original(names, templates)

    monkeypatch.setattr(embedder, "_embed", counting)
    first = embedder(["tree", "car"], ("a {}.",))
    again = embedder(["car", "tree", "bus"], ("a {}.",))
    assert calls == [("tree", "car"), ("bus",)]
    torch.testing.assert_close(again[1], first[0])
    other = embedder(["tree"], ("a photo of a {}.",))
    assert calls[-1] == ("tree",) and not torch.allclose(other[0], first[0])
    again[0].zero_()  # callers get copies: the cache is unaffected
    torch.testing.assert_close(embedder(["car"], ("a {}.",))[0], first[1])


def test_cache_is_bounded():
    small = TextEmbedder(tower=tiny_tower(seed=0), cache_size=2)
    small(["a", "b", "c"], ("{}",))
    assert len(small._cache) == 2


def test_vocabulary_is_immutable(embedder):
    vocab = build_vocabulary(["cat"], None, embedder=embedder, config=CONFIG)
    with pytest.raises(dataclasses.FrozenInstanceError):
        vocab.class_names = ("dog",)
    assert isinstance(vocab.class_names, tuple) and isinstance(vocab.is_thing, tuple)
    custom = build_vocabulary(["cat"], None, embedder=embedder, config=CONFIG, templates=["itap of a {}."])
    assert custom.templates == ("itap of a {}.",)


def test_kind_suffixes_one_rule():
    split = vocabulary.split_kind_suffixes
    assert split(["person", "floor:stuff", "cup:thing"]) == (["person", "floor", "cup"], [True, False, True])
    assert split(["person", "floor"]) == (["person", "floor"], None)  # no suffix anywhere: the default (things)
    assert split(["ratio 1:2"]) == (["ratio 1:2"], None)  # another colon belongs to the name
    assert split(["floor:stuff", "wall"], [False, False]) == (["floor", "wall"], [False, False])  # flags decide
    assert split(["floor:stuff", "wall"], []) == (["floor", "wall"], [False, True])  # empty flags: suffixes
    with pytest.raises(VocabularyError, match="disagree"):
        split(["floor:stuff"], [True])
    with pytest.raises(VocabularyError, match="suffix must be :thing or :stuff"):
        split(["wall:things"])


def test_refusal_messages_stay_short():
    config = VocabularyConfig(class_names=(), is_thing=(), prompt_templates=("a {}.",), max_classes=4,
                              max_name_length=12, embedding_cache_size=8)
    with pytest.raises(VocabularyError) as refused:
        validate_vocabulary(["x" * 100_000], None, config)
    assert len(refused.value.reason) < 200
    with pytest.raises(VocabularyError) as refused:
        vocabulary.split_kind_suffixes(["y" * 100_000 + ":stuff"], [True])
    assert len(refused.value.reason) < 200
