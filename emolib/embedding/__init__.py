"""UMAP embeddings and how far to trust them (a generic engine: arrays in, tables out).

See :mod:`emolib.embedding.umap`.
"""

from emolib.embedding.umap import (
    StabilityResult,
    clip_neighbors,
    fit_umap,
    knn_agreement,
    knn_indices,
    knn_preservation,
    label_agreement,
    umap_knn,
    umap_stability,
)

__all__ = [
    "StabilityResult", "clip_neighbors", "fit_umap", "knn_agreement", "knn_indices",
    "knn_preservation", "label_agreement", "umap_knn", "umap_stability",
]
