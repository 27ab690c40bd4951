"""The node's vocabulary: the active one, its version counter and the rules every change goes through.

ROS-free, so it is unit-tested without a node. One object owns the active ``Vocabulary`` (immutable,
replaced whole), the version counter (versions never repeat in a process, reconfigure included) and a lock
that serialises changes. Requests come from the service (names with optional ``:thing`` / ``:stuff``
suffixes, optional flags and templates) and from the ``vocabulary.*`` parameters; both go through
``model.vocabulary.split_kind_suffixes`` and the model's validation, so one request makes exactly one
version and the parameters, the service and the CLI agree on one rule.
"""
from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

from maskclip_ros.model.vocabulary import (Vocabulary, VocabularyConfig, VocabularyError, split_kind_suffixes,
                                           validate_templates, validate_vocabulary)

PARAMETERS = ("vocabulary.class_names", "vocabulary.is_thing", "vocabulary.prompt_templates")


class VocabularyState:
    """Active vocabulary + version counter + change rules (thread-safe).

    ``segmenter`` is anything with ``make_vocabulary(names, is_thing, templates, version)`` (a
    ``pipeline.Segmenter``); None while the node is unconfigured, when requests are only checked."""

    def __init__(self, config: VocabularyConfig) -> None:
        self.config = config
        self._segmenter = None
        self._active: Vocabulary | None = None
        self._version = 0
        self._lock = threading.Lock()

    @property
    def active(self) -> Vocabulary | None:
        return self._active

    def attach(self, segmenter, config: VocabularyConfig) -> Vocabulary:
        """Use ``segmenter`` and make the configured initial vocabulary active (configure)."""
        with self._lock:
            self.config, self._segmenter = config, segmenter
        return self.request(config.class_names, config.is_thing, config.prompt_templates)

    def detach(self) -> None:
        """Forget the segmenter and the active vocabulary (cleanup); the version counter continues."""
        with self._lock:
            self._segmenter = self._active = None

    def request(self, class_names: Sequence[str], is_thing: Sequence[bool] | None = None,
                templates: Sequence[str] | None = None) -> Vocabulary:
        """Make a new vocabulary active: names (with optional suffixes), flags (empty/None = from the
        suffixes, else all things), templates (empty/None = keep the active ones). Raises VocabularyError
        (the old vocabulary stays); returns the new one."""
        names, flags = split_kind_suffixes(class_names, list(is_thing) if is_thing else None)
        with self._lock:
            segmenter, active = self._segmenter, self._active
        if segmenter is None:
            raise VocabularyError("the node is not configured: configure it first")
        templates = list(templates) if templates else list(active.templates if active else self.config.prompt_templates)
        vocabulary = segmenter.make_vocabulary(names, flags, templates, version=0)  # outside the lock: may be slow
        with self._lock:
            self._version += 1
            self._active = vocabulary = _with_version(vocabulary, self._version)
        return vocabulary

    def from_parameters(self, changes: Mapping[str, Any], current: Mapping[str, Any]) -> Vocabulary | None:
        """Apply changed ``vocabulary.*`` parameters (``current`` holds the others); None when they describe
        the active vocabulary already (the parameters being synced to it). Raises VocabularyError."""
        raw_names, raw_flags, templates = self._parameter_request(changes, current)
        names, flags = split_kind_suffixes(raw_names, raw_flags)
        active = self._active
        wanted = (tuple(n.strip() for n in names), tuple(flags or (True,) * len(names)), tuple(templates))
        if active is not None and wanted == (active.class_names, active.is_thing, active.templates):
            return None
        return self.request(raw_names, raw_flags, templates)

    def check_parameters(self, changes: Mapping[str, Any], current: Mapping[str, Any],
                         config: VocabularyConfig) -> None:
        """The rules without a model (an unconfigured node): raises VocabularyError when refused."""
        names, flags, templates = self._parameter_request(changes, current)
        validate_vocabulary(*split_kind_suffixes(names, flags), config)
        validate_templates(templates)

    @staticmethod
    def parameter_values(vocabulary: Vocabulary) -> dict[str, list]:
        """The ``vocabulary.*`` parameter values that describe ``vocabulary`` (plain names, its flags)."""
        return {PARAMETERS[0]: list(vocabulary.class_names), PARAMETERS[1]: list(vocabulary.is_thing),
                PARAMETERS[2]: list(vocabulary.templates)}

    @staticmethod
    def _parameter_request(changes: Mapping[str, Any], current: Mapping[str, Any]) -> tuple[list, list | None, list]:
        """(names, flags, templates) after ``changes``. Names changed alone take their flags from their
        suffixes (no suffix = thing), as the service does when is_thing is empty, so
        `ros2 param set /maskclip vocabulary.class_names "[person, floor:stuff]"` works on its own."""
        def value(name: str) -> list:
            return list((changes[name] if name in changes else current.get(name)) or [])

        names_alone = PARAMETERS[0] in changes and PARAMETERS[1] not in changes
        flags = None if names_alone else value(PARAMETERS[1]) or None
        return value(PARAMETERS[0]), flags, value(PARAMETERS[2])


def _with_version(vocabulary: Vocabulary, version: int) -> Vocabulary:
    import dataclasses

    return dataclasses.replace(vocabulary, version=version)
