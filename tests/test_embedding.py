"""UMAP embeddings and their checks (small, seeded; UMAP compiles once per session)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from emolib.embedding import (
    clip_neighbors,
    fit_umap,
    knn_agreement,
    knn_indices,
    knn_preservation,
    label_agreement,
    umap_stability,
)
from emolib.models import EmotionCNN, features_by_fold, pooled_features
from emolib.occlusion import voxel_drop_vectors

pytest.importorskip("umap")


def _blobs(n_per: int = 25, d: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = 8 * np.eye(3, d)
    x = np.concatenate([c + rng.normal(size=(n_per, d)) for c in centres])
    return x, np.repeat(np.array(["a", "b", "c"]), n_per)


def test_clip_neighbors():
    assert clip_neighbors(30, 1000) == 30
    assert clip_neighbors(30, 12) == 11
    assert clip_neighbors(1, 12) == 2
    with pytest.raises(ValueError, match="at least 3"):
        clip_neighbors(30, 2)


def test_knn_measures_on_known_cases(rng):
    x = rng.normal(size=(40, 3))
    assert knn_preservation(x, x, 5) == 1.0
    rot = np.linalg.qr(rng.normal(size=(3, 3)))[0]
    assert knn_agreement(x, 2 * x @ rot + 1, 5) == 1.0  # similarity keeps neighbours
    idx = knn_indices(x, 4)
    assert idx.shape == (40, 4) and not (idx == np.arange(40)[:, None]).any()
    dup = np.concatenate([x[:1], x])  # duplicates: the point itself is still excluded
    assert not (knn_indices(dup, 3) == np.arange(41)[:, None]).any()
    xb, labels = _blobs()
    assert label_agreement(xb, labels, 5) == 1.0
    assert label_agreement(rng.normal(size=(75, 6)), labels, 5) < 0.6


def test_umap_is_seeded_and_separates_blobs():
    x, labels = _blobs()
    a = fit_umap(x, n_neighbors=30, min_dist=0.1, seed=0, n_epochs=60)
    b = fit_umap(x, n_neighbors=30, min_dist=0.1, seed=0, n_epochs=60)
    assert a.shape == (75, 2) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert label_agreement(a, labels, 5) > 0.95
    small = fit_umap(x[:8], n_neighbors=30, seed=0, n_epochs=30)  # neighbours clipped
    assert small.shape == (8, 2)
    with pytest.raises(ValueError, match="NaN"):
        fit_umap(np.full((10, 2), np.nan))


def test_umap_stability_table():
    x, labels = _blobs()
    res = umap_stability(x, seeds=(0, 1, 2), labels=labels, n_neighbors=15, k=5,
                         n_epochs=60)
    assert list(res.per_seed["seed"]) == [0, 1, 2]
    assert len(res.pairs) == 3
    assert (res.per_seed["trustworthiness"] > 0.8).all()
    assert (res.per_seed["label_agreement"] > 0.95).all()
    assert res.input_label_agreement == 1.0
    assert res.chance_label_agreement == pytest.approx(1 / 3)
    assert res.pairs["procrustes_disparity"].between(0, 1).all()
    row = res.summary("blobs")
    assert row["embedding"] == "blobs" and row["points"] == 75 and row["seeds"] == 3
    # the measures use a subset above max_points; UMAP still embeds every point
    sub = umap_stability(x, seeds=(0,), n_neighbors=15, k=5, max_points=30, n_epochs=30)
    assert len(sub.subset) == 30 and sub.embeddings[0].shape == (75, 2)
    assert np.isnan(sub.summary()["label_agreement"]) and np.isnan(
        sub.summary()["procrustes_disparity"])


def test_voxel_drop_vectors():
    maps = np.zeros((3, 4, 4, 4), np.float32)
    maps[0, 0, 0, 0] = 1.0
    maps[2, 1, 1, 1] = 2.0
    maps[1] = np.nan  # no map for B
    mask = np.zeros((4, 4, 4), bool)
    mask[0, 0, 0] = mask[1, 1, 1] = mask[2, 2, 2] = True
    vec, vox = voxel_drop_vectors(maps, ["A", "B", "C"], mask)
    assert vec.shape == (3, 2)
    assert vox[["i", "j", "k"]].values.tolist() == [[0, 0, 0], [1, 1, 1], [2, 2, 2]]
    assert list(vox["argmax"][:2]) == ["A", "C"]
    vec2, vox2 = voxel_drop_vectors(maps, ["A", "B", "C"], np.ones((4, 4, 4), bool),
                                    max_voxels=10, seed=1)
    assert vec2.shape == (10, 2) and len(vox2) == 10


def _model(seed: int) -> EmotionCNN:
    torch.manual_seed(seed)
    return EmotionCNN(n_classes=3, in_shape=(8, 8, 6)).eval()


def test_features_come_from_each_volumes_own_fold_model():
    vols = np.random.default_rng(0).normal(size=(5, 8, 8, 6)).astype(np.float32)
    models = {"run-1": _model(1), "run-2": _model(2)}
    rows = pd.DataFrame({"fold": ["run-2", "run-1", "run-2"], "sample": [4, 1, 0]})
    feats = features_by_fold(rows, vols, models.__getitem__, batch_size=2, n_threads=1)
    assert feats.shape == (3, 256)
    with torch.no_grad():
        for i, (fold, s) in enumerate(rows.itertuples(index=False)):
            ref = models[fold].features(torch.from_numpy(vols[s:s + 1])[:, None])
            np.testing.assert_allclose(feats[i], ref[0].numpy(), atol=1e-5)
    np.testing.assert_allclose(pooled_features(models["run-1"], vols[[1]]), feats[[1]],
                               atol=1e-6)


def test_umap_knn_is_exact_and_starts_with_the_point():
    from sklearn.metrics import pairwise_distances

    from emolib.embedding import umap_knn

    x = np.random.default_rng(2).normal(size=(30, 4))
    x[5] = x[6]  # a duplicate
    idx, dist = umap_knn(x, 6)
    assert idx.shape == dist.shape == (30, 6)
    assert (idx[:, 0] == np.arange(30)).all() and (dist[:, 0] == 0).all()
    d = pairwise_distances(x)
    np.testing.assert_allclose(dist, np.take_along_axis(d, idx, 1), atol=1e-5)
    np.testing.assert_allclose(np.sort(dist[:, 1:], 1), np.sort(d, 1)[:, 1:6], atol=1e-5)
    with pytest.raises(ValueError, match="neighbours"):
        fit_umap(x, n_neighbors=10, knn=(idx, dist))
