"""Training samples of the small CLIP: a pool of generated scenes streamed through memory, balanced
batches (one sample per label) and captions with what they say (so every caption true of a sample can count
as its positive)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from maskclip_ros.data import world
from maskclip_ros.small_clip.config import SmallClipTrainConfig
from maskclip_ros.small_clip.windows import WindowSample, cut, region_window, stuff_window, thing_window

# Caption choice for a thing: its own description with this probability, else (with THING_COLOUR_PROB)
# "<colour> <class>" or the bare class inside a prompt template.
THING_DESCRIPTION_PROB = 0.35
THING_COLOUR_PROB = 0.7


def thing_label(seg: dict, names: dict) -> str:
    """Balancing label of a segment: '<colour> <class>' for things, the class for stuff."""
    name = names[seg["category_id"]]
    return f"{seg['colour']} {name}" if seg["isthing"] else name


class ScenePool:
    """Scenes of the world ``seed`` held in memory, refreshed as a stream (scene k replaced by the next)."""

    def __init__(self, seed: int, size: int, cfg: world.WorldConfig, progress: bool = True):
        from tqdm import tqdm
        self.seed, self.cfg, self.next_index = seed, cfg, size
        self.indices = list(range(size))  # scene index (in the world's stream) of each slot
        self.scenes = [world.generate_scene(seed, i, cfg)
                       for i in tqdm(self.indices, desc="world", disable=not progress)]
        self.names = {c["id"]: c["name"] for c in world.categories()}

    def refresh(self, count: int, rng: np.random.Generator) -> None:
        """Replace ``count`` random scenes by new ones (next indices of the stream)."""
        for slot in rng.choice(len(self.scenes), size=min(count, len(self.scenes)), replace=False):
            self.scenes[slot] = world.generate_scene(self.seed, self.next_index, self.cfg)
            self.indices[slot] = self.next_index
            self.next_index += 1

    def state(self) -> dict:
        """What restore() needs to rebuild this pool (resume)."""
        return {"indices": list(self.indices), "next": self.next_index}

    def restore(self, state: dict) -> None:
        """Regenerate the slots of a saved pool (state())."""
        for slot, index in enumerate(state["indices"]):
            if self.indices[slot] != index:
                self.scenes[slot] = world.generate_scene(self.seed, index, self.cfg)
        self.indices, self.next_index = list(state["indices"]), int(state["next"])

    def by_label(self) -> dict[str, list[tuple[int, int]]]:
        """label -> [(scene slot, segment index)] over the pool."""
        index: dict[str, list] = {}
        for s, scene in enumerate(self.scenes):
            for k, seg in enumerate(scene.segments):
                index.setdefault(thing_label(seg, self.names), []).append((s, k))
        return index


def caption(seg: dict, names: dict, templates, rng) -> tuple[str, tuple]:
    """A random description of a region and what it says, (class, colour or None, stuff under it or None):
    a prompt template over '<colour> <class>' or the bare class, or the region's own description (which
    names the stuff it stands on)."""
    name = names[seg["category_id"]]
    if seg["isthing"] and rng.random() < THING_DESCRIPTION_PROB:
        return seg["description"], (name, seg["colour"], seg["stuff"])
    if seg["isthing"] and rng.random() < THING_COLOUR_PROB:
        return _template(templates, rng).format(f"{seg['colour']} {name}"), (name, seg["colour"], None)
    return _template(templates, rng).format(name), (name, None, None)


def _template(templates, rng) -> str:
    return templates[int(rng.integers(len(templates)))]


def describes(seg: dict, names: dict, spec: tuple) -> bool:
    """Whether a caption saying ``spec`` (class, colour|None, stuff|None) is true of segment ``seg``."""
    name, colour, under = spec
    return (names[seg["category_id"]] == name and (colour is None or seg["colour"] == colour)
            and (under is None or seg["stuff"] == under))


@dataclass(frozen=True)
class Batch:
    """Samples with their captions: segments[i] is what samples[i] shows, specs[i] what texts[i] says."""
    samples: list
    texts: list
    segments: list
    specs: list

    def positives(self, names: dict, multi_positive: bool):
        """(B, B) bool tensor, [i, j]: caption j is true of sample i (only the diagonal unless
        ``multi_positive``; the diagonal always is)."""
        import torch
        if not multi_positive:
            return torch.eye(len(self.segments), dtype=torch.bool)
        return torch.tensor([[describes(seg, names, spec) for spec in self.specs] for seg in self.segments])


def window_sample(scene, seg: dict, tc: SmallClipTrainConfig, grid, p: int, rng) -> WindowSample:
    """A training window of one segment at native scale (patches of p pixels): a thing's bbox with random
    0-1 patch margins; a stuff segment, with probability tc.region_prob, its whole region (any size, only
    its patches seen), else a mostly-pure window of at most tc.max_window patches. Patch labels for the
    dense loss when tc.window_dense_weight is set."""
    dense = scene if tc.window_dense_weight else None
    if seg["isthing"]:
        window = thing_window(seg, tc.max_window, grid, p, [int(rng.integers(0, 2)) for _ in range(4)])
        return cut(scene.image, window, p, scene=dense)
    if tc.region_prob > 0 and rng.random() < tc.region_prob:
        window, keep = region_window(scene.panoptic, seg["id"], grid, p)
        return cut(scene.image, window, p, keep, scene=dense)
    window = stuff_window(scene.panoptic, seg["id"], min_window=tc.stuff_min_window, max_window=tc.max_window,
                          purity=tc.stuff_purity, grid=grid, p=p, rng=rng)
    return cut(scene.image, window, p, scene=dense)


def crop_batch(pool: ScenePool, tc: SmallClipTrainConfig, templates, rng, grid, p: int) -> Batch:
    """One balanced batch: per label one random region of the pool as a window_sample, with a caption."""
    index = pool.by_label()
    samples, texts, segs, specs = [], [], [], []
    for label in sorted(index):
        s, k = index[label][int(rng.integers(len(index[label])))]
        scene = pool.scenes[s]
        seg = scene.segments[k]
        samples.append(window_sample(scene, seg, tc, grid, p, rng))
        text, spec = caption(seg, pool.names, templates, rng)
        texts.append(text)
        specs.append(spec)
        segs.append(seg)
    return Batch(samples, texts, segs, specs)
