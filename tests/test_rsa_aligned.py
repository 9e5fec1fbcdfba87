"""Reordering through square matrices against rsatoolbox: compare_table's aligned corr and
cosine pass, calc_joint_rdms and reorder_patterns, in float64 and float32, with and without
room for all squares (:data:`emolib.rsa.vectors.SQUARES_BYTES`)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from rsatoolbox.rdm import RDMs, compare, concat

from emolib import rsa
from emolib.rsa import vectors as rsa_vectors
from tests.conftest import rdms_in_order, shuffled_rdms

#: Patterns: 300 gives two 256-row tiles in the square matrices and 44,850 pairs (two
#: chunks of the aligned pass at its 32768 entries).
N = 300


def _ids(n: int) -> list[str]:
    return [f"img{k:04d}.jpg" for k in range(n)]


def _rdms(rng, n_rdm: int, n: int, names, key: str, dtype=np.float64, **const) -> RDMs:
    """Correlation-distance-like RDMs (about 1 +- 0.2), shared structure plus noise."""
    k = n * (n - 1) // 2
    shared = rng.standard_normal(k)
    v = 1 + 0.2 * (0.5 * shared + rng.standard_normal((n_rdm, k)))
    desc = {key: list(names), **{c: [val] * n_rdm for c, val in const.items()}}
    return RDMs(v.astype(dtype), dissimilarity_measure="correlation", rdm_descriptors=desc,
                pattern_descriptors={"id": _ids(n)})


def _room_for(monkeypatch, n_squares: int, dtype=np.float64) -> None:
    monkeypatch.setattr(rsa_vectors, "SQUARES_BYTES",
                        n_squares * N * N * np.dtype(dtype).itemsize)


def _subjects(rng, dtype=np.float64) -> list[RDMs]:
    """Three subjects of 3 ROIs: the first in the model's order, two shuffled."""
    subjects = [_rdms(rng, 3, N, ["LOC", "PPA", "RSC"], "roi", dtype, subject=f"CSI{s}")
                for s in (1, 2, 3)]
    return [subjects[0], shuffled_rdms(subjects[1], 11), shuffled_rdms(subjects[2], 12)]


def _values(table, rdms: RDMs, model: RDMs, method: str) -> np.ndarray:
    rows = table[(table["subject"] == rdms.rdm_descriptors["subject"][0])
                 & (table["method"] == method)]
    return (rows.pivot(index="layer", columns="roi", values="value")
            .loc[model.rdm_descriptors["layer"], rdms.rdm_descriptors["roi"]].to_numpy())


@pytest.mark.parametrize("n_squares", [1, 2, 100])
def test_aligned_corr_and_cosine_match_rsatoolbox(monkeypatch, n_squares):
    """Model squares one, two or all at a time; one subject in the model's own order."""
    _room_for(monkeypatch, n_squares)
    rng = np.random.default_rng(20)
    model = _rdms(rng, 5, N, ["conv1", "layer1", "layer2", "layer3", "layer4"], "layer")
    subjects = _subjects(rng)
    table = rsa.compare_table(model, subjects, methods=("corr", "cosine", "spearman"),
                              chunk_size=5000)
    assert len(table) == 3 * 3 * 5 * 3
    for subj in subjects:
        aligned = rdms_in_order(subj, model.pattern_descriptors["id"])
        for method in ("corr", "cosine", "spearman"):
            np.testing.assert_allclose(_values(table, subj, model, method),
                                       compare(model, aligned, method), rtol=0, atol=1e-10)


def test_aligned_corr_of_float32_rdms_matches_float64_rsatoolbox():
    """float32 inputs: float32 products summed in float32 over at most 32768 entries, in
    float64 across chunks; rsatoolbox in float64 on the same (float32) values agrees to
    1e-7 for corr (measured: 5e-9, here and at BOLD5000's 12 million pairs) and 3e-7 for
    cosine (measured: 1.7e-7)."""
    rng = np.random.default_rng(21)
    model = _rdms(rng, 3, N, ["conv1", "layer1", "layer2"], "layer", np.float32)
    subjects = _subjects(rng, np.float32)
    table = rsa.compare_table(model, subjects, methods=("corr", "cosine"))
    model64 = RDMs(model.dissimilarities.astype(np.float64),
                   rdm_descriptors=model.rdm_descriptors,
                   pattern_descriptors=model.pattern_descriptors)
    for subj in subjects:
        aligned = rdms_in_order(subj, model.pattern_descriptors["id"])
        assert aligned.dissimilarities.dtype == np.float64
        # cosine of uncentred values near 1: its dot product and both sums of squares are
        # each rounded to float32 per chunk (about 6e-8 relative), so up to about 3 x 6e-8
        for method, atol in (("corr", 1e-7), ("cosine", 3e-7)):
            np.testing.assert_allclose(_values(table, subj, model, method),
                                       compare(model64, aligned, method), rtol=0, atol=atol)


def test_compare_table_with_blanked_pairs_drops_them_like_rsatoolbox():
    """NaNs (pairs blanked in every RDM) take the general path, aligned by id all the same."""
    rng = np.random.default_rng(22)
    model = _rdms(rng, 2, N, ["conv1", "layer1"], "layer")
    subjects = _subjects(rng)
    blank = rng.random(N) < 0.2  # pairs of two blanked patterns, in id terms
    for rdms in [model, *subjects]:
        pos = np.array([int(i[3:7]) for i in rdms.pattern_descriptors["id"]])
        i, j = np.triu_indices(N, 1)
        rdms.dissimilarities[:, blank[pos[i]] & blank[pos[j]]] = np.nan
    table = rsa.compare_table(model, subjects, methods=("corr", "cosine"))
    for subj in subjects:
        aligned = rdms_in_order(subj, model.pattern_descriptors["id"])
        for method in ("corr", "cosine"):
            np.testing.assert_allclose(_values(table, subj, model, method),
                                       compare(model, aligned, method), rtol=0, atol=1e-10)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n_squares", [1, 2])
def test_joint_rdms_are_the_float64_means_of_the_aligned_subjects(monkeypatch, dtype,
                                                                  n_squares):
    """Two squares (both shuffled subjects of a ROI) fit, or only one (whole reordered
    copies): the same numbers, the float64 mean of the aligned vectors in the inputs'
    dtype, bit for bit; rsatoolbox's concat + mean agrees."""
    _room_for(monkeypatch, n_squares, dtype)
    subjects = _subjects(np.random.default_rng(23), dtype)
    joint = rsa.calc_joint_rdms(subjects)
    assert joint.dissimilarities.dtype == dtype
    ids = subjects[0].pattern_descriptors["id"]
    aligned = [rdms_in_order(s, ids) for s in subjects]
    expected = (sum(a.dissimilarities.astype(np.float64) for a in aligned) / 3).astype(dtype)
    np.testing.assert_array_equal(joint.dissimilarities, expected)
    for k, roi in enumerate(["LOC", "PPA", "RSC"]):
        ref = concat([a.subset("roi", roi) for a in aligned]).mean()
        np.testing.assert_allclose(joint.dissimilarities[k], ref.dissimilarities[0],
                                   rtol=2e-7 if dtype == np.float32 else 1e-15)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_reorder_patterns_through_squares_keeps_dtype_and_nans(dtype):
    rng = np.random.default_rng(24)
    rdms = _rdms(rng, 2, N, ["x", "y"], "layer", dtype)
    rdms.dissimilarities[:, [0, 17, 4000]] = np.nan
    target = list(np.random.default_rng(3).permutation(_ids(N)))
    ours = rsa.reorder_patterns(rdms, target)
    assert ours.dissimilarities.dtype == dtype
    np.testing.assert_array_equal(ours.dissimilarities,
                                  rdms_in_order(rdms, target).dissimilarities.astype(dtype))
    back = rsa.reorder_patterns(ours, _ids(N))
    np.testing.assert_array_equal(back.dissimilarities, rdms.dissimilarities)


def test_rsa_and_the_generators_import_without_torch():
    """emolib.rsa and emolib.synthetic import torch only where a function needs it: at
    BOLD5000's size the 480 MB it holds are a fifth of the memory budget."""
    code = "import sys, emolib.rsa, emolib.synthetic; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)  # fmt: skip
    assert out.stdout.strip() == "False"
