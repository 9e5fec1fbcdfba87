"""Calibration of the decoding null, measured over many generated null datasets.

A p-value promises ``P(p <= alpha) <= alpha`` over datasets in which there is nothing to find;
one dataset cannot show that, many can. :func:`null_pvalues` draws null realisations through
the real pipeline (a generated StudyForrest-shaped dataset with nothing planted, prepared,
split by run, decoded, tested with :func:`emolib.decoding.permutation_test`, its interval from
:func:`emolib.decoding.block_jackknife`); :func:`size_table` reports the size at each alpha and
:func:`coverage_table` how often the 95 % intervals contain the true 0.5, both with exact
(Clopper-Pearson) intervals.
``benchmarks/bench_calibration.py`` runs it at scale; the suite runs a small version.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.stats
from tqdm.auto import tqdm

from emolib.decoding.baselines import linear_baseline
from emolib.decoding.crossval import fold_arrays, run_decoding
from emolib.decoding.evaluate import block_jackknife, time_blocks
from emolib.decoding.nulls import permutation_test
from emolib.forrest import HRF_SPAN_S, RunTiming, make_splits, prepare_dataset
from emolib.models import TrainConfig
from emolib.synthetic import generate_studyforrest

__all__ = ["NULL_TIMING", "clopper_pearson", "coverage_table", "null_pvalues", "size_table"]

#: Three overlapping 3-minute runs: the smallest movie with several episodes per class.
NULL_TIMING = RunTiming(starts=(0.0, 172.0, 344.0), n_volumes=(90, 90, 90), tr=2.0)


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact binomial confidence interval of the proportion ``k / n``."""
    a = (1 - level) / 2
    lo = scipy.stats.beta.ppf(a, k, n - k + 1) if k > 0 else 0.0
    hi = scipy.stats.beta.isf(a, k + 1, n - k) if k < n else 1.0
    return float(lo), float(hi)


def _null_run(root: Path, seed: int, cnn_epochs: int, shape, n_permutations: int,
              block_s: float, standardize: str, smoothing_fwhm: float | None,
              high_pass: float | None, augment_noise: float, span_s: float,
              scene_size: float) -> dict[str, dict[str, float]]:
    ds = generate_studyforrest(root / "ds", n_subjects=2, shape=shape, timing=NULL_TIMING,
                               null=True, scene_size=scene_size, seed=seed, progress=False,
                               overwrite=True)
    prep = prepare_dataset(ds / "ds000113", ds / "annotations", root / "prep",
                           timing=NULL_TIMING, min_count=12, n_per_class=12, seed=seed,
                           standardize=standardize, smoothing_fwhm=smoothing_fwhm,
                           high_pass=high_pass, progress=False)
    n_classes = len(prep.classes)
    if cnn_epochs:  # the whole pipeline: CNN, linear and chance in the same folds
        config = TrainConfig(epochs=cnn_epochs, t_max=cnn_epochs, patience=10, seed=seed,
                             augment_noise=augment_noise)
        result = run_decoding(prep, root / "dec", "run", config, span_s=span_s, progress=False,
                              restart=True)
        runs = {m: result.probs(m) for m in ("linear", "cnn")}
    else:  # the linear baseline exactly as run_decoding fits it, without training the CNN
        sel = np.flatnonzero(prep.samples["selected"].to_numpy())
        samples = prep.samples.iloc[sel].reset_index(drop=True)
        y = samples["y"].to_numpy()
        m = prep.mask
        probs = np.zeros((len(y), n_classes))
        fold = np.full(len(y), "", dtype=object)
        for split in make_splits(samples, "run", span_s=span_s, seed=seed):
            tr, val, x_tr, x_val, x_te = fold_arrays(prep.volumes, sel, samples, split, "run",
                                                     seed, span_s)
            probs[split.test] = linear_baseline(x_tr[:, m], y[tr], x_val[:, m], y[val],
                                                x_te[:, m], n_classes, seed=seed)
            fold[split.test] = split.name
        tested = fold != ""
        runs = {"linear": (y[tested], probs[tested], samples[tested].assign(fold=fold[tested]))}
    out = {}
    for model, (y, p, meta) in runs.items():
        times, folds = meta["movie_time"].to_numpy(), meta["fold"].to_numpy()
        test = permutation_test(y, p, times, folds, n_classes, n_permutations=n_permutations,
                                seed=seed)
        ci = block_jackknife(y, p, time_blocks(times, block_s), n_classes,
                             folds=folds).set_index("metric").loc["macro_auc"]
        out[model] = {"p_value": test.p_value, "macro_auc": float(ci["estimate"]),
                      "ci_low": float(ci["low"]), "ci_high": float(ci["high"])}
    return out


def null_pvalues(
    work_dir: str | os.PathLike,
    n: int,
    seed: int = 1000,
    *,
    cnn: int = 0,
    cnn_epochs: int = 4,
    shape: tuple[int, int, int] = (12, 12, 10),
    n_permutations: int = 199,
    block_s: float = 30.0,
    standardize: str = "run",
    smoothing_fwhm: float | None = 7.0,
    high_pass: float | None = 1 / 128,
    augment_noise: float = 1.0,
    span_s: float = HRF_SPAN_S,
    scene_size: float = 0.01,
    progress: bool = True,
) -> pd.DataFrame:
    """Permutation p-values and interval of decoders on ``n`` generated null datasets.

    Each realisation generates a dataset with nothing planted (2 subjects, the three runs of
    :data:`NULL_TIMING`, generated annotations, seed ``seed + r``), prepares it (consensus
    labels, 12 steps per class), splits it by run and decodes it with the linear baseline as
    :func:`emolib.decoding.run_decoding` fits it; the first ``cnn`` realisations run the whole
    :func:`~emolib.decoding.run_decoding` (CNN of ``cnn_epochs`` epochs and the baselines).
    Each decoding's 95 % interval of the fold-averaged macro AUC is the block jackknife's over
    ``block_s``-second blocks of movie time (30 s: six per 3-minute run). ``standardize``,
    ``smoothing_fwhm`` and ``high_pass`` (used with ``"run"`` only) are
    :func:`~emolib.forrest.prepare_dataset`'s, ``augment_noise`` the CNN's
    (:class:`~emolib.models.TrainConfig`), ``span_s`` the leakage guards'
    (:func:`~emolib.decoding.run_decoding`), ``scene_size`` the generator's stimulus-locked
    signal (:func:`~emolib.synthetic.generate_studyforrest`); the defaults are the book's.

    Returns
    -------
    pandas.DataFrame
        One row per realisation and model: ``realisation``, ``seed``, ``model``, ``p_value``,
        ``macro_auc``, ``ci_low``, ``ci_high``.
    """
    root = Path(work_dir)
    rows = []
    for r in tqdm(range(n), desc="null datasets", disable=not progress):
        res = _null_run(root, seed + r, cnn_epochs if r < cnn else 0, shape, n_permutations,
                        block_s, standardize, smoothing_fwhm,
                        high_pass if standardize == "run" else None, augment_noise, span_s,
                        scene_size)
        rows += [{"realisation": r, "seed": seed + r, "model": m, **v} for m, v in res.items()]
    return pd.DataFrame(rows)


def size_table(pvalues: pd.DataFrame, alphas: Sequence[float] = (0.05, 0.01),
               level: float = 0.95) -> pd.DataFrame:
    """Size ``P(p <= alpha)`` per model and alpha with its Clopper-Pearson interval."""
    rows = []
    for model, part in pvalues.groupby("model", sort=False):
        p = part["p_value"].to_numpy()
        for alpha in alphas:
            k = int((p <= alpha).sum())
            lo, hi = clopper_pearson(k, len(p), level)
            rows.append({"model": model, "alpha": alpha, "n_datasets": len(p),
                         "rejections": k, "size": k / len(p), "low": lo, "high": hi})
    return pd.DataFrame(rows)


def coverage_table(runs: pd.DataFrame, truth: float = 0.5, level: float = 0.95
                   ) -> pd.DataFrame:
    """Per model, how often the intervals of :func:`null_pvalues` contain ``truth``
    (``covered`` of ``n_datasets``, ``coverage`` and its Clopper-Pearson interval)."""
    rows = []
    for model, part in runs.groupby("model", sort=False):
        k = int(((part["ci_low"] <= truth) & (truth <= part["ci_high"])).sum())
        lo, hi = clopper_pearson(k, len(part), level)
        rows.append({"model": model, "n_datasets": len(part), "covered": k,
                     "coverage": k / len(part), "low": lo, "high": hi,
                     "mean_width": float((part["ci_high"] - part["ci_low"]).mean())})
    return pd.DataFrame(rows)
