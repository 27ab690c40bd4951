"""Hierarchical grouping of superpixels into object-like regions (selective-search-like, deterministic).

A graph segmentation (Felzenszwalb) over-segments the image into ``n`` leaves. Adjacent regions are then
merged greedily, most similar pair first, until one region is left; every region ever formed (the ``n``
leaves and the ``n - 1`` merges) is a candidate proposal. Similarity mixes colour, texture, size, fill (how
well the pair fills its joint box) and how weak the image edge between them is.

Each region keeps statistics that add up when regions merge, so a merge costs O(neighbours):
size, box, colour/texture histograms, and the length and edge strength of its outer boundary.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import find_objects
from skimage.segmentation import felzenszwalb


@dataclass(frozen=True)
class Leaves:
    """The over-segmentation and each leaf's statistics (n leaves, image of h x w pixels).

    labels: (h, w) int32 leaf index per pixel; size: (n,) float64 pixels; box: (n, 4) float64 xyxy with
    exclusive max; colour: (n, C) and texture: (n, T) float64 histograms, L1-normalised per leaf.
    pairs: (E, 2) int64 adjacent leaves (i < j); boundary: (E,) float64 pixel edges between them;
    strength: (E,) float64 summed edge strength (in [0, 1] per pixel edge) along that boundary.
    """
    labels: np.ndarray
    size: np.ndarray
    box: np.ndarray
    colour: np.ndarray
    texture: np.ndarray
    pairs: np.ndarray
    boundary: np.ndarray
    strength: np.ndarray


@dataclass(frozen=True)
class Hierarchy:
    """All regions of one grouping: ids < n are leaves, id n + t is the region formed by merge t.

    children: (R, 2) int64, -1 for leaves; size: (R,) pixels; box: (R, 4) xyxy (exclusive max);
    perimeter: (R,) pixel edges shared with other regions (the image border not counted);
    contrast: (R,) mean edge strength along that boundary, in [0, 1] (0 where there is no boundary);
    merge_similarity: (R,) similarity in [0, 1] of the two children when the region was formed (1 for
    leaves); absorbed_similarity: (R,) similarity in [0, 1] to its sibling when the region was merged into
    its parent (NaN for a root, which never was).
    """
    num_leaves: int
    children: np.ndarray
    size: np.ndarray
    box: np.ndarray
    perimeter: np.ndarray
    contrast: np.ndarray
    merge_similarity: np.ndarray
    absorbed_similarity: np.ndarray

    def members(self, region: int) -> np.ndarray:
        """Leaf ids of one region, (k,) int64."""
        stack, out = [region], []
        while stack:
            r = stack.pop()
            if r < self.num_leaves:
                out.append(r)
            else:
                stack.extend(self.children[r])
        return np.asarray(out, np.int64)


def oversegment(image: np.ndarray, scale: float, sigma: float, min_size: int) -> np.ndarray:
    """Felzenszwalb graph segmentation of an (h, w, 3) uint8 image -> (h, w) int32 labels 0..n-1."""
    labels = felzenszwalb(image, scale=scale, sigma=sigma, min_size=min_size)
    return consecutive(labels).astype(np.int32)


def consecutive(labels: np.ndarray) -> np.ndarray:
    """Relabel non-negative integer labels to 0..n-1 keeping their order (O(pixels), no sort)."""
    present = np.bincount(labels.ravel()) > 0
    return (np.cumsum(present) - 1)[labels]


def edge_strength(image: np.ndarray) -> np.ndarray:
    """Per-pixel colour edge strength in [0, 1]: (h, w, 3) uint8 -> ((h, w-1), (h-1, w)) float64 for the
    horizontal and vertical pixel pairs (max channel difference / 255)."""
    img = image.astype(np.int16)
    horizontal = np.abs(img[:, 1:] - img[:, :-1]).max(-1) / 255.0
    vertical = np.abs(img[1:] - img[:-1]).max(-1) / 255.0
    return horizontal, vertical


def leaf_statistics(image: np.ndarray, labels: np.ndarray, colour_bins: int, texture_bins: int) -> Leaves:
    """Statistics of every leaf of ``labels`` (h, w) on ``image`` (h, w, 3) uint8 (any 3-channel space)."""
    n = int(labels.max()) + 1
    flat = labels.ravel()
    size = np.bincount(flat, minlength=n).astype(np.float64)
    colour = np.concatenate([_histogram(flat, image[..., c].ravel(), colour_bins, n) for c in range(3)], 1)
    texture = _texture_histogram(image, flat, texture_bins, n)
    box = _boxes(labels, n)
    pairs, boundary, strength = _adjacency(labels, edge_strength(image))
    return Leaves(labels, size, box, colour / 3.0, texture, pairs, boundary, strength)


def _histogram(flat_labels: np.ndarray, values: np.ndarray, bins: int, n: int) -> np.ndarray:
    """Per-label histogram of uint8 ``values`` with ``bins`` bins, L1-normalised: (n, bins)."""
    idx = flat_labels.astype(np.int64) * bins + values.astype(np.int64) * bins // 256
    hist = np.bincount(idx, minlength=n * bins).reshape(n, bins).astype(np.float64)
    return hist / np.maximum(hist.sum(1, keepdims=True), 1.0)


def _texture_histogram(image: np.ndarray, flat_labels: np.ndarray, bins: int, n: int) -> np.ndarray:
    """Per-label histogram of gradient orientation (``bins`` bins over 180 deg) weighted by gradient
    magnitude, plus one bin for flatness, on the mean of the channels: (n, bins + 1), L1-normalised."""
    grey = image.astype(np.float64).mean(-1)
    gy = np.gradient(grey, axis=0) if grey.shape[0] > 1 else np.zeros_like(grey)  # (h, w); 1-pixel
    gx = np.gradient(grey, axis=1) if grey.shape[1] > 1 else np.zeros_like(grey)  # sides: no gradient
    magnitude = np.hypot(gx, gy).ravel()
    orientation = ((np.arctan2(gy, gx).ravel() % np.pi) / np.pi * bins).astype(np.int64).clip(0, bins - 1)
    weights = np.concatenate([magnitude, np.full(magnitude.shape, 4.0)])  # flat pixels weigh like a soft edge
    idx = np.concatenate([flat_labels * (bins + 1) + orientation, flat_labels * (bins + 1) + bins])
    hist = np.bincount(idx, weights=weights, minlength=n * (bins + 1)).reshape(n, bins + 1)
    return hist / np.maximum(hist.sum(1, keepdims=True), 1e-12)


def _boxes(labels: np.ndarray, n: int) -> np.ndarray:
    """Per-label xyxy boxes (exclusive max), (n, 4) float64."""
    slices = find_objects(labels + 1, max_label=n)
    return np.array([(sx.start, sy.start, sx.stop, sy.stop) for sy, sx in slices], np.float64)


_DENSE_PAIRS = 1 << 22  # largest n * n pair table counted densely


def _adjacency(labels: np.ndarray, strengths: tuple[np.ndarray, np.ndarray]):
    """Adjacent label pairs (E, 2) with i < j, the number of pixel edges between them (E,) and the summed
    edge strength along them (E,)."""
    n = int(labels.max()) + 1
    a = np.concatenate([labels[:, :-1].ravel(), labels[:-1].ravel()]).astype(np.int64)
    b = np.concatenate([labels[:, 1:].ravel(), labels[1:].ravel()]).astype(np.int64)
    s = np.concatenate([strengths[0].ravel(), strengths[1].ravel()])
    cut = a != b
    lo, hi, s = np.minimum(a[cut], b[cut]), np.maximum(a[cut], b[cut]), s[cut]
    code = lo * n + hi
    if n * n <= _DENSE_PAIRS:  # count in a dense (n * n) table: no sort
        boundary = np.bincount(code, minlength=n * n)
        keys = np.flatnonzero(boundary)
        strength = np.bincount(code, weights=s, minlength=n * n)[keys]
        boundary = boundary[keys].astype(np.float64)
    else:
        keys, inverse = np.unique(code, return_inverse=True)
        boundary = np.bincount(inverse).astype(np.float64)
        strength = np.bincount(inverse, weights=s)
    return np.stack([keys // n, keys % n], 1), boundary, strength


@dataclass(frozen=True)
class Weights:
    """Weights of the similarity terms (each term in [0, 1])."""
    colour: float
    texture: float
    size: float
    fill: float
    edge: float
    edge_scale: float  # mean edge strength (0..1) at which the edge term reaches 0


class _Regions:
    """Statistics of every region of a grouping (leaves 0..n-1, merged regions n..2n-2) and the adjacency
    between live regions; ``merge`` forms region k from two live ones."""

    def __init__(self, leaves: Leaves, weights: Weights) -> None:
        n = len(leaves.size)
        total = 2 * n - 1
        self.n, self.weights, self.image_area = n, weights, float(leaves.size.sum())
        self.total_weight = weights.colour + weights.texture + weights.size + weights.fill + weights.edge
        if self.total_weight <= 0:
            raise ValueError("the similarity weights must not all be zero")
        self.size = np.zeros(total); self.size[:n] = leaves.size
        self.box = np.zeros((total, 4)); self.box[:n] = leaves.box
        self.colour = np.zeros((total, leaves.colour.shape[1])); self.colour[:n] = leaves.colour
        self.texture = np.zeros((total, leaves.texture.shape[1])); self.texture[:n] = leaves.texture
        self.children = np.full((total, 2), -1, np.int64)
        self.perimeter, self.edge_sum = np.zeros(total), np.zeros(total)
        self.merge_similarity = np.ones(total)
        np.add.at(self.perimeter, leaves.pairs.ravel(), np.repeat(leaves.boundary, 2))
        np.add.at(self.edge_sum, leaves.pairs.ravel(), np.repeat(leaves.strength, 2))
        self.links: list[dict[int, list[float]]] = [dict() for _ in range(total)]  # neighbour -> [length, strength]
        for (i, j), length, strength in zip(leaves.pairs.tolist(), leaves.boundary.tolist(),
                                            leaves.strength.tolist()):
            self.links[i][j] = self.links[j][i] = [length, strength]

    def similarity(self, r: int, others: list[int]) -> np.ndarray:
        """(k,) similarity in [0, 1] of region r with each of its neighbours ``others``."""
        o, w, box = np.asarray(others), self.weights, self.box
        joint = np.concatenate([np.minimum(box[o, :2], box[r, :2]), np.maximum(box[o, 2:], box[r, 2:])], 1)
        joint_area = (joint[:, 2] - joint[:, 0]) * (joint[:, 3] - joint[:, 1])
        shared = np.array([self.links[r][c] for c in others])  # (k, 2) boundary length, edge strength sum
        mean_edge = shared[:, 1] / np.maximum(shared[:, 0], 1.0)
        size = self.size
        return (w.colour * np.minimum(self.colour[o], self.colour[r]).sum(1)
                + w.texture * np.minimum(self.texture[o], self.texture[r]).sum(1)
                + w.size * (1.0 - (size[o] + size[r]) / self.image_area)
                + w.fill * (1.0 - (joint_area - size[o] - size[r]) / self.image_area)
                + w.edge * np.clip(1.0 - mean_edge / w.edge_scale, 0.0, 1.0)) / self.total_weight

    def merge(self, a: int, b: int, k: int, similarity: float) -> list[int]:
        """Region k := a + b (statistics, adjacency); returns k's neighbours, sorted."""
        shared_length, shared_strength = self.links[a][b]
        size = self.size
        size[k] = size[a] + size[b]
        self.box[k, :2] = np.minimum(self.box[a, :2], self.box[b, :2])
        self.box[k, 2:] = np.maximum(self.box[a, 2:], self.box[b, 2:])
        self.colour[k] = (self.colour[a] * size[a] + self.colour[b] * size[b]) / size[k]
        self.texture[k] = (self.texture[a] * size[a] + self.texture[b] * size[b]) / size[k]
        self.perimeter[k] = self.perimeter[a] + self.perimeter[b] - 2 * shared_length
        self.edge_sum[k] = self.edge_sum[a] + self.edge_sum[b] - 2 * shared_strength
        self.children[k] = (a, b)
        self.merge_similarity[k] = similarity
        links = self.links
        for old in (a, b):
            for c, (length, strength) in links[old].items():
                if c in (a, b):
                    continue
                acc = links[k].setdefault(c, [0.0, 0.0])
                acc[0] += length; acc[1] += strength
                del links[c][old]
            links[old] = {}
        for c, stats in links[k].items():
            links[c][k] = stats
        return sorted(links[k])

    def hierarchy(self, used: int) -> Hierarchy:
        """The Hierarchy of the first ``used`` regions."""
        n, perimeter = self.n, self.perimeter[:used]
        contrast = np.where(perimeter > 0, self.edge_sum[:used] / np.maximum(perimeter, 1.0), 0.0)
        absorbed = np.full(used, np.nan)
        absorbed[self.children[n:used].ravel()] = np.repeat(self.merge_similarity[n:used], 2)
        return Hierarchy(n, self.children[:used], self.size[:used], self.box[:used], perimeter, contrast,
                         self.merge_similarity[:used], absorbed)


def group(leaves: Leaves, weights: Weights) -> Hierarchy:
    """Greedy hierarchical grouping of the leaves (most similar adjacent pair first) -> Hierarchy.

    Deterministic: ties are broken by region ids. Runs until no adjacent pair is left (one region per
    connected component of the adjacency graph; a label map has one).
    """
    regions = _Regions(leaves, weights)
    n = regions.n
    heap: list[tuple[float, int, int]] = []
    for i in range(n):
        others = [j for j in regions.links[i] if j > i]
        if others:
            heap += [(-s, i, j) for j, s in zip(others, regions.similarity(i, others).tolist())]
    heapq.heapify(heap)
    alive = np.zeros(2 * n - 1, bool)
    alive[:n] = True
    k = n
    while heap:
        neg_s, a, b = heapq.heappop(heap)
        if not (alive[a] and alive[b]):
            continue
        others = regions.merge(a, b, k, -neg_s)
        alive[a] = alive[b] = False
        alive[k] = True
        if others:
            for c, s in zip(others, regions.similarity(k, others).tolist()):
                heapq.heappush(heap, (-s, c, k))
        k += 1
    return regions.hierarchy(k)  # fewer than 2n - 1 regions when the adjacency graph is not connected
