"""The RSA engine against rsatoolbox: comparisons, alignment, bootstrap, noise ceiling, tests."""

from __future__ import annotations

import itertools
import warnings

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import scipy.stats
import torch
from rsatoolbox.data import Dataset
from rsatoolbox.inference import boot_noise_ceiling, eval_bootstrap_pattern
from rsatoolbox.model import ModelFixed
from rsatoolbox.rdm import RDMs, calc_rdm, compare
from rsatoolbox.util.inference_util import bootstrap_pair_tests, t_test_0, t_tests
from scipy.spatial.distance import squareform

from emolib import rsa
from emolib.forrest import (
    average_over_blocks,
    calc_brain_rdms,
    calc_network_rdms,
    define_patterns,
)
from emolib.models import EmotionCNN, extract_activations
from emolib.rsa import rdms as rsa_rdms
from emolib.synthetic.bold5000 import simulate_bold5000_rdms
from tests.conftest import rdms_in_order, shuffled_rdms

METHODS = rsa.COMPARE_METHODS


def _resampled_pairs(sample: np.ndarray, n: int) -> np.ndarray:
    """Condensed indices of the pairs a bootstrap sample keeps (self-pairs dropped), from
    scipy's square form: what rsatoolbox's ``subsample_pattern`` does, written out."""
    square = squareform(np.arange(n * (n - 1) // 2, dtype=float))
    s = np.sort(sample)
    i, j = np.triu_indices(len(s), 1)
    keep = s[i] != s[j]
    return square[s[i][keep], s[j][keep]].astype(np.int64)


def _ids(n: int) -> list[str]:
    return [f"img{k:03d}.jpg" for k in range(n)]


def _random_rdms(rng, n_rdm, n, names, key="layer", ties=False, **extra):
    v = rng.random((n_rdm, n * (n - 1) // 2))
    if ties:  # a model RDM with many ties (categorical) and a coarsely rounded one
        v[0] = np.round(v[0] * 3)
        v[-1] = np.round(v[-1] * 10) / 10
    desc = {key: list(names)}
    desc.update({k: [val] * n_rdm for k, val in extra.items()})
    return RDMs(v, dissimilarity_measure="correlation", rdm_descriptors=desc,
                pattern_descriptors={"id": _ids(n)})


# ------------------------------------------------------------------ comparisons


@pytest.mark.parametrize("method", METHODS)
def test_compare_vectors_matches_rsatoolbox(method):
    rng = np.random.default_rng(1)
    a = _random_rdms(rng, 3, 14, ["l1", "l2", "l3"], ties=True)
    b = _random_rdms(rng, 4, 14, ["r1", "r2", "r3", "r4"], key="roi", ties=True)
    ours = rsa.compare_vectors(a.dissimilarities, b.dissimilarities, method, chunk_size=17)
    ref = compare(a, b, method)
    assert ours.shape == (3, 4)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-10)


@pytest.mark.parametrize("method", ["corr", "cosine", "spearman"])
def test_compare_vectors_float32_chunks_stay_close(method):
    rng = np.random.default_rng(2)
    a = _random_rdms(rng, 2, 40, ["l1", "l2"])
    b = _random_rdms(rng, 3, 40, ["r1", "r2", "r3"], key="roi")
    ours = rsa.compare_vectors(
        a.dissimilarities.astype(np.float32), b.dissimilarities.astype(np.float32), method,
        chunk_size=100,
    )
    np.testing.assert_allclose(ours, compare(a, b, method), atol=1e-5)


def test_compare_vectors_drops_shared_nans_like_rsatoolbox():
    rng = np.random.default_rng(3)
    a = _random_rdms(rng, 2, 10, ["l1", "l2"])
    b = _random_rdms(rng, 2, 10, ["r1", "r2"], key="roi")
    a.dissimilarities[:, [3, 7]] = np.nan
    b.dissimilarities[:, [3, 7]] = np.nan
    for method in ("corr", "spearman"):
        np.testing.assert_allclose(
            rsa.compare_vectors(a.dissimilarities, b.dissimilarities, method),
            compare(a, b, method), atol=1e-12,
        )
    b.dissimilarities[0, 5] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        rsa.compare_vectors(a.dissimilarities, b.dissimilarities)


@pytest.mark.parametrize("method", METHODS)
def test_compare_table_aligns_by_id_and_matches_rsatoolbox(method):
    rng = np.random.default_rng(4)
    layers = _random_rdms(rng, 3, 12, ["conv1", "layer1", "layer2"])
    s1 = shuffled_rdms(_random_rdms(rng, 2, 12, ["LHLOC", "LHPPA"], key="roi", subject="CSI1"), 5)
    s2 = shuffled_rdms(_random_rdms(rng, 2, 12, ["LHLOC", "LHPPA"], key="roi", subject="CSI2"), 6)
    table = rsa.compare_table(shuffled_rdms(layers, 7), [s1, s2], methods=method)
    assert list(table.columns) == ["subject", "roi", "layer", "method", "value"]
    assert len(table) == 2 * 2 * 3
    for subj in (s1, s2):
        # reference: rsatoolbox after putting the data in the layers' order by hand
        ref = compare(layers, rdms_in_order(subj, layers.pattern_descriptors["id"]), method)
        rows = table[table["subject"] == subj.rdm_descriptors["subject"][0]]
        for j, roi in enumerate(subj.rdm_descriptors["roi"]):
            for i, layer in enumerate(layers.rdm_descriptors["layer"]):
                got = rows[(rows["roi"] == roi) & (rows["layer"] == layer)]
                assert got["value"].item() == pytest.approx(ref[i, j], abs=1e-10)
    # without alignment the positional comparison would differ
    assert not np.allclose(
        compare(layers, s1, "corr"), compare(layers, rdms_in_order(s1, _ids(12)), "corr")
    )


def test_compare_rdms_refuses_different_id_sets():
    rng = np.random.default_rng(5)
    a = _random_rdms(rng, 1, 8, ["x"])
    b = _random_rdms(rng, 1, 8, ["y"], key="roi")
    b.pattern_descriptors["id"] = _ids(7) + ["other.jpg"]
    with pytest.raises(rsa.PatternMismatchError, match="ids differ"):
        rsa.compare_rdms(a, b)
    with pytest.raises(rsa.PatternMismatchError, match="ids differ"):
        rsa.compare_table(a, b)
    b.pattern_descriptors["id"] = _ids(7) + [_ids(7)[0]]
    with pytest.raises(rsa.PatternMismatchError, match="not unique"):
        rsa.compare_rdms(a, b)
    del b.pattern_descriptors["id"]
    with pytest.raises(rsa.PatternMismatchError, match="no pattern descriptor"):
        rsa.align_rdms(a, b)


def test_reorder_patterns_matches_rsatoolbox_reorder():
    rng = np.random.default_rng(6)
    a = _random_rdms(rng, 2, 9, ["x", "y"])
    target = list(np.random.default_rng(1).permutation(_ids(9)))
    ours = rsa.reorder_patterns(a, target)
    ref = rdms_in_order(a, target)
    np.testing.assert_array_equal(ours.dissimilarities, ref.dissimilarities)
    assert list(ours.pattern_descriptors["id"]) == target
    assert rsa.reorder_patterns(a, _ids(9)) is a


def test_concat_and_joint_rdms_align_subjects():
    rng = np.random.default_rng(7)
    s1 = _random_rdms(rng, 2, 8, ["LOC", "PPA"], key="roi", subject="CSI1")
    s2 = shuffled_rdms(_random_rdms(rng, 2, 8, ["LOC", "PPA"], key="roi", subject="CSI2"), 3)
    cat = rsa.concat_rdms([s1, s2])
    assert cat.rdm_descriptors["subject"] == ["CSI1", "CSI1", "CSI2", "CSI2"]
    joint = rsa.calc_joint_rdms([s1, s2])
    s2_in_s1 = rdms_in_order(s2, _ids(8))
    np.testing.assert_allclose(
        joint.dissimilarities, (s1.dissimilarities + s2_in_s1.dissimilarities) / 2, atol=1e-15
    )
    assert joint.rdm_descriptors["subject"] == ["joint", "joint"]
    assert joint.rdm_descriptors["roi"] == ["LOC", "PPA"]


# ------------------------------------------------------------------ RDMs from data


def test_calc_rdms_from_patterns_matches_calc_rdm(monkeypatch):
    rng = np.random.default_rng(8)
    x = rng.standard_normal((11, 30))
    ref = calc_rdm(Dataset(x), method="correlation").dissimilarities
    monkeypatch.setattr(rsa_rdms, "GRAM_BLOCK_BYTES", 30 * 8 * 4)  # 4-row blocks
    ours = rsa.calc_rdms_from_patterns({"a": x}, _ids(11))
    np.testing.assert_allclose(ours.dissimilarities, ref, atol=1e-12)
    euc = rsa.calc_rdms_from_patterns({"a": x}, _ids(11), method="euclidean")
    np.testing.assert_allclose(
        euc.dissimilarities, calc_rdm(Dataset(x), method="euclidean").dissimilarities
    )
    assert euc.pattern_descriptors["id"] == _ids(11)
    with pytest.raises(ValueError, match="zero variance"):
        rsa.calc_rdms_from_patterns({"a": np.ones((3, 4))}, _ids(3))


def test_calc_rdms_from_model_hooks_fx_and_manual_agree():
    torch.manual_seed(0)
    model = EmotionCNN(n_classes=3)
    x = torch.randn(5, 1, 8, 8, 6)
    layers = ["conv1", "block1", "pool"]
    hooks = rsa.calc_rdms_from_model(model, x, _ids(5), layers, batch_size=2)
    fx = rsa.calc_rdms_from_model(model, x, _ids(5), layers, backend="fx")
    np.testing.assert_allclose(hooks.dissimilarities, fx.dissimilarities, atol=1e-6)
    assert model.training  # the training flag is restored
    model.eval()
    with torch.no_grad():
        manual = {"conv1": model.conv1(x)}
        manual["block1"] = model.block1(manual["conv1"])
        manual["pool"] = model.features(x)
    for k, name in enumerate(layers):
        acts = manual[name].reshape(5, -1).double().numpy()
        ref = calc_rdm(Dataset(acts), method="correlation")
        np.testing.assert_allclose(hooks.dissimilarities[k], ref.dissimilarities[0], atol=1e-5)
    assert hooks.rdm_descriptors["layer"] == layers
    with pytest.raises(ValueError, match="no modules"):
        extract_activations(model, x, ["nope"])


def test_calc_roi_rdms_nifti_and_array_agree_with_manual_masking():
    rng = np.random.default_rng(9)
    data = rng.standard_normal((6, 5, 4, 7))  # X, Y, Z, n_patterns
    masks = {"A": np.zeros((6, 5, 4), bool), "B": np.zeros((6, 5, 4), bool)}
    masks["A"][:3] = True
    masks["B"][3:, 2:] = True
    img = nib.Nifti1Image(data, np.eye(4))
    from_img = rsa.calc_roi_rdms(img, masks, _ids(7), rdm_descriptors={"subject": "CSI1"})
    mask_img = nib.Nifti1Image(masks["B"].astype(np.uint8), np.eye(4))
    from_arr = rsa.calc_roi_rdms(np.moveaxis(data, -1, 0), {"A": masks["A"], "B": mask_img},
                                 _ids(7))
    for k, name in enumerate(["A", "B"]):
        ref = calc_rdm(Dataset(data[masks[name]].T), method="correlation").dissimilarities[0]
        np.testing.assert_allclose(from_img.dissimilarities[k], ref, atol=1e-10)
        np.testing.assert_allclose(from_arr.dissimilarities[k], ref, atol=1e-10)
    assert from_img.rdm_descriptors == {"roi": ["A", "B"], "subject": ["CSI1"] * 2,
                                        "index": [0, 1]}


# ------------------------------------------------------------------ bootstrap


@pytest.mark.parametrize("method", METHODS)
def test_bootstrap_samples_equal_rsatoolbox_resampling(method):
    rng = np.random.default_rng(10)
    layers = _random_rdms(rng, 2, 10, ["l1", "l2"], ties=True)
    rois = _random_rdms(rng, 3, 10, ["r1", "r2", "r3"], key="roi", ties=True, subject="S1")
    samples = rng.integers(0, 10, size=(6, 10))
    samples[0] = [4] * 8 + [5, 5]  # < 3 distinct patterns: NaN, as rsatoolbox
    boot = rsa.bootstrap_compare(layers, shuffled_rdms(rois, 1), method, pattern_samples=samples,
                                 dtype=np.float64)
    np.testing.assert_allclose(boot.point, compare(layers, rois, method), atol=1e-10)
    assert np.isnan(boot.samples[0]).all()
    for b in range(1, len(samples)):
        ref = compare(layers.subsample_pattern("index", samples[b]),
                      rois.subsample_pattern("index", samples[b]), method)
        np.testing.assert_allclose(boot.samples[b], ref, atol=1e-10)


def test_bootstrap_se_matches_eval_bootstrap_pattern():
    rng = np.random.default_rng(11)
    n, n_boot = 25, 150
    layers = _random_rdms(rng, 2, n, ["l1", "l2"])
    shared = rng.random(n * (n - 1) // 2)
    layers.dissimilarities[1] = shared + 0.5 * rng.random(len(shared))
    roi = RDMs(shared[None] + rng.random((1, len(shared))), rdm_descriptors={"roi": ["r"]},
               pattern_descriptors={"id": _ids(n)})
    models = [ModelFixed(name, layers.subset("layer", name)) for name in ["l1", "l2"]]
    np.random.seed(3)  # noqa: NPY002 - rsatoolbox draws from the legacy global generator
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = eval_bootstrap_pattern(models, roi, method="corr", N=n_boot, boot_noise_ceil=False)
    # the same draws, replayed: identical bootstrap distribution
    np.random.seed(3)  # noqa: NPY002
    draws = np.stack([np.random.randint(0, n, size=n) for _ in range(n_boot)])  # noqa: NPY002
    same = rsa.bootstrap_compare(layers, roi, pattern_samples=draws, dtype=np.float64)
    np.testing.assert_allclose(same.get_se()[:, 0], ref.get_sem(), rtol=1e-8)
    np.testing.assert_allclose(same.get_means()[:, 0], ref.get_means(), atol=1e-10)
    for level in (0.95, 0.8):  # rsatoolbox's default interval: t on n - 1 dof
        for ours_ci, ref_ci in zip(same.get_ci(level), ref.get_ci(level), strict=True):
            np.testing.assert_allclose(ours_ci[:, 0], ref_ci, rtol=1e-8)
    # the percentile interval of the same samples (rsatoolbox's "bootstrap" ci pads the
    # samples with -inf and +inf before taking quantiles, a slightly wider convention)
    lo, hi = same.get_ci(0.9, "bootstrap")
    ref_samples = ref.evaluations
    np.testing.assert_allclose(lo[:, 0], np.percentile(ref_samples, 5, axis=0), rtol=1e-8)
    np.testing.assert_allclose(hi[:, 0], np.percentile(ref_samples, 95, axis=0), rtol=1e-8)
    # independent draws (our generator, float32): SE within 25 %
    ours = rsa.bootstrap_compare(layers, roi, n_bootstrap=n_boot, seed=0)
    ratio = ours.get_se()[:, 0] / ref.get_sem()
    assert np.all(np.abs(ratio - 1) < 0.25), ratio
    np.testing.assert_allclose(ours.point, compare(layers, roi, "corr"), atol=1e-12)


def test_bootstrap_aggregate_and_frame():
    rng = np.random.default_rng(12)
    layers = _random_rdms(rng, 2, 9, ["l1", "l2"])
    rois = _random_rdms(rng, 3, 9, ["LHLOC", "RHOPA", "LHPPA"], key="roi", subject="CSI1")
    boot = rsa.bootstrap_compare(layers, rois, n_bootstrap=20, seed=1)
    agg = boot.aggregate({"LHLOC": "Mid", "RHOPA": "Mid", "LHPPA": "High"})
    assert agg.data_labels.to_dict("list") == {"subject": ["CSI1", "CSI1"], "roi": ["Mid", "High"]}
    np.testing.assert_allclose(agg.samples[:, :, 0], boot.samples[:, :, :2].mean(axis=2))
    np.testing.assert_allclose(agg.point[:, 1], boot.point[:, 2])
    frame = boot.to_frame(level=0.9)
    assert len(frame) == 6
    assert (frame["ci_low"] <= frame["ci_high"]).all()
    lo, _hi = boot.get_ci(0.9)
    assert frame["ci_low"].iloc[1] == lo[1, 0]
    lo, _hi = boot.get_ci(0.9, "bootstrap")
    assert boot.to_frame(0.9, "bootstrap")["ci_low"].iloc[1] == lo[1, 0]
    with pytest.raises(ValueError, match="test_type"):
        boot.get_ci(0.9, "percentile")


def test_zero_and_pair_tests_match_rsatoolbox_with_fdr():
    rng = np.random.default_rng(13)
    layers = _random_rdms(rng, 3, 12, ["l1", "l2", "l3"])
    rois = _random_rdms(rng, 2, 12, ["r1", "r2"], key="roi", subject="S")
    rois.dissimilarities[0] = layers.dissimilarities[1] + 0.3 * rng.random(66)
    boot = rsa.bootstrap_compare(layers, rois, n_bootstrap=60, seed=2, dtype=np.float64)
    zero = rsa.calc_zero_tests(boot)
    pair = rsa.calc_pair_tests(boot)
    dof = boot.n_patterns - 1
    for r in range(2):
        ev = boot.samples[:, :, r]
        corr = boot.n_patterns / dof  # rsatoolbox's Result corrects variances by n/(n-1)
        p0 = t_test_0(ev, ev.var(axis=0, ddof=1) * corr, dof)
        np.testing.assert_allclose(zero.loc[zero["roi"] == f"r{r + 1}", "p"], p0, atol=1e-12)
        c = np.cov(ev.T)
        ia, ib = np.triu_indices(3, 1)
        diff_var = c[ia, ia] + c[ib, ib] - 2 * c[ia, ib]
        pp = t_tests(ev, diff_var * corr, dof)[ia, ib]
        np.testing.assert_allclose(pair.loc[pair["roi"] == f"r{r + 1}", "p"], pp, atol=1e-12)
        boot_pair = rsa.calc_pair_tests(boot, test_type="bootstrap")
        np.testing.assert_allclose(
            boot_pair.loc[boot_pair["roi"] == f"r{r + 1}", "p"], bootstrap_pair_tests(ev)[ia, ib]
        )
    np.testing.assert_allclose(zero["q"], scipy.stats.false_discovery_control(zero["p"]))
    assert zero.loc[(zero["roi"] == "r1") & (zero["layer"] == "l2"), "significant"].item()
    bz = rsa.calc_zero_tests(boot, test_type="bootstrap", fdr_by="roi")
    np.testing.assert_allclose(
        bz["p"], (((boot.samples <= 0).sum(axis=0) + 1) / 60).T.reshape(-1)
    )


def test_zero_tests_and_table_use_each_cells_own_samples():
    """A NaN bootstrap sample in one cell (a resample without a valid pair there) changes
    neither the other cells' tests nor their standard errors: one rule for both."""
    rng = np.random.default_rng(17)
    layers = _random_rdms(rng, 2, 10, ["l1", "l2"])
    rois = _random_rdms(rng, 2, 10, ["r1", "r2"], key="roi", subject="S")
    boot = rsa.bootstrap_compare(layers, rois, n_bootstrap=40, seed=1, dtype=np.float64)
    before = rsa.calc_zero_tests(boot)
    boot.samples[:5, 0, 0] = np.nan  # l1 x r1 undefined in 5 resamples
    after = rsa.calc_zero_tests(boot)
    other = ~((after["layer"] == "l1") & (after["roi"] == "r1"))
    np.testing.assert_allclose(after.loc[other, "t"], before.loc[other, "t"], atol=1e-12)
    ok = boot.samples[5:, 0, 0]
    t_ref = ok.mean() / (ok.std(ddof=1) * np.sqrt(boot.n_patterns / (boot.n_patterns - 1)))
    assert after.loc[~other, "t"].item() == pytest.approx(t_ref)
    # the t statistic is the table's estimate over the table's standard error
    se = boot.get_se()
    np.testing.assert_allclose(after["t"], (boot.get_means() / se).T.reshape(-1))


# ------------------------------------------------------------------ noise ceiling, Mantel


@pytest.mark.parametrize("method", ["corr", "cosine", "spearman", "tau-a"])
def test_noise_ceiling_matches_boot_noise_ceiling(method):
    rng = np.random.default_rng(14)
    base = rng.random((2, 45))
    subjects = []
    for s, name in enumerate(["CSI1", "CSI2", "CSI3"]):
        v = base + 0.8 * rng.random((2, 45))
        r = RDMs(v, rdm_descriptors={"roi": ["LOC", "PPA"], "subject": [name] * 2},
                 pattern_descriptors={"id": _ids(10)})
        subjects.append(shuffled_rdms(r, s))
    table = rsa.calc_noise_ceiling(subjects, method)
    for roi in ["LOC", "PPA"]:
        aligned = [rdms_in_order(r, _ids(10)).subset("roi", roi) for r in subjects]
        ref_rdms = RDMs(np.concatenate([a.dissimilarities for a in aligned]),
                        rdm_descriptors={"subject": ["CSI1", "CSI2", "CSI3"]})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            lower, upper = boot_noise_ceiling(ref_rdms, method=method, rdm_descriptor="subject")
        row = table[table["roi"] == roi]
        assert row["lower"].item() == pytest.approx(lower, abs=1e-10)
        assert row["upper"].item() == pytest.approx(upper, abs=1e-10)
        assert row["lower"].item() < row["upper"].item()


@pytest.mark.parametrize("method", ["corr", "cosine", "spearman", "rho-a"])
def test_noise_ceiling_with_blanked_pairs_matches_boot_noise_ceiling(method):
    """Pairs across blocks blanked (NaN), as chapter 04 does: the same as rsatoolbox."""
    rng = np.random.default_rng(21)
    base = rng.random(45)
    blocks = list("aaaabbbccc")
    rdms = []
    for name in ["s1", "s2", "s3"]:
        r = RDMs((base + 0.7 * rng.random(45))[None], rdm_descriptors={"roi": ["LOC"],
                 "subject": [name]}, pattern_descriptors={"id": _ids(10), "block": blocks})
        rdms.append(rsa.restrict_pairs(r))
    assert np.isnan(rdms[0].dissimilarities).any()
    table = rsa.calc_noise_ceiling(rdms, method)
    ref_rdms = RDMs(np.concatenate([r.dissimilarities for r in rdms]),
                    rdm_descriptors={"subject": ["s1", "s2", "s3"]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lower, upper = boot_noise_ceiling(ref_rdms, method=method, rdm_descriptor="subject")
    assert np.isfinite([lower, upper]).all()
    assert table["lower"].item() == pytest.approx(lower, abs=1e-10)
    assert table["upper"].item() == pytest.approx(upper, abs=1e-10)


def test_noise_ceiling_of_one_subject_is_undefined():
    r = RDMs(np.random.default_rng(3).random((1, 45)), rdm_descriptors={"roi": ["LOC"],
             "subject": ["s1"]}, pattern_descriptors={"id": _ids(10)})
    row = rsa.calc_noise_ceiling([r], "corr").iloc[0]
    assert np.isnan(row["lower"]) and np.isnan(row["upper"]) and row["n_subjects"] == 1


def test_mantel_exact_matches_explicit_enumeration():
    rng = np.random.default_rng(15)
    classes = ["FEAR", "HAPPINESS", "LOVE", "SADNESS", "ANGERRAGE"]
    pats = rng.standard_normal((5, 20))
    m1 = squareform(1 - np.corrcoef(pats), checks=False)
    m2 = squareform(1 - np.corrcoef(pats + 1.2 * rng.standard_normal((5, 20))), checks=False)
    r1 = RDMs(m1[None], pattern_descriptors={"id": classes})
    r2 = shuffled_rdms(RDMs(m2[None], pattern_descriptors={"id": classes}), 4)
    res = rsa.calc_mantel(r1, r2)
    assert res.exact and len(res.null_distribution) == 120
    # explicit enumeration on square matrices
    sq1, sq2 = squareform(m1), squareform(m2)
    obs = scipy.stats.pearsonr(squareform(sq1, checks=False), squareform(sq2, checks=False))[0]
    null = []
    for p in itertools.permutations(range(5)):
        perm = sq2[np.ix_(p, p)]
        null.append(scipy.stats.pearsonr(squareform(sq1, checks=False),
                                         squareform(perm, checks=False))[0])
    null = np.array(null)
    assert res.statistic == pytest.approx(obs, abs=1e-12)
    np.testing.assert_allclose(np.sort(res.null_distribution), np.sort(null), atol=1e-12)
    assert res.p_value == pytest.approx(np.mean(null >= obs - 1e-12), abs=1e-15)
    two = rsa.calc_mantel(r1, r2, alternative="two-sided")
    assert two.p_value == pytest.approx(
        min(1, 2 * min(np.mean(null >= obs - 1e-12), np.mean(null <= obs + 1e-12)))
    )


def test_mantel_random_permutations_approach_exact_p():
    rng = np.random.default_rng(16)
    pats = rng.standard_normal((6, 10))
    r1 = RDMs(squareform(1 - np.corrcoef(pats), checks=False)[None],
              pattern_descriptors={"id": _ids(6)})
    noisy = pats + 1.5 * rng.standard_normal((6, 10))
    r2 = RDMs(squareform(1 - np.corrcoef(noisy), checks=False)[None],
              pattern_descriptors={"id": _ids(6)})
    exact = rsa.calc_mantel(r1, r2, n_permutations=720)
    approx = rsa.calc_mantel(r1, r2, n_permutations=719, seed=0)
    assert exact.exact and not approx.exact
    assert approx.p_value == pytest.approx(exact.p_value, abs=0.06)


# ------------------------------------------------------------------ planted truth


def test_planted_correspondence_is_recovered():
    sim = simulate_bold5000_rdms(50, seed=0)
    joint = rsa.calc_joint_rdms(list(sim.rois.values()))
    table = rsa.compare_table(sim.layers, joint)
    best = table.loc[table.groupby("roi")["value"].idxmax()].set_index("roi")["layer"]
    assert best.to_dict() == sim.truth["best_layer"]
    per_subject = rsa.compare_table(sim.layers, list(sim.rois.values()))
    assert set(per_subject["subject"]) == {"CSI1", "CSI2", "CSI3"}
    nc = rsa.calc_noise_ceiling(list(sim.rois.values()))
    assert (nc["upper"] > nc["lower"]).all() and (nc["lower"] > 0).all()


def test_null_data_show_no_correspondence():
    sim = simulate_bold5000_rdms(50, seed=1, null=True)
    joint = rsa.calc_joint_rdms(list(sim.rois.values()))
    boot = rsa.bootstrap_compare(sim.layers, joint, n_bootstrap=100, seed=0)
    zero = rsa.calc_zero_tests(boot)
    assert not zero["significant"].any()
    assert zero["value"].abs().max() < 0.2


# ------------------------------------------------------------------ result tables


def test_collect_results_one_row_per_comparison():
    sim = simulate_bold5000_rdms(20, seed=0, subjects=("CSI1", "CSI2"))
    rois = list(sim.rois.values())
    joint = rsa.calc_joint_rdms(rois)
    table = rsa.compare_table(sim.layers, [*rois, joint], ("corr", "spearman"))
    boot = rsa.bootstrap_compare(sim.layers, [*rois, joint], n_bootstrap=30, seed=0)
    zero = rsa.calc_zero_tests(boot)
    nc = rsa.calc_noise_ceiling(rois)
    out = rsa.collect_results(table, zero, nc)
    assert len(out) == 3 * 10 * 5
    assert list(out.columns[:5]) == ["subject", "roi", "layer", "corr", "spearman"]
    assert {"ci_low", "ci_high", "p", "q", "significant", "nc_lower", "nc_upper"} <= set(out)
    np.testing.assert_allclose(out["corr"], zero["value"], atol=1e-6)  # same rows and order
    assert out.loc[out["subject"] == "joint", "nc_upper"].isna().all()
    first = out[(out["subject"] == "CSI1") & (out["roi"] == "LHLOC")]["nc_lower"]
    assert (first == nc.set_index("roi").loc["LHLOC", "lower"]).all()
    assert rsa.collect_results(table).shape == (150, 5)


# ------------------------------------------------------------------ held-out patterns (ch. 04)


def _predictions():
    """Held-out predictions (two models) of 2 subjects in 2 folds."""
    rows = []
    sample = 0
    for fold, times in (("run-1", [0, 2, 4, 12, 14]), ("run-2", [100, 102, 110])):
        for subject in ("01", "02"):
            for t in times:
                label = "FEAR" if t in (0, 2, 4, 100, 102) else "LOVE"
                for model in ("cnn", "linear"):
                    rows.append({"fold": fold, "sample": sample, "subject": subject,
                                 "movie_time": float(t), "label": label, "model": model})
                sample += 1
    return pd.DataFrame(rows)


def test_define_patterns_moments_are_shared_across_subjects():
    pred = _predictions()
    pat = define_patterns(pred, kind="moment", moment_s=10)
    assert len(pat) == 16 and set(pat["sample"]) == set(pred["sample"])
    by_subject = pat.groupby("subject")["id"].apply(lambda s: list(pd.unique(s)))
    assert by_subject["01"] == by_subject["02"] == [
        "run-1 FEAR @00000s", "run-1 LOVE @00010s", "run-2 FEAR @00100s", "run-2 LOVE @00110s"]
    assert (pat["block"] == pat["fold"]).all()
    pooled = define_patterns(pred, kind="class", within_fold=False, pool_subjects=True)
    assert set(pooled["subject"]) == {"all"} and set(pooled["id"]) == {"FEAR", "LOVE"}
    assert set(pooled["block"]) == {"all"}
    # an id that only one subject has is dropped (common=True), kept otherwise
    drop = pred[~((pred["subject"] == "02") & (pred["movie_time"] == 110))]
    assert "run-2 LOVE @00110s" not in set(define_patterns(drop)["id"])
    assert "run-2 LOVE @00110s" in set(define_patterns(drop, common=False)["id"])
    with pytest.raises(ValueError, match="kind"):
        define_patterns(pred, kind="volume")


def test_average_patterns_equals_groupby_mean_and_centring_within_blocks():
    rng = np.random.default_rng(20)
    x = rng.standard_normal((9, 3, 2))
    groups = np.array(list("bbaacccab"))
    ids, means = rsa.average_patterns(x, groups)
    assert list(ids) == ["b", "a", "c"] and means.shape == (3, 3, 2)
    ref = pd.DataFrame(x.reshape(9, -1)).groupby(groups).mean().loc[["b", "a", "c"]]
    np.testing.assert_allclose(means.reshape(3, -1), ref.to_numpy(), atol=1e-6)
    centred = rsa.center_patterns(means)
    np.testing.assert_allclose(centred.reshape(3, -1), ref.to_numpy() - ref.to_numpy().mean(0),
                               atol=1e-6)
    by_block = rsa.center_patterns(x, list("aaabbbbcc")).reshape(9, -1)
    flat = x.reshape(9, -1)
    for rows in (slice(0, 3), slice(3, 7), slice(7, 9)):
        np.testing.assert_allclose(by_block[rows], flat[rows] - flat[rows].mean(0), atol=1e-6)
    with pytest.raises(ValueError, match="blocks"):
        rsa.center_patterns(x, ["a"])


def test_restrict_pairs_blanks_pairs_across_blocks_like_rsatoolbox_nans():
    rng = np.random.default_rng(21)
    a = _random_rdms(rng, 2, 8, ["l1", "l2"])
    b = _random_rdms(rng, 3, 8, ["r1", "r2", "r3"], key="roi")
    for r in (a, b):
        r.pattern_descriptors["block"] = list("xxxyyyzz")
    ra, rb = rsa.restrict_pairs(a), rsa.restrict_pairs(b)
    sq = squareform(np.isnan(ra.dissimilarities[0]).astype(float))
    blocks = np.array(list("xxxyyyzz"))
    np.testing.assert_array_equal(sq > 0, blocks[:, None] != blocks[None, :])
    assert not np.isnan(a.dissimilarities).any()  # the input is untouched
    np.testing.assert_allclose(rsa.compare_vectors(ra.dissimilarities, rb.dissimilarities),
                               compare(ra, rb, "corr"), atol=1e-12)
    # the bootstrap and the noise ceiling use the pairs within blocks only
    boot = rsa.bootstrap_compare(ra, rb, "corr", 30, seed=0)
    for k in range(5):
        idx = _resampled_pairs(boot.pattern_samples[k], 8)
        keep = ~np.isnan(ra.dissimilarities[0, idx])
        ref = rsa.compare_vectors(a.dissimilarities[:, idx][:, keep],
                                  b.dissimilarities[:, idx][:, keep])
        np.testing.assert_allclose(boot.samples[k], ref, atol=1e-10)
    one = _random_rdms(rng, 1, 8, ["x"])
    one.pattern_descriptors["block"] = ["all"] * 8
    assert rsa.restrict_pairs(one) is one


def test_noise_ceiling_with_blanked_pairs_uses_the_pairs_within_blocks():
    rng = np.random.default_rng(22)
    base = rng.random(28)
    subjects = []
    for s in ("01", "02", "03"):
        r = RDMs((base + 0.5 * rng.random(28))[None],
                 rdm_descriptors={"roi": ["A"], "subject": [s]},
                 pattern_descriptors={"id": _ids(8), "block": list("xxxxyyyy")})
        subjects.append(rsa.restrict_pairs(r))
    keep = ~np.isnan(subjects[0].dissimilarities[0])
    dropped = [RDMs(r.dissimilarities[:, keep], rdm_descriptors=r.rdm_descriptors)
               for r in subjects]
    ours = rsa.calc_noise_ceiling(subjects)
    ref_rdms = RDMs(np.concatenate([d.dissimilarities for d in dropped]),
                    rdm_descriptors={"subject": ["01", "02", "03"]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lower, upper = boot_noise_ceiling(ref_rdms, method="corr", rdm_descriptor="subject")
    assert ours["lower"].item() == pytest.approx(lower, abs=1e-10)
    assert ours["upper"].item() == pytest.approx(upper, abs=1e-10)


def test_concat_bootstraps_equals_one_bootstrap_of_all_data():
    sim = simulate_bold5000_rdms(14, seed=3, subjects=("CSI1", "CSI2"))
    rois = list(sim.rois.values())
    together = rsa.bootstrap_compare(sim.layers, rois, n_bootstrap=40, seed=5)
    parts = rsa.concat_bootstraps(
        [rsa.bootstrap_compare(sim.layers, r, n_bootstrap=40, seed=5) for r in rois])
    np.testing.assert_allclose(parts.samples, together.samples, atol=1e-6)
    np.testing.assert_allclose(parts.point, together.point, atol=1e-6)  # float32 RDMs
    pd.testing.assert_frame_equal(parts.data_labels, together.data_labels)
    assert parts.pattern_samples is not None
    other = rsa.bootstrap_compare(sim.layers, rois[0], n_bootstrap=40, seed=6)
    assert rsa.concat_bootstraps([parts, other]).pattern_samples is None
    with pytest.raises(ValueError, match="differ"):
        rsa.concat_bootstraps([parts, rsa.bootstrap_compare(sim.layers, rois[0], n_bootstrap=7)])


def test_group_contrast_is_the_paired_difference_of_group_means():
    sim = simulate_bold5000_rdms(14, seed=4, subjects=("CSI1", "CSI2"))
    boot = rsa.bootstrap_compare(sim.layers, list(sim.rois.values()), n_bootstrap=60, seed=0)
    groups = {r: ("early" if "EarlyVis" in r else "rest") for r in sim.truth["best_layer"]}
    agg = boot.aggregate(groups)
    table = rsa.calc_group_contrast(agg, "early", "rest", fdr_by="subject")
    assert len(table) == 2 * len(boot.model_names)
    labels = boot.data_labels
    for subject in ("CSI1", "CSI2"):
        sel = (labels["subject"] == subject).to_numpy()
        early = sel & labels["roi"].str.contains("EarlyVis").to_numpy()
        rest = sel & ~labels["roi"].str.contains("EarlyVis").to_numpy()
        diff = boot.samples[:, :, early].mean(2) - boot.samples[:, :, rest].mean(2)
        point = boot.point[:, early].mean(1) - boot.point[:, rest].mean(1)
        rows = table[table["subject"] == subject]
        np.testing.assert_allclose(rows["diff"], point, atol=1e-12)
        se = np.sqrt(diff.var(axis=0, ddof=1) * 14 / 13)
        np.testing.assert_allclose(rows["se"], se, atol=1e-12)
        t = diff.mean(0) / se
        np.testing.assert_allclose(rows["p"], 2 * scipy.stats.t.sf(np.abs(t), 13), atol=1e-12)
        half = se * scipy.stats.t.ppf(0.975, 13)  # the t interval of the test
        np.testing.assert_allclose(rows["ci_low"], diff.mean(0) - half, atol=1e-12)
        np.testing.assert_allclose(rows["ci_high"], diff.mean(0) + half, atol=1e-12)
    pct = rsa.calc_group_contrast(agg, "early", "rest", test_type="bootstrap")
    one = (labels["subject"] == "CSI1").to_numpy()
    is_early = labels["roi"].str.contains("EarlyVis").to_numpy()
    diff = boot.samples[:, :, one & is_early].mean(2) - boot.samples[:, :, one & ~is_early].mean(2)
    np.testing.assert_allclose(pct[pct["subject"] == "CSI1"]["ci_low"],
                               np.percentile(diff, 2.5, axis=0))
    assert (table["q"] >= table["p"] - 1e-15).all()
    assert set(table["layer"]) == set(boot.model_names)
    with pytest.raises(ValueError, match="exactly one"):
        rsa.calc_group_contrast(agg, "early", "nope")


def _tiny_held_out(rng):
    """Volumes of 2 subjects, 2 folds, 3 moments x 2 volumes per fold and subject."""
    rows, vols = [], []
    for fold, t0 in (("run-1", 0), ("run-2", 100)):
        for subject in ("01", "02"):
            for k, t in enumerate([t0, t0 + 2, t0 + 10, t0 + 12, t0 + 20, t0 + 22]):
                rows.append({"fold": fold, "sample": len(rows), "subject": subject,
                             "movie_time": float(t), "label": "FEAR" if k < 4 else "LOVE",
                             "model": "cnn"})
                vols.append(rng.standard_normal((8, 8, 6)).astype(np.float32))
    return pd.DataFrame(rows), np.stack(vols)


def test_calc_brain_rdms_match_manual_means_and_rsatoolbox():
    rng = np.random.default_rng(23)
    pred, volumes = _tiny_held_out(rng)
    pat = define_patterns(pred, moment_s=10)
    masks = {"A": np.zeros((8, 8, 6), bool), "B": np.zeros((8, 8, 6), bool)}
    masks["A"][:4] = True
    masks["B"][4:, :5] = True
    out = calc_brain_rdms(volumes, pat, masks)
    assert [r.descriptors.get("subject") or r.rdm_descriptors["subject"][0] for r in out] == [
        "01", "02"]
    rows = pat[pat["subject"] == "02"]
    ids = list(pd.unique(rows["id"]))
    means = np.stack([volumes[rows.loc[rows["id"] == i, "sample"]].mean(0) for i in ids])
    blocks = np.array([i.split()[0] for i in ids])
    for b in set(blocks):
        means[blocks == b] -= means[blocks == b].mean(0)  # centred within each fold
    for k, name in enumerate(["A", "B"]):
        ref = calc_rdm(Dataset(means[:, masks[name]].astype(np.float64)),
                       method="correlation").dissimilarities[0]
        i, j = np.triu_indices(len(ids), 1)
        ref[blocks[i] != blocks[j]] = np.nan
        np.testing.assert_allclose(out[1].dissimilarities[k], ref, atol=1e-6)
    assert out[1].pattern_descriptors["id"] == ids
    plain = calc_brain_rdms(volumes, pat, masks, within_blocks=False, center=False)
    assert not np.isnan(plain[0].dissimilarities).any()
    euclid = calc_brain_rdms(volumes, pat, masks, center=False, within_blocks=False,
                                 method="euclidean")
    raw = np.stack([volumes[rows.loc[rows["id"] == i, "sample"]].mean(0) for i in ids])
    ref = calc_rdm(Dataset(raw[:, masks["A"]].astype(np.float64)), method="euclidean")
    np.testing.assert_allclose(euclid[1].dissimilarities[0], ref.dissimilarities[0], rtol=1e-5)


def test_calc_network_rdms_run_each_volume_through_its_own_fold_model():
    rng = np.random.default_rng(24)
    pred, volumes = _tiny_held_out(rng)
    torch.manual_seed(0)
    models = {"run-1": EmotionCNN(n_classes=2).eval(), "run-2": EmotionCNN(n_classes=2).eval()}
    calls = []

    def get(fold):
        calls.append(fold)
        return models[fold]

    pat = define_patterns(pred, kind="class", within_fold=False, pool_subjects=True)
    out = calc_network_rdms(volumes, pat, get, ["block1", "pool"], center=False,
                                batch_size=5)
    assert len(out) == 1 and sorted(calls) == ["run-1", "run-2"]  # each model loaded once
    feats = {}
    with torch.no_grad():
        for _, r in pat.iterrows():
            x = torch.from_numpy(volumes[r["sample"]][None, None])
            m = models[r["fold"]]
            feats.setdefault(r["id"], []).append(
                [m.block1(m.conv1(x)).reshape(-1).numpy(), m.features(x).reshape(-1).numpy()])
    ids = out[0].pattern_descriptors["id"]
    assert ids == ["FEAR", "LOVE"]
    for k in range(2):
        means = np.stack([np.mean([f[k] for f in feats[i]], axis=0) for i in ids])
        ref = 1 - np.corrcoef(means)[0, 1]
        assert out[0].dissimilarities[k, 0] == pytest.approx(ref, abs=1e-5)
    assert out[0].rdm_descriptors["layer"] == ["block1", "pool"]
    per_subject = calc_network_rdms(volumes, define_patterns(pred, moment_s=10),
                                        models, ["pool"])
    assert len(per_subject) == 2 and per_subject[0].n_cond == 6
    assert np.isnan(per_subject[0].dissimilarities).sum() == 9  # 3 x 3 pairs across folds


def test_class_rdms_never_mix_fold_networks():
    """The original analysis with one network per fold: each fold's network gives the RDM of
    its own held-out class means; the fold RDMs are averaged (units of different networks
    never are). Checked against the per-fold computation by hand."""
    rng = np.random.default_rng(25)
    pred, volumes = _tiny_held_out(rng)
    torch.manual_seed(0)
    models = {"run-1": EmotionCNN(n_classes=2).eval(), "run-2": EmotionCNN(n_classes=2).eval()}
    pat = define_patterns(pred, kind="class", within_fold=True, pool_subjects=True)
    net = average_over_blocks(calc_network_rdms(volumes, pat, models, ["pool"], center=False,
                                                within_blocks=False)[0], by="layer")
    brain = average_over_blocks(calc_brain_rdms(volumes, pat, {"all": np.ones((8, 8, 6), bool)},
                                                center=False, within_blocks=False)[0], by="roi")
    assert net.pattern_descriptors["id"] == brain.pattern_descriptors["id"] == ["FEAR", "LOVE"]
    want_net, want_brain = [], []
    with torch.no_grad():
        for fold, model in models.items():
            rows = pat[pat["fold"] == fold]
            f = {c: np.mean([model.features(torch.from_numpy(volumes[i][None, None]))
                             .reshape(-1).numpy() for i in rows.loc[rows["label"] == c,
                                                                    "sample"]], axis=0)
                 for c in ("FEAR", "LOVE")}
            want_net.append(1 - np.corrcoef(f["FEAR"], f["LOVE"])[0, 1])
            v = {c: volumes[rows.loc[rows["label"] == c, "sample"]].mean(0).ravel()
                 for c in ("FEAR", "LOVE")}
            want_brain.append(1 - np.corrcoef(v["FEAR"], v["LOVE"])[0, 1])
    assert net.dissimilarities[0, 0] == pytest.approx(np.mean(want_net), abs=1e-5)
    assert brain.dissimilarities[0, 0] == pytest.approx(np.mean(want_brain), abs=1e-6)
    assert net.rdm_descriptors["subject"] == ["all"]


def test_reduce_to_an_int_pools_large_layers_and_keeps_small_ones():
    torch.manual_seed(1)
    model = EmotionCNN(n_classes=2).eval()
    x = torch.randn(3, 1, 16, 16, 8)
    acts = extract_activations(model, x, ["conv1", "block3"], reduce=4)
    assert acts["conv1"].shape == (3, 32 * 4 * 4 * 4)
    assert acts["block3"].shape == (3, 256 * 2 * 2 * 1)  # 2 x 2 x 1 is kept, not upsampled
    with torch.no_grad():
        ref = torch.nn.functional.adaptive_avg_pool3d(model.conv1(x), 4).reshape(3, -1)
    np.testing.assert_allclose(acts["conv1"], ref.numpy(), atol=1e-6)
