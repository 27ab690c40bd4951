"""The node's vocabulary rules without ROS: one request makes one version, suffixes and flags follow one
rule for the service and the parameters, refusals keep the old vocabulary, parameter re-syncs are no-ops."""
from __future__ import annotations

import threading

import pytest
import torch

from maskclip_ros.model.vocabulary import Vocabulary, VocabularyConfig, VocabularyError, validate_vocabulary
from maskclip_ros.ros.vocabulary_state import PARAMETERS, VocabularyState

CONFIG = VocabularyConfig(class_names=("ring", "sky"), is_thing=(True, False), prompt_templates=("a {}.",),
                          max_classes=5, max_name_length=20, embedding_cache_size=10)
NAMES, FLAGS, TEMPLATES = PARAMETERS


class FakeSegmenter:
    """make_vocabulary as the Segmenter's: validates with the core's rules, counts the calls."""

    def __init__(self) -> None:
        self.calls = 0

    def make_vocabulary(self, names, is_thing, templates, version):
        self.calls += 1
        names, flags = validate_vocabulary(names, is_thing, CONFIG)
        return Vocabulary(class_names=names, is_thing=flags, templates=tuple(templates), version=version,
                          text_embeddings=torch.zeros(len(names), 4))


@pytest.fixture
def state():
    state = VocabularyState(CONFIG)
    state.attach(FakeSegmenter(), CONFIG)
    return state


def test_attach_makes_the_configured_vocabulary_version_1(state):
    assert state.active.class_names == ("ring", "sky") and state.active.is_thing == (True, False)
    assert state.active.version == 1


def test_service_suffixes_make_exactly_one_version(state):
    new = state.request(["floor:stuff", "cup"], [], [])
    assert new.class_names == ("floor", "cup") and new.is_thing == (False, True) and new.version == 2
    # the node then syncs the parameters to the active vocabulary: that must not make a version
    assert state.from_parameters(VocabularyState.parameter_values(new), {}) is None
    assert state.active.version == 2


def test_flags_given_decide_and_contradictions_are_refused(state):
    assert state.request(["floor", "wall"], [False, False]).is_thing == (False, False)
    with pytest.raises(VocabularyError, match="disagree"):
        state.request(["floor:stuff"], [True])
    assert state.active.class_names == ("floor", "wall"), "a refusal keeps the old vocabulary"


def test_refusals_keep_the_old_vocabulary_and_version(state):
    before = state.active
    for names, flags in (([], []), (["a", "A"], []), (["x" * 50], []), (["a", "b"], [True]), (list("abcdef"), [])):
        with pytest.raises(VocabularyError):
            state.request(names, flags)
    assert state.active is before and state.active.version == 1


def test_templates_empty_keep_the_active_ones(state):
    assert state.request(["a"], [], ["the {}."]).templates == ("the {}.",)
    assert state.request(["b"], [], []).templates == ("the {}.",)


def test_class_names_parameter_alone_takes_flags_from_suffixes(state):
    current = VocabularyState.parameter_values(state.active)
    new = state.from_parameters({NAMES: ["person", "floor:stuff"]}, current)
    assert new.class_names == ("person", "floor") and new.is_thing == (True, False) and new.version == 2
    new = state.from_parameters({NAMES: ["cup", "table"], FLAGS: [True, False]}, current)
    assert new.is_thing == (True, False)


def test_unconfigured_requests_are_checked_not_applied():
    state = VocabularyState(CONFIG)
    state.check_parameters({NAMES: ["a", "b:stuff"]}, {TEMPLATES: ["a {}."]}, CONFIG)
    with pytest.raises(VocabularyError, match="duplicate"):
        state.check_parameters({NAMES: ["a", "a"]}, {TEMPLATES: ["a {}."]}, CONFIG)
    with pytest.raises(VocabularyError, match="slot"):
        state.check_parameters({TEMPLATES: ["no slot"]}, {NAMES: ["a"]}, CONFIG)
    with pytest.raises(VocabularyError, match="not configured"):
        state.request(["a"])


def test_versions_never_repeat_across_detach_and_concurrent_requests(state):
    state.detach()
    assert state.active is None
    state.attach(FakeSegmenter(), CONFIG)
    assert state.active.version == 2
    versions = []
    threads = [threading.Thread(target=lambda i=i: versions.append(state.request([f"c{i}"]).version)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(versions) == list(range(3, 11)) and state.active.version in versions
