"""Open vocabularies: class names, thing/stuff flags, prompt templates and their CLIP text embeddings.

A ``Vocabulary`` is immutable: an update builds a new object that callers swap in whole, so a frame is
never classified against half of two vocabularies. ``validate_vocabulary`` is the one validation shared by
the ROS service and the ``vocabulary`` parameter. ``TextEmbedder`` computes a class's embedding as the
average of its L2-normalised prompt-template embeddings (CLIP's prompt ensemble), re-normalised, and
caches it by (model, class name, templates).
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch

from maskclip_ros.model.tower import ClipTower

TEMPLATE_SLOT = "{}"


class VocabularyError(ValueError):
    """A vocabulary was refused; ``reason`` says why (shown to the user as is)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class VocabularyConfig:
    """The ``vocabulary`` section's model-side keys (config/default.yaml documents every field)."""

    prompt_templates: tuple[str, ...]
    max_classes: int
    max_name_length: int
    embedding_cache_size: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "prompt_templates", tuple(self.prompt_templates))
        validate_templates(self.prompt_templates)


@dataclass(frozen=True, eq=False)
class Vocabulary:
    """An immutable vocabulary with its text embeddings.

    class_names: C names; is_thing: C flags (False = stuff); templates: prompt templates used;
    version: increases with every vocabulary a Segmenter makes; text_embeddings: (C, E) L2-normalised,
    read-only by convention (a private copy; never modify it).
    """

    class_names: tuple[str, ...]
    is_thing: tuple[bool, ...]
    templates: tuple[str, ...]
    version: int
    text_embeddings: torch.Tensor

    def __post_init__(self) -> None:
        c = len(self.class_names)
        if len(self.is_thing) != c or tuple(self.text_embeddings.shape[:1]) != (c,):
            raise ValueError(f"vocabulary parts disagree: {c} names, {len(self.is_thing)} flags, "
                             f"embeddings {tuple(self.text_embeddings.shape)}")

    def __len__(self) -> int:
        return len(self.class_names)

    @property
    def thing_mask(self) -> torch.Tensor:
        """(C,) bool tensor of the thing flags, on the embeddings' device."""
        return torch.tensor(self.is_thing, dtype=torch.bool, device=self.text_embeddings.device)


def validate_templates(templates: Sequence[str]) -> tuple[str, ...]:
    """Templates must be non-empty strings with exactly one '{}' slot."""
    templates = tuple(templates)
    if not templates:
        raise VocabularyError("no prompt templates given")
    bad = [t for t in templates if not isinstance(t, str) or t.count(TEMPLATE_SLOT) != 1]
    if bad:
        raise VocabularyError(f"prompt templates need exactly one '{{}}' slot: {bad}")
    return templates


def validate_vocabulary(class_names: Iterable[str], is_thing: Iterable[bool] | None,
                        config: VocabularyConfig) -> tuple[tuple[str, ...], tuple[bool, ...]]:
    """Check and normalise a requested vocabulary; raises VocabularyError(reason).

    Names are stripped of surrounding whitespace; rules: non-empty list, no empty names, no duplicates
    (case-insensitive), at most ``max_classes`` names of at most ``max_name_length`` characters, and
    ``is_thing`` (default: all things) as long as the names.
    """
    names = [n.strip() if isinstance(n, str) else n for n in class_names]
    if not names:
        raise VocabularyError("the vocabulary is empty")
    if any(not isinstance(n, str) for n in names):
        raise VocabularyError("class names must be strings")
    if any(not n for n in names):
        raise VocabularyError("empty class name")
    if len(names) > config.max_classes:
        raise VocabularyError(f"{len(names)} classes exceed the maximum of {config.max_classes}")
    too_long = [n for n in names if len(n) > config.max_name_length]
    if too_long:
        raise VocabularyError(f"class names longer than {config.max_name_length} characters: {too_long[:3]}")
    seen: dict[str, str] = {}
    for n in names:
        if n.lower() in seen:
            raise VocabularyError(f"duplicate class name {n!r}")
        seen[n.lower()] = n
    flags = tuple(True for _ in names) if is_thing is None else tuple(is_thing)
    if len(flags) != len(names):
        raise VocabularyError(f"{len(flags)} thing/stuff flags for {len(names)} class names")
    return tuple(names), tuple(bool(f) for f in flags)


class TextEmbedder:
    """CLIP text embeddings of class names, prompt-ensembled and cached (thread-safe, LRU-bounded)."""

    def __init__(self, *, tower: ClipTower, cache_size: int):
        self.tower = tower
        self.cache_size = int(cache_size)
        self._cache: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def model_key(self) -> tuple:
        """Identifies the text model in the cache (name + object identity of its weights)."""
        return (self.tower.model_name, id(self.tower.clip))

    def __call__(self, class_names: Sequence[str], templates: Sequence[str]) -> torch.Tensor:
        """Class names (C) x templates (T) -> (C, E) L2-normalised embeddings (a new tensor)."""
        templates = tuple(templates)
        keys = [(self.model_key, name, templates) for name in class_names]
        with self._lock:
            missing = [k[1] for k in keys if k not in self._cache]
        if missing:
            computed = self._embed(missing, templates)  # outside the lock: may take a while
            with self._lock:
                for name, emb in zip(missing, computed):
                    self._cache[(self.model_key, name, templates)] = emb
        with self._lock:
            for k in keys:
                self._cache.move_to_end(k)
            out = torch.stack([self._cache[k] for k in keys])
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return out.clone()

    @torch.no_grad()
    def _embed(self, class_names: Sequence[str], templates: tuple[str, ...]) -> torch.Tensor:
        """(C, E): mean of the normalised template embeddings per class, re-normalised."""
        prompts = [t.replace(TEMPLATE_SLOT, name) for name in class_names for t in templates]
        tokens = self.tower.tokenizer(prompts)  # (C*T, context)
        emb = self.tower.encode_text(tokens).view(len(class_names), len(templates), -1)  # (C, T, E)
        return torch.nn.functional.normalize(emb.mean(1), dim=-1)


def build_vocabulary(class_names: Iterable[str], is_thing: Iterable[bool] | None, *, embedder: TextEmbedder,
                     config: VocabularyConfig, templates: Sequence[str] | None = None,
                     version: int = 0) -> Vocabulary:
    """Validate and embed a vocabulary (templates default to the configured ones)."""
    names, flags = validate_vocabulary(class_names, is_thing, config)
    templates = validate_templates(config.prompt_templates if templates is None else templates)
    return Vocabulary(class_names=names, is_thing=flags, templates=templates, version=int(version),
                      text_embeddings=embedder(names, templates))
