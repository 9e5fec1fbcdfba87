"""Inference on RDM comparisons: noise ceilings, tests against zero and between models with
FDR correction, ROI-group contrasts, the Mantel permutation test, and result tables.

Noise ceilings follow rsatoolbox's ``boot_noise_ceiling`` definition; the Mantel test is exact
for small RDMs (all permutations).
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.stats
from rsatoolbox.rdm import RDMs

from emolib.rsa.align import (
    PATTERN_KEY,
    align_rdms,
    alignment_index,
    as_rdms_list,
    descriptor_values,
    get_pattern_ids,
)
from emolib.rsa.bootstrap import BootstrapResult
from emolib.rsa.compare import compare_vectors
from emolib.rsa.vectors import condensed_index

__all__ = [
    "MantelResult", "calc_group_contrast", "calc_mantel", "calc_noise_ceiling",
    "calc_pair_tests", "calc_zero_tests", "collect_results",
]


def _nan_ranks(row: np.ndarray) -> np.ndarray:
    """Ranks of the finite entries (ties averaged), NaN kept where the entry is NaN."""
    out = np.full(row.shape, np.nan)
    ok = ~np.isnan(row)
    out[ok] = scipy.stats.rankdata(row[ok])
    return out


def _nan_mean_rows(v: np.ndarray) -> np.ndarray:
    """Mean over rows ignoring NaN; NaN where every row is NaN (a blanked pair)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns stay NaN
        return np.nanmean(v, axis=0)


def _pool_vectors(v: np.ndarray, method: str) -> np.ndarray:
    """rsatoolbox's ``pool_rdm``: the RDM that best predicts a set under ``method``.

    NaN entries (blanked pairs) are left out as in rsatoolbox: ranks are taken over the
    finite entries, means over the RDMs that have the pair.
    """
    v = np.asarray(v, dtype=np.float64)
    if method == "cosine":
        v = v / np.sqrt(np.nanmean(v**2, axis=1, keepdims=True))
        return _nan_mean_rows(v)
    if method == "corr":
        v = v - np.nanmean(v, axis=1, keepdims=True)
        v = v / np.nanstd(v, axis=1, keepdims=True)
        pooled = _nan_mean_rows(v)
        return pooled - np.nanmin(pooled)
    if method in ("spearman", "rho-a", "tau-a", "kendall", "tau-b"):
        return _nan_mean_rows(np.stack([_nan_ranks(row) for row in v]))
    raise ValueError(f"unknown comparison method {method!r}")


def _noise_ceiling_vectors(
    v: np.ndarray, groups: np.ndarray, method: str
) -> tuple[float, float]:
    """(lower, upper) noise ceiling; both NaN with fewer than two groups (subjects): a single
    subject has no other subjects to predict it, so no ceiling is defined."""
    uniq = np.unique(groups)
    if len(uniq) < 2:
        return float("nan"), float("nan")
    preds = [_pool_vectors(v, method)] + [_pool_vectors(v[groups != g], method) for g in uniq]
    sims = compare_vectors(np.stack(preds), v, method)
    upper = np.mean([sims[0, groups == g].mean() for g in uniq])
    lower = np.mean([sims[1 + k, groups == g].mean() for k, g in enumerate(uniq)])
    return float(lower), float(upper)


def calc_noise_ceiling(
    data_rdms: RDMs | Sequence[RDMs],
    method: str = "corr",
    *,
    by: str = "roi",
    rdm_descriptor: str = "subject",
    pattern_key: str = PATTERN_KEY,
) -> pd.DataFrame:
    """Noise ceiling per ROI across subjects (leave one subject out).

    The definition of :func:`rsatoolbox.inference.boot_noise_ceiling`: the upper bound is
    the mean similarity of each subject's RDM to the pooled RDM of all subjects, the lower
    bound to the pooled RDM of the other subjects (pooling as ``rsatoolbox``'s
    ``pool_rdm`` for the method).

    Parameters
    ----------
    data_rdms : rsatoolbox.rdm.RDMs or sequence of them
        RDMs of several subjects (aligned by id here).
    method : str, default="corr"
        Comparison method.
    by : str, default="roi"
        Descriptor grouping the RDMs that share a ceiling.
    rdm_descriptor : str, default="subject"
        Descriptor of the units left out.
    pattern_key : str, default="id"
        Pattern descriptor holding the ids.

    Returns
    -------
    pandas.DataFrame
        Columns ``by``, ``method``, ``lower``, ``upper``, ``n_subjects``; ``lower`` and
        ``upper`` are NaN for a group with a single subject (no ceiling is defined).
    """
    data_list = as_rdms_list(data_rdms)
    ids = get_pattern_ids(data_list[0], pattern_key)
    indices = [alignment_index(get_pattern_ids(r, pattern_key), ids) for r in data_list]
    members: dict[Any, list[tuple[int, int, Any]]] = {}
    for d, r in enumerate(data_list):
        subj = descriptor_values(r, rdm_descriptor)
        for k, g in enumerate(descriptor_values(r, by)):
            members.setdefault(g, []).append((d, k, subj[k]))
    rows = []
    for g, mem in members.items():
        v = np.stack(
            [
                data_list[d].dissimilarities[k]
                if indices[d] is None
                else data_list[d].dissimilarities[k][indices[d]]
                for d, k, _ in mem
            ]
        )
        subjects = np.array([s for _, _, s in mem], dtype=object).astype(str)
        lower, upper = _noise_ceiling_vectors(v, subjects, method)
        rows.append(
            {by: g, "method": method, "lower": lower, "upper": upper,
             "n_subjects": len(np.unique(subjects))}
        )
    return pd.DataFrame(rows)


def _fdr(p: np.ndarray, families: np.ndarray | None) -> np.ndarray:
    q = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if families is None:
        families = np.zeros(len(p), dtype=int)
    for fam in pd.unique(families[ok]):
        sel = ok & (families == fam)
        q[sel] = scipy.stats.false_discovery_control(p[sel], method="bh")
    return q


def _variance_correction(n: int) -> float:
    """rsatoolbox's n / (n - 1) correction of pattern-bootstrap variances."""
    return n / (n - 1) if n > 1 else 1.0


def calc_zero_tests(
    boot: BootstrapResult,
    *,
    test_type: str = "t-test",
    alpha: float = 0.05,
    fdr_by: str | None = None,
) -> pd.DataFrame:
    """Test each layer/ROI comparison against zero, with FDR correction.

    Parameters
    ----------
    boot : BootstrapResult
        From :func:`bootstrap_compare`.
    test_type : {"t-test", "bootstrap"}, default="t-test"
        rsatoolbox's tests: a one-sided t-test of the bootstrap mean with the (corrected,
        see :meth:`BootstrapResult.get_variance`) bootstrap variance and ``n_units - 1``
        degrees of freedom (:attr:`BootstrapResult.n_units`: the patterns, or the groups
        of a grouped bootstrap), or the bootstrap proportion
        ``(#{samples <= 0} + 1) / n_bootstrap``.
    alpha : float, default=0.05
        FDR level for ``significant``.
    fdr_by : str, optional
        Label column defining separate families (e.g. ``"subject"``); default one family.

    Returns
    -------
    pandas.DataFrame
        :meth:`BootstrapResult.to_frame` columns (the 95 % interval of the same
        ``test_type``) plus ``p``, ``q`` (Benjamini-Hochberg via
        :func:`scipy.stats.false_discovery_control`) and ``significant``.
    """
    if test_type not in ("t-test", "bootstrap"):
        raise ValueError("test_type must be 't-test' or 'bootstrap'")
    frame = boot.to_frame(test_type=test_type)
    # One rule for the tests and the table's standard errors: every cell uses its own finite
    # bootstrap samples (a NaN in one cell does not drop that sample from the others).
    s = boot.samples
    if test_type == "t-test":
        mean = boot.get_means()
        var = boot.get_variance(corrected=True)
        t = mean / np.sqrt(np.maximum(var, np.finfo(float).eps))
        p = scipy.stats.t.sf(t, boot.n_units - 1)
        frame["t"] = t.T.reshape(-1)
    elif test_type == "bootstrap":
        finite = np.isfinite(s)
        p = (((s <= 0) & finite).sum(axis=0) + 1) / np.maximum(finite.sum(axis=0), 1)
    else:
        raise ValueError("test_type must be 't-test' or 'bootstrap'")
    frame["p"] = p.T.reshape(-1)
    fam = None if fdr_by is None else frame[fdr_by].to_numpy()
    frame["q"] = _fdr(frame["p"].to_numpy(), fam)
    frame["significant"] = frame["q"] < alpha
    return frame


def _difference_test(
    diffs: np.ndarray, n_units: int, test_type: str
) -> tuple[np.ndarray, np.ndarray]:
    """Standard error and two-sided p of bootstrap differences (axis 0: samples).

    rsatoolbox's pair tests: a t-test of the mean difference with the corrected bootstrap
    variance and ``n_units - 1`` degrees of freedom (``n_units``: the resampled patterns or
    groups), or the bootstrap proportion test of
    ``rsatoolbox.util.inference_util.bootstrap_pair_tests`` (ties left out).
    """
    se = np.sqrt(diffs.var(axis=0, ddof=1) * _variance_correction(n_units))
    if test_type == "t-test":
        t = diffs.mean(axis=0) / np.sqrt(np.maximum(se**2, np.finfo(float).eps))
        p = 2 * scipy.stats.t.sf(np.abs(t), n_units - 1)
    elif test_type == "bootstrap":
        n = diffs.shape[0]
        prop = (diffs < 0).sum(axis=0) / (n - (diffs == 0).sum(axis=0))
        p = (n - 1) / n * np.minimum(prop, 1 - prop) * 2 + 1 / n
    else:
        raise ValueError("test_type must be 't-test' or 'bootstrap'")
    return se, p


def calc_pair_tests(
    boot: BootstrapResult,
    *,
    test_type: str = "t-test",
    alpha: float = 0.05,
    fdr_by: str | None = None,
) -> pd.DataFrame:
    """Test every pair of layers within each data RDM (ROI), with FDR correction.

    Parameters
    ----------
    boot : BootstrapResult
        From :func:`bootstrap_compare`.
    test_type : {"t-test", "bootstrap"}, default="t-test"
        rsatoolbox's pair tests: a two-sided t-test of the difference of bootstrap means
        with the corrected bootstrap variance of the difference (``n_units - 1`` dof), or the
        bootstrap proportion test of ``rsatoolbox.util.inference_util.bootstrap_pair_tests``.
    alpha : float, default=0.05
        FDR level for ``significant``.
    fdr_by : str, optional
        Label column defining separate families; default one family for the whole table.

    Returns
    -------
    pandas.DataFrame
        Data labels, ``<model>_a``, ``<model>_b``, ``diff`` (point a - b), ``se``, ``p``,
        ``q``, ``significant``.
    """
    s = boot.samples[np.isfinite(boot.samples).all(axis=(1, 2))]
    n_model = len(boot.model_names)
    ia, ib = np.triu_indices(n_model, 1)
    diffs = s[:, ia, :] - s[:, ib, :]  # (n_boot, n_pairs, n_data)
    se, p = _difference_test(diffs, boot.n_units, test_type)
    name = boot.model_descriptor
    rows = []
    for r in range(len(boot.data_labels)):
        base = boot.data_labels.iloc[r].to_dict()
        for k in range(len(ia)):
            rows.append(
                {**base, f"{name}_a": boot.model_names[ia[k]],
                 f"{name}_b": boot.model_names[ib[k]],
                 "diff": boot.point[ia[k], r] - boot.point[ib[k], r],
                 "se": se[k, r], "p": p[k, r]}
            )
    frame = pd.DataFrame(rows)
    fam = None if fdr_by is None else frame[fdr_by].to_numpy()
    frame["q"] = _fdr(frame["p"].to_numpy(), fam)
    frame["significant"] = frame["q"] < alpha
    return frame


def calc_group_contrast(
    boot: BootstrapResult,
    a: Any,
    b: Any,
    *,
    by: str = "roi",
    test_type: str = "t-test",
    alpha: float = 0.05,
    level: float = 0.95,
    fdr_by: str | None = None,
) -> pd.DataFrame:
    """Compare two data columns (e.g. two ROI groups) for every layer, on the paired bootstrap.

    Typically after :meth:`BootstrapResult.aggregate` has averaged ROIs into groups, e.g.
    planted regions against control parcels: is the network more similar to one group than
    to the other?

    Parameters
    ----------
    boot : BootstrapResult
        Bootstrap whose data labels hold ``a`` and ``b`` in column ``by`` (once per value of
        the other label columns, e.g. once per subject).
    a, b : any
        The two values of ``by`` compared (difference ``a - b``).
    by : str, default="roi"
        Data label holding ``a`` and ``b``.
    test_type : {"t-test", "bootstrap"}, default="t-test"
        As :func:`calc_pair_tests`: a two-sided t-test of the difference with the corrected
        bootstrap variance (``n_units - 1`` dof), or the bootstrap proportion test.
    alpha : float, default=0.05
        FDR level for ``significant``.
    level : float, default=0.95
        Level of the interval of the difference: the t interval of the test (bootstrap mean
        of the difference plus or minus ``se`` times Student's t) with ``"t-test"``, the
        percentile interval with ``"bootstrap"``.
    fdr_by : str, optional
        Column defining separate FDR families (e.g. ``"subject"``); default one family.

    Returns
    -------
    pandas.DataFrame
        The other data labels, the model descriptor, ``a``, ``b``, ``diff`` (point),
        ``ci_low``, ``ci_high``, ``se``, ``p``, ``q``, ``significant``.
    """
    labels = boot.data_labels
    if by not in labels.columns:
        raise ValueError(f"the bootstrap has no data label {by!r}")
    rest = [c for c in labels.columns if c != by]
    s = boot.samples[np.isfinite(boot.samples).all(axis=(1, 2))]
    cut = (1 - level) / 2 * 100
    name = boot.model_descriptor
    rows = []
    keys = labels[rest].drop_duplicates() if rest else pd.DataFrame(index=[0])
    for _, key in keys.iterrows():
        sel = np.ones(len(labels), dtype=bool)
        for c in rest:
            sel &= (labels[c] == key[c]).to_numpy()
        ia = np.flatnonzero(sel & (labels[by] == a).to_numpy())
        ib = np.flatnonzero(sel & (labels[by] == b).to_numpy())
        if len(ia) != 1 or len(ib) != 1:
            raise ValueError(f"need exactly one column {by}={a!r} and one {by}={b!r} per "
                             f"{dict(key[rest]) if rest else 'table'}")
        diffs = s[:, :, ia[0]] - s[:, :, ib[0]]  # (n_boot, n_model)
        point = boot.point[:, ia[0]] - boot.point[:, ib[0]]
        se, p = _difference_test(diffs, boot.n_units, test_type)
        if test_type == "t-test":
            half = se * scipy.stats.t.ppf(0.5 + level / 2, max(boot.n_units - 1, 1))
            lo, hi = diffs.mean(axis=0) - half, diffs.mean(axis=0) + half
        else:
            lo = np.percentile(diffs, cut, axis=0)
            hi = np.percentile(diffs, 100 - cut, axis=0)
        for m, model in enumerate(boot.model_names):
            rows.append({**{c: key[c] for c in rest}, name: model, "a": a, "b": b,
                         "diff": point[m], "ci_low": lo[m], "ci_high": hi[m], "se": se[m],
                         "p": p[m]})
    frame = pd.DataFrame(rows)
    fam = None if fdr_by is None else frame[fdr_by].to_numpy()
    frame["q"] = _fdr(frame["p"].to_numpy(), fam)
    frame["significant"] = frame["q"] < alpha
    return frame


@dataclass
class MantelResult:
    """Result of :func:`calc_mantel`.

    Attributes
    ----------
    statistic : float
        Observed similarity of the two RDMs.
    p_value : float
        Permutation p-value.
    null_distribution : numpy.ndarray
        Similarities under the permutations (the identity included when exact).
    exact : bool
        Whether all n! permutations were enumerated.
    method, alternative : str
        Comparison method and alternative hypothesis.
    """

    statistic: float
    p_value: float
    null_distribution: np.ndarray = field(repr=False)
    exact: bool
    method: str
    alternative: str


def calc_mantel(
    rdm1: RDMs,
    rdm2: RDMs,
    method: str = "corr",
    *,
    n_permutations: int = 10000,
    exact: bool | None = None,
    alternative: str = "greater",
    seed: int | np.random.Generator | None = None,
    pattern_key: str = PATTERN_KEY,
) -> MantelResult:
    """Mantel test: permute rows and columns of one RDM jointly.

    Parameters
    ----------
    rdm1, rdm2 : rsatoolbox.rdm.RDMs
        One RDM each, aligned here by id.
    method : str, default="corr"
        Comparison method (see :func:`compare_vectors`).
    n_permutations : int, default=10000
        Random permutations when not exact.
    exact : bool, optional
        Enumerate all n! permutations. Default: when n! <= ``n_permutations``
        (5 patterns: 120 permutations).
    alternative : {"greater", "less", "two-sided"}, default="greater"
        As :func:`scipy.stats.permutation_test`.
    seed : int or numpy.random.Generator, optional
        Seed for random permutations.
    pattern_key : str, default="id"
        Pattern descriptor holding the ids.

    Returns
    -------
    MantelResult
        Exact p = share of all permutations at least as extreme (identity included);
        random p = (count + 1) / (n_permutations + 1).
    """
    if rdm1.n_rdm != 1 or rdm2.n_rdm != 1:
        raise ValueError("calc_mantel compares exactly one RDM with one RDM")
    a, b = align_rdms(rdm1, rdm2, pattern_key)
    v1 = a.dissimilarities[0]
    v2 = b.dissimilarities[0]
    n = a.n_cond
    if exact is None:
        exact = math.factorial(n) <= n_permutations
    if exact:
        if math.factorial(n) > 10**7:
            raise ValueError(f"{n}! permutations are too many to enumerate")
        perms = np.array(list(itertools.permutations(range(n))), dtype=np.int64)
    else:
        rng = np.random.default_rng(seed)
        perms = rng.permuted(np.tile(np.arange(n), (n_permutations, 1)), axis=1)
    i, j = np.triu_indices(n, 1)
    stat = float(compare_vectors(v1, v2, method)[0, 0])
    block = max(1, (32 << 20) // max(1, len(i) * 8))
    null = np.concatenate(
        [
            compare_vectors(
                v1, v2[condensed_index(p[:, i], p[:, j], n)], method
            )[0]
            for p in (perms[s : s + block] for s in range(0, len(perms), block))
        ]
    )
    gamma = abs(1e-14 * stat)  # scipy.stats.permutation_test's tolerance
    greater = null >= stat - gamma
    less = null <= stat + gamma

    def pval(hits: np.ndarray) -> float:
        return hits.mean() if exact else (hits.sum() + 1) / (len(hits) + 1)

    if alternative == "greater":
        p = pval(greater)
    elif alternative == "less":
        p = pval(less)
    elif alternative == "two-sided":
        p = min(1.0, 2 * min(pval(greater), pval(less)))
    else:
        raise ValueError("alternative must be 'greater', 'less' or 'two-sided'")
    return MantelResult(stat, float(p), null, bool(exact), method, alternative)


def collect_results(
    table: pd.DataFrame,
    zero_tests: pd.DataFrame | None = None,
    noise_ceiling: pd.DataFrame | None = None,
    *,
    keys: Sequence[str] = ("subject", "roi", "layer"),
    joint_name: str = "joint",
) -> pd.DataFrame:
    """One row per comparison: every method's value, the bootstrap CI, the tests, the ceiling.

    Parameters
    ----------
    table : pandas.DataFrame
        Tidy comparison table of :func:`compare_table` (``method`` and ``value`` columns,
        one or more methods).
    zero_tests : pandas.DataFrame, optional
        From :func:`calc_zero_tests`: adds ``boot_mean``, ``se``, ``ci_low``, ``ci_high``,
        ``t`` (t-test only), ``p``, ``q``, ``significant`` (all of the tested method).
    noise_ceiling : pandas.DataFrame, optional
        From :func:`calc_noise_ceiling`: adds ``nc_lower``/``nc_upper`` per ROI to the rows of
        single subjects (the ceiling bounds a single subject's RDM; rows whose subject is
        ``joint_name`` get NaN).
    keys : sequence of str, default=("subject", "roi", "layer")
        Columns identifying a comparison.
    joint_name : str, default="joint"
        Subject label of the joint RDMs.

    Returns
    -------
    pandas.DataFrame
        ``keys``, one column per method, then the columns above, in the table's row order.
    """
    keys = list(keys)
    out = table.pivot_table(index=keys, columns="method", values="value", sort=False)
    out = out.reset_index()
    out.columns.name = None
    if zero_tests is not None:
        cols = [c for c in ("boot_mean", "se", "ci_low", "ci_high", "t", "p", "q", "significant")
                if c in zero_tests.columns]
        out = out.merge(zero_tests[keys + cols], on=keys, how="left")
    if noise_ceiling is not None:
        by = keys[1]
        nc = noise_ceiling[[by, "lower", "upper"]].rename(
            columns={"lower": "nc_lower", "upper": "nc_upper"}
        )
        out = out.merge(nc, on=by, how="left")
        if "subject" in out.columns:
            out.loc[out["subject"] == joint_name, ["nc_lower", "nc_upper"]] = np.nan
    return out
