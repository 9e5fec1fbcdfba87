"""UMAP embeddings of occlusion maps and CNN features, and how far to trust them.

The original project embedded (a) the coordinates of the top voxels of each class's
occlusion map and (b) every voxel's vector of class-mean drops with UMAP (n_neighbors 30,
min_dist 0.1). Here, besides those, (c) the CNN's pooled 256-d features of the held-out
volumes (each by its own fold's model, :func:`emolib.models.features_by_fold`) are embedded,
and every embedding is checked:

- :func:`fit_umap` fits a seeded :class:`umap.UMAP` (``n_neighbors`` clipped to the number
  of points);
- :func:`umap_stability` refits with several seeds and reports, per seed, the
  trustworthiness (:func:`sklearn.manifold.trustworthiness`: are the embedding's neighbours
  true neighbours?), the share of each point's ``k`` nearest neighbours in the input that
  stay among its ``k`` nearest in the embedding, and the share of embedding neighbours with
  the same label; per pair of seeds, the Procrustes disparity
  (:func:`scipy.spatial.procrustes`: 0 = the same picture up to rotation, reflection and
  scale) and the share of ``k``-nearest neighbours the two embeddings agree on.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.spatial import procrustes
from sklearn.manifold import trustworthiness
from sklearn.neighbors import NearestNeighbors

__all__ = [
    "StabilityResult", "clip_neighbors", "fit_umap", "knn_agreement", "knn_indices",
    "knn_preservation", "label_agreement", "umap_knn", "umap_stability",
]


def clip_neighbors(n_neighbors: int, n_samples: int) -> int:
    """``n_neighbors`` clipped to ``[2, n_samples - 1]`` (UMAP needs fewer neighbours than
    points)."""
    if n_samples < 3:
        raise ValueError(f"UMAP needs at least 3 points, got {n_samples}")
    return int(max(2, min(int(n_neighbors), n_samples - 1)))


def fit_umap(
    x: np.ndarray,
    n_neighbors: int = 30,
    min_dist: float = 0.1,
    seed: int = 0,
    n_components: int = 2,
    knn: tuple[np.ndarray, np.ndarray] | None = None,
    **kwargs,
) -> np.ndarray:
    """Embed the rows of ``x`` with a seeded UMAP (Euclidean distances).

    The nearest neighbours are computed exactly with scikit-learn and handed to UMAP as
    ``precomputed_knn`` (UMAP would compute them exactly too below 4096 points, and
    approximately above); this skips UMAP's own neighbour search and about half of its
    just-in-time compilation, and lets several seeds share one search.

    Parameters
    ----------
    x : numpy.ndarray, shape (n_samples, n_features)
        Points to embed.
    n_neighbors : int, default=30
        UMAP's neighbourhood size (the original's 30), clipped by :func:`clip_neighbors`.
    min_dist : float, default=0.1
        UMAP's minimum distance (the original's 0.1).
    seed : int, default=0
        ``random_state`` of UMAP (makes it deterministic, and single-threaded).
    n_components : int, default=2
        Dimensions of the embedding.
    knn : tuple of numpy.ndarray, optional
        ``(indices, distances)`` of each point's nearest neighbours, itself first, at least
        the clipped ``n_neighbors`` of them (:func:`umap_knn`); computed when not given.
    **kwargs
        Passed to :class:`umap.UMAP`.

    Returns
    -------
    numpy.ndarray, shape (n_samples, n_components), float32
    """
    import umap

    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"x must be 2-D, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("x contains NaN or infinite values")
    k = clip_neighbors(n_neighbors, len(x))
    idx, dist = umap_knn(x, k) if knn is None else knn
    if idx.shape != dist.shape or len(idx) != len(x) or idx.shape[1] < k:
        raise ValueError(f"knn must hold at least {k} neighbours of each of the {len(x)} points")
    # spectral initialisation needs a connected, not-too-small graph; random is safe there
    init = kwargs.pop("init", "spectral" if len(x) > n_components + k + 1 else "random")
    reducer = umap.UMAP(n_neighbors=k, min_dist=min_dist, n_components=n_components,
                        random_state=seed, init=init,
                        precomputed_knn=(idx[:, :k], dist[:, :k], None), **kwargs)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*n_jobs value.*overridden.*")
        warnings.filterwarnings("ignore", message=".*Graph is not fully connected.*")
        warnings.filterwarnings("ignore", message=".*knn_search_index.*")  # no transform
        return reducer.fit_transform(x).astype(np.float32)


def umap_knn(x: np.ndarray, n_neighbors: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact nearest neighbours in UMAP's format: ``(indices, distances)``, ``(n, k)``,
    each point first in its own row (``k`` clipped by :func:`clip_neighbors`)."""
    x = np.asarray(x, dtype=np.float32)
    k = clip_neighbors(n_neighbors, len(x))
    dist, idx = NearestNeighbors(n_neighbors=k).fit(x).kneighbors(x)
    # with duplicate points the point itself need not come first: put it there
    for i in np.flatnonzero(idx[:, 0] != np.arange(len(x))):
        row = idx[i][idx[i] != i][: k - 1]
        idx[i] = np.concatenate([[i], row])
        dist[i] = np.concatenate([[0.0], np.linalg.norm(x[row] - x[i], axis=1)])
    return idx.astype(np.int64), dist.astype(np.float32)


def knn_indices(x: np.ndarray, k: int) -> np.ndarray:
    """Indices of each point's ``k`` nearest neighbours (itself excluded), ``(n, k)``."""
    x = np.asarray(x, dtype=np.float64)
    k = int(min(k, len(x) - 1))
    if k < 1:
        raise ValueError("need at least 2 points")
    nn_ = NearestNeighbors(n_neighbors=k + 1).fit(x)
    idx = nn_.kneighbors(x, return_distance=False)
    # drop the point itself (with duplicates it need not come first)
    out = np.empty((len(x), k), dtype=np.int64)
    for i, row in enumerate(idx):
        row = row[row != i]
        out[i] = row[:k]
    return out


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    k = a.shape[1]
    return float(np.mean([len(np.intersect1d(r, s, assume_unique=True)) / k
                          for r, s in zip(a, b, strict=True)]))


def knn_preservation(x: np.ndarray, embedding: np.ndarray, k: int = 10) -> float:
    """Mean share of each point's ``k`` nearest neighbours in ``x`` that are also among its
    ``k`` nearest in ``embedding`` (1: every neighbourhood kept)."""
    return _overlap(knn_indices(x, k), knn_indices(embedding, k))


def knn_agreement(a: np.ndarray, b: np.ndarray, k: int = 10) -> float:
    """Mean share of ``k``-nearest neighbours two embeddings of the same points agree on."""
    return _overlap(knn_indices(a, k), knn_indices(b, k))


def label_agreement(x: np.ndarray, labels: Sequence, k: int = 10) -> float:
    """Mean share of each point's ``k`` nearest neighbours that carry its label.

    A random neighbour has the same label with probability ``sum(p_c ** 2)`` (``p_c``: the
    share of class ``c``), the baseline to compare with.
    """
    labels = np.asarray(labels)
    idx = knn_indices(x, k)
    return float((labels[idx] == labels[:, None]).mean())


@dataclass
class StabilityResult:
    """Embeddings of one data set with several UMAP seeds and how much they agree.

    Attributes
    ----------
    embeddings : dict of int to numpy.ndarray
        Seed -> embedding ``(n, 2)`` of all points.
    per_seed : pandas.DataFrame
        ``seed``, ``trustworthiness``, ``knn_preserved``, ``label_agreement`` (NaN without
        labels), computed on ``subset``.
    pairs : pandas.DataFrame
        ``seed_a``, ``seed_b``, ``procrustes_disparity``, ``knn_agreement``.
    input_label_agreement : float
        :func:`label_agreement` in the input space (NaN without labels).
    chance_label_agreement : float
        Same-label share of random neighbours, ``sum(p_c ** 2)`` (NaN without labels).
    subset : numpy.ndarray
        Points the measures were computed on (all, or a seeded sample of ``max_points``).
    k : int
        Neighbourhood size of the measures.
    """

    embeddings: dict[int, np.ndarray]
    per_seed: pd.DataFrame
    pairs: pd.DataFrame
    input_label_agreement: float
    chance_label_agreement: float
    subset: np.ndarray
    k: int

    def summary(self, name: str = "") -> dict:
        """One row for a table: means (and ranges) over seeds and seed pairs."""
        ps, pr = self.per_seed, self.pairs
        return {
            "embedding": name, "points": len(next(iter(self.embeddings.values()))),
            "seeds": len(ps), "k": self.k,
            "trustworthiness": ps["trustworthiness"].mean(),
            "trustworthiness_sd": ps["trustworthiness"].std(ddof=0),
            "knn_preserved": ps["knn_preserved"].mean(),
            "label_agreement": ps["label_agreement"].mean(),
            "label_agreement_input": self.input_label_agreement,
            "label_agreement_chance": self.chance_label_agreement,
            "procrustes_disparity": pr["procrustes_disparity"].mean() if len(pr) else np.nan,
            "knn_agreement_between_seeds": pr["knn_agreement"].mean() if len(pr) else np.nan,
        }


def umap_stability(
    x: np.ndarray,
    seeds: Sequence[int] = (0, 1, 2),
    labels: Sequence | None = None,
    n_neighbors: int = 30,
    min_dist: float = 0.1,
    k: int = 10,
    max_points: int = 3000,
    sample_seed: int = 0,
    **kwargs,
) -> StabilityResult:
    """Fit UMAP with several seeds and measure how faithful and how stable it is.

    Parameters
    ----------
    x : numpy.ndarray, shape (n, d)
        Points to embed.
    seeds : sequence of int, default=(0, 1, 2)
        UMAP seeds; the first one's embedding is the one to show.
    labels : sequence, optional
        A label per point (e.g. the emotion) for the label-agreement measures.
    n_neighbors, min_dist
        UMAP parameters (see :func:`fit_umap`).
    k : int, default=10
        Neighbourhood size of the measures (clipped to ``n - 1``).
    max_points : int, default=3000
        The measures need all pairwise distances; above this many points they are computed
        on a seeded random subset (UMAP itself always sees all points).
    sample_seed : int, default=0
        Seed of that subset.
    **kwargs
        Passed to :func:`fit_umap`.

    Returns
    -------
    StabilityResult
    """
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    if not seeds:
        raise ValueError("give at least one seed")
    knn = umap_knn(x, n_neighbors)
    embeddings = {int(s): fit_umap(x, n_neighbors, min_dist, seed=int(s), knn=knn, **kwargs)
                  for s in seeds}
    if n > max_points:
        subset = np.sort(np.random.default_rng(sample_seed).choice(n, max_points,
                                                                   replace=False))
    else:
        subset = np.arange(n)
    xs = x[subset]
    kk = int(max(1, min(k, len(subset) // 2 - 1)))
    lab = None if labels is None else np.asarray(labels)[subset]
    rows = []
    for s, emb in embeddings.items():
        es = emb[subset].astype(np.float64)
        rows.append({
            "seed": s,
            "trustworthiness": float(trustworthiness(xs, es, n_neighbors=kk)),
            "knn_preserved": knn_preservation(xs, es, kk),
            "label_agreement": label_agreement(es, lab, kk) if lab is not None else np.nan,
        })
    pairs = []
    for a, b in itertools.combinations(embeddings, 2):
        ea, eb = embeddings[a][subset].astype(np.float64), embeddings[b][subset].astype(
            np.float64)
        _, _, disparity = procrustes(ea, eb)
        pairs.append({"seed_a": a, "seed_b": b, "procrustes_disparity": float(disparity),
                      "knn_agreement": knn_agreement(ea, eb, kk)})
    if lab is not None:
        _, counts = np.unique(lab, return_counts=True)
        chance = float(((counts / counts.sum()) ** 2).sum())
        inp = label_agreement(xs, lab, kk)
    else:
        chance = inp = np.nan
    return StabilityResult(embeddings, pd.DataFrame(rows),
                           pd.DataFrame(pairs, columns=["seed_a", "seed_b",
                                                        "procrustes_disparity",
                                                        "knn_agreement"]),
                           inp, chance, subset, kk)
