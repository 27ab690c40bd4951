"""Training samples of the small CLIP: a pool of generated scenes streamed through memory, balanced
batches (one sample per label, so no duplicate caption acts as a false negative) and captions."""
from __future__ import annotations

import numpy as np

from maskclip_ros.data import world
from maskclip_ros.small_clip.config import SmallClipTrainConfig
from maskclip_ros.small_clip.windows import cut, region_window, stuff_window, thing_window

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
        self.scenes = [world.generate_scene(seed, i, cfg)
                       for i in tqdm(range(size), desc="world", disable=not progress)]
        self.names = {c["id"]: c["name"] for c in world.categories()}

    def refresh(self, count: int, rng: np.random.Generator) -> None:
        """Replace ``count`` random scenes by new ones (next indices of the stream)."""
        for slot in rng.choice(len(self.scenes), size=min(count, len(self.scenes)), replace=False):
            self.scenes[slot] = world.generate_scene(self.seed, self.next_index, self.cfg)
            self.next_index += 1

    def by_label(self) -> dict[str, list[tuple[int, int]]]:
        """label -> [(scene slot, segment index)] over the pool."""
        index: dict[str, list] = {}
        for s, scene in enumerate(self.scenes):
            for k, seg in enumerate(scene.segments):
                index.setdefault(thing_label(seg, self.names), []).append((s, k))
        return index

def caption(seg: dict, names: dict, templates, rng) -> str:
    """A random description of a region: a prompt template over '<colour> <class>' or the bare class, or
    the region's own description (which names the stuff it stands on)."""
    name = names[seg["category_id"]]
    if seg["isthing"] and rng.random() < THING_DESCRIPTION_PROB:
        return seg["description"]
    if seg["isthing"] and rng.random() < THING_COLOUR_PROB:
        name = f"{seg['colour']} {name}"
    return templates[int(rng.integers(len(templates)))].format(name)

def crop_batch(pool: ScenePool, tc: SmallClipTrainConfig, templates, rng, grid, p: int):
    """One balanced batch: per label one random region of the pool, cut as a window at native scale
    (patches of p pixels). A stuff label is, with probability tc.region_prob, its whole region (any size,
    only the region's patches seen), else a mostly-pure window of at most tc.max_window patches.
    Returns (list of WindowSample, captions)."""
    index = pool.by_label()
    samples, texts = [], []
    for label in sorted(index):
        s, k = index[label][int(rng.integers(len(index[label])))]
        scene = pool.scenes[s]
        seg = scene.segments[k]
        if seg["isthing"]:
            win = thing_window(seg, tc.max_window, grid, p, [int(rng.integers(0, 2)) for _ in range(4)])
            samples.append(cut(scene.image, win, p))
        elif tc.region_prob > 0 and rng.random() < tc.region_prob:
            window, keep = region_window(scene.panoptic, seg["id"], grid, p)
            samples.append(cut(scene.image, window, p, keep))
        else:
            window = stuff_window(scene.panoptic, seg["id"], min_window=tc.stuff_min_window,
                                  max_window=tc.max_window, purity=tc.stuff_purity, grid=grid, p=p, rng=rng)
            samples.append(cut(scene.image, window, p))
        texts.append(caption(seg, pool.names, templates, rng))
    return samples, texts
