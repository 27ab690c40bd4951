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
KIND_SUFFIXES = {":thing": True, ":stuff": False}  # optional suffix of a requested class name


class VocabularyError(ValueError):
    """A vocabulary was refused; ``reason`` says why (shown to the user as is)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class VocabularyConfig:
    """The ``vocabulary`` section (config/default.yaml documents every field): the initial vocabulary,
    the prompt templates and the limits every requested vocabulary must respect. The initial names and
    flags are checked when a vocabulary is built from them (``build_vocabulary``), not here."""

    class_names: tuple[str, ...]      # the initial classes
    is_thing: tuple[bool, ...]        # per initial class: thing (True) or stuff (False)
    prompt_templates: tuple[str, ...]  # templates averaged into each class's text embedding
    max_classes: int                  # most classes a vocabulary may have
    max_name_length: int              # longest class name in characters
    embedding_cache_size: int         # text embeddings kept in the cache

    def __post_init__(self) -> None:
        for name in ("class_names", "is_thing", "prompt_templates"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
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
        raise VocabularyError(f"prompt templates need exactly one '{{}}' slot: {_short([str(t) for t in bad])}")
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
        raise VocabularyError(f"class names longer than {config.max_name_length} characters: {_short(too_long)}")
    seen: dict[str, str] = {}
    for n in names:
        if n.lower() in seen:
            raise VocabularyError(f"duplicate class name {_short([n])}")
        seen[n.lower()] = n
    flags = tuple(True for _ in names) if is_thing is None else tuple(is_thing)
    if len(flags) != len(names):
        raise VocabularyError(f"{len(flags)} thing/stuff flags for {len(names)} class names")
    return tuple(names), tuple(bool(f) for f in flags)


def split_kind_suffixes(class_names: Iterable[str], is_thing: Iterable[bool] | None = None
                        ) -> tuple[list[str], list[bool] | None]:
    """The one rule for thing/stuff suffixes, shared by the service, the parameters and the CLI.

    A requested name may end in ``:thing`` or ``:stuff``; the suffix is removed from the name. Another
    word after a last colon (``wall:things``) is refused as a mistyped suffix; any other colon belongs to
    the name (``ratio 1:2``). Flags: ``is_thing`` when given (one per class; a suffix that contradicts its
    flag is refused), else the suffixes (a name without one is a thing) when any name has one, else None
    (``validate_vocabulary``'s default: all things). Raises VocabularyError(reason)."""
    names, suffix_flags = [], []
    for raw in class_names:
        if not isinstance(raw, str):
            raise VocabularyError("class names must be strings")
        suffix = next((s for s in KIND_SUFFIXES if raw.endswith(s)), None)
        tail = raw.rpartition(":")[2]
        if suffix is None and ":" in raw and tail.isalpha():
            raise VocabularyError(f"{_short([raw])}: the suffix must be :thing or :stuff")
        names.append(raw[: -len(suffix)] if suffix else raw)
        suffix_flags.append(KIND_SUFFIXES[suffix] if suffix else None)
    flags = None if is_thing is None else [bool(f) for f in is_thing]
    if flags:
        clash = [raw for raw, f, s in zip(class_names, flags, suffix_flags) if s is not None and s != f]
        if len(flags) == len(names) and clash:
            raise VocabularyError(f"suffix and is_thing disagree for {_short(clash)}")
        return names, flags
    if any(f is not None for f in suffix_flags):
        return names, [True if f is None else f for f in suffix_flags]
    return names, None


def _short(items: Sequence[str], count: int = 3, length: int = 40) -> str:
    """A few items, each cut to ``length`` characters: refusal messages stay short however long the input."""
    shown = [repr(i if len(i) <= length else i[:length] + "...") for i in list(items)[:count]]
    return ", ".join(shown) + (f" and {len(items) - count} more" if len(items) > count else "")


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
