"""Decoding intervals: the block jackknife against its definition, and its coverage measured
by simulation (many datasets, a binomial bound), never by one seed."""

import numpy as np
import pytest
import scipy.stats
from sklearn.metrics import roc_auc_score

from emolib.decoding import block_jackknife, difference_jackknife, summarize_decoding
from emolib.decoding.coverage import interval_coverage, simulate_held_out, true_macro_auc
from emolib.decoding.evaluate import macro_auc, time_blocks

#: A small movie: 3 run folds of 300 two-second steps, 30 selected moments per fold.
SMALL = dict(n_folds=3, run_steps=300, n_selected=30)


def _reference_macro(y, p, folds, n_classes):
    """Fold-averaged macro AUC from sklearn, fold by fold and class by class."""
    vals, weights = [], []
    for f in np.unique(folds):
        sel = folds == f
        aucs = [roc_auc_score(y[sel] == c, p[sel, c]) for c in range(n_classes)
                if 0 < (y[sel] == c).sum() < sel.sum()]
        if aucs:
            vals.append(np.mean(aucs))
            weights.append(sel.sum())
    return np.average(vals, weights=weights)


def test_block_jackknife_equals_its_definition():
    rng = np.random.default_rng(3)
    y, p, t, f = simulate_held_out(rng, signal=0.8, **SMALL)
    blocks = time_blocks(t, 60.0)
    ci = block_jackknife(y, p, blocks, 5, folds=f).set_index("metric")
    point = _reference_macro(y, p, f, 5)
    var, dof = 0.0, 0
    for fold in np.unique(f):
        ids = np.unique(blocks[f == fold])
        thetas = []
        for b in ids:
            keep = ~((f == fold) & (blocks == b))
            thetas.append(_reference_macro(y[keep], p[keep], f[keep], 5))
        thetas = np.array(thetas)
        var += (ids.size - 1) / ids.size * ((thetas - thetas.mean()) ** 2).sum()
        dof += ids.size - 1
    se = np.sqrt(var)
    q = scipy.stats.t.ppf(0.975, dof)
    row = ci.loc["macro_auc"]
    assert row["estimate"] == pytest.approx(point, abs=1e-12)
    assert row["se"] == pytest.approx(se, rel=1e-10)
    assert row["dof"] == dof
    assert row["low"] == pytest.approx(point - q * se, abs=1e-12)
    assert row["high"] == pytest.approx(point + q * se, abs=1e-12)
    # the per-class rows are fold-averaged AUCs of their class
    c0 = np.average([roc_auc_score(y[f == k] == 0, p[f == k, 0]) for k in np.unique(f)],
                    weights=[(f == k).sum() for k in np.unique(f)])
    assert ci.loc["auc[0]", "estimate"] == pytest.approx(c0, abs=1e-12)


def test_block_jackknife_without_two_blocks_has_no_interval():
    rng = np.random.default_rng(4)
    y, p, t, f = simulate_held_out(rng, **SMALL)
    ci = block_jackknife(y, p, np.zeros(len(y), dtype=int), 5, folds=f)
    assert ci["low"].isna().all() and ci["high"].isna().all()
    assert np.isfinite(ci["estimate"]).all()


@pytest.mark.parametrize("signal", [0.0, 1.0])
def test_jackknife_intervals_cover_at_the_nominal_rate(signal):
    """200 simulated decodings (episodic labels, outputs AR(0.9) along time): the number of
    95 % intervals containing the true AUC is not significantly different from 95 % (two-sided
    binomial test at the 0.1 % level, so that this fails by chance once in a thousand runs).
    The benchmark (``bench_interval_coverage.py``) runs more datasets and settings."""
    n = 200
    table = interval_coverage(n, (60.0,), methods=("jackknife",), seed=11, phi=0.9,
                              signal=signal, progress=False, **SMALL)
    row = table.iloc[0]
    assert row["truth"] == pytest.approx(true_macro_auc(signal), abs=1e-12)
    p = scipy.stats.binomtest(int(row["covered"]), n, 0.95).pvalue
    assert p > 1e-3, table


def test_true_auc_is_the_estimators_mean():
    """The Monte Carlo truth equals the mean of the fold-averaged estimate over datasets."""
    rng = np.random.default_rng(5)
    est = []
    for _ in range(300):
        y, p, _t, f = simulate_held_out(rng, signal=1.0, **SMALL)
        est.append(macro_auc(y, p, 5, f))
    se = np.std(est, ddof=1) / np.sqrt(len(est))
    assert abs(np.mean(est) - true_macro_auc(1.0)) < 4 * se + 2e-3


def test_summarize_decoding_refuses_an_unknown_interval(tmp_path):
    with pytest.raises(ValueError, match="interval"):
        summarize_decoding(None, interval="bca")


def test_difference_jackknife_equals_its_definition():
    """Two decodings of the same movie: each 60-s stretch is left out of both at once."""
    rng = np.random.default_rng(6)
    a = simulate_held_out(rng, signal=1.0, **SMALL)
    b = simulate_held_out(rng, **SMALL)
    d = difference_jackknife(a, b, 5, block_s=60.0)
    blocks = [time_blocks(x[2], 60.0) for x in (a, b)]
    ids = np.union1d(*blocks)
    thetas = np.array([
        macro_auc(a[0][blocks[0] != g], a[1][blocks[0] != g], 5, a[3][blocks[0] != g])
        - macro_auc(b[0][blocks[1] != g], b[1][blocks[1] != g], 5, b[3][blocks[1] != g])
        for g in ids])
    se = np.sqrt((ids.size - 1) / ids.size * ((thetas - thetas.mean()) ** 2).sum())
    assert d["estimate"] == pytest.approx(macro_auc(a[0], a[1], 5, a[3])
                                          - macro_auc(b[0], b[1], 5, b[3]), abs=1e-12)
    assert d["se"] == pytest.approx(se, rel=1e-10)
    assert d["dof"] == ids.size - 1
    same = difference_jackknife(a, a, 5)
    assert same["estimate"] == 0 and same["se"] == 0


def test_simulation_can_take_a_movie_label_sequence():
    """With ``labels``, each fold is a consecutive stretch of the movie's labels (from a random
    start, cyclically) and only its labelled steps are drawn."""
    rng = np.random.default_rng(8)
    seq = np.full(1000, -1)
    seq[::3] = np.arange(334) % 5  # every third step labelled
    y, p, t, f = simulate_held_out(rng, labels=seq, n_folds=2, run_steps=200, n_selected=20)
    assert len(y) == 2 * 20 * 3 and (y >= 0).all()
    for k, fold in enumerate(np.unique(f)):
        steps = ((t[f == fold] - k * 200 * 2.0 * 1.1) / 2.0).round().astype(int)
        assert (steps >= 0).all() and (steps < 200).all()
    # the folds are consecutive stretches: the labels drawn are those of the sequence
    rng = np.random.default_rng(8)
    offset = int(rng.integers(len(seq)))
    steps0 = ((t[f == "run-1"]) / 2.0).round().astype(int)
    assert (y[f == "run-1"] == seq[(offset + steps0) % len(seq)]).all()
