"""A null that retrains: decoders fit to labels shifted along movie time, scored on the truth.

The permutation null of :mod:`emolib.decoding.nulls` keeps the trained network fixed and asks
whether its held-out predictions follow the labels. The known-answer check can ask more: would
the whole pipeline, *trained* on labels that carry no information about the volumes, reach the
score it reached? :func:`retrained_null` shifts the labels cyclically along movie time (one
shift for the whole movie: episodes stay episodes and every subject's volume of a moment keeps
one label, :func:`emolib.decoding.cyclic_shift_labels`), retrains every fold on the shifted
training and validation labels, and scores the held-out volumes against their *true* labels.
Each shift costs a full cross-validation: the linear baseline 2-4 s per shift on the
ground-truth check's data here (12 x 12 x 10 voxels, 3 subjects, 3 runs, 2 cores), the CNN a
full training per fold per shift (:attr:`RetrainedNull.seconds_per_shift` reports what it
cost).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from emolib.decoding.baselines import linear_baseline
from emolib.decoding.crossval import fold_arrays
from emolib.decoding.evaluate import macro_auc
from emolib.decoding.nulls import cyclic_shift_labels
from emolib.forrest.dataprep import PreparedData
from emolib.forrest.leaks import HRF_SPAN_S
from emolib.forrest.splits import make_splits
from emolib.models.train import TrainConfig, evaluate_batches, to_tensor, train_model

__all__ = ["RetrainedNull", "retrained_null"]


@dataclass
class RetrainedNull:
    """Result of :func:`retrained_null`.

    Attributes
    ----------
    model : str
        ``"linear"`` or ``"cnn"``.
    observed : float
        Fold-averaged macro AUC of the decoder trained on the true labels.
    null : numpy.ndarray
        The same, for decoders trained on shifted labels (scored on the true ones).
    shifts : numpy.ndarray
        The shifts drawn (in movie moments; uniform over all, identity included).
    p_value : float
        ``(1 + #{null >= observed}) / (1 + n)``.
    seconds_per_shift : float
        Wall time of one retrained cross-validation.
    """

    model: str
    observed: float
    null: np.ndarray
    shifts: np.ndarray
    p_value: float
    seconds_per_shift: float


def _fit_predict(model: str, x_tr, y_tr, x_val, y_val, x_te, n_classes: int, mask,
                 config: TrainConfig) -> np.ndarray:
    if model == "linear":
        return linear_baseline(x_tr[:, mask], y_tr, x_val[:, mask], y_val, x_te[:, mask],
                               n_classes, seed=config.seed)
    result = train_model(x_tr, y_tr, x_val, y_val, n_classes, config, progress=False)
    xt = to_tensor(x_te, next(result.model.parameters()).device, config.channels_last)
    return evaluate_batches(result.model, xt, None)[0]


def retrained_null(
    prepared: PreparedData,
    kind: str = "run",
    model: str = "linear",
    n_shifts: int = 19,
    config: TrainConfig = TrainConfig(epochs=8, t_max=8, patience=10),
    folds: list[int] | None = None,
    span_s: float = HRF_SPAN_S,
    seed: int = 0,
) -> RetrainedNull:
    """Retrain the decoder under ``n_shifts`` cyclic shifts of the labels and score each on
    the true held-out labels (see the module docstring).

    Parameters
    ----------
    prepared : PreparedData
        Output of :func:`emolib.forrest.prepare_dataset` (its ``selected`` samples are used).
    kind : {"run", "subject"}, default="run"
        Split kind (the random split leaks whatever the labels).
    model : {"linear", "cnn"}, default="linear"
        The linear baseline as :func:`~emolib.decoding.run_decoding` fits it, or the CNN
        trained with ``config``.
    n_shifts : int, default=19
        Shifts drawn uniformly from all cyclic shifts of the movie's labelled moments.
    config : TrainConfig
        CNN training (and the seed of the inner validation and of the linear baseline).
    folds : list of int, optional
        Only these folds.
    span_s : float, default=HRF_SPAN_S
        Leakage guard span of the splits.
    seed : int, default=0
        Seed of the shifts.

    Returns
    -------
    RetrainedNull
    """
    if model not in ("linear", "cnn"):
        raise ValueError(f"model must be 'linear' or 'cnn', got {model!r}")
    if kind == "random":
        raise ValueError("the random split leaks whatever the labels: retrain under 'run' "
                         "or 'subject'")
    sel = np.flatnonzero(prepared.samples["selected"].to_numpy())
    samples = prepared.samples.iloc[sel].reset_index(drop=True)
    y = samples["y"].to_numpy()
    times = samples["movie_time"].to_numpy(float)
    n_classes = len(prepared.classes)
    splits = make_splits(samples, kind, span_s=span_s, seed=config.seed, folds=folds)
    arrays = [fold_arrays(prepared.volumes, sel, samples, s, kind, config.seed, span_s)
              for s in splits]

    def cross_validate(labels: np.ndarray) -> float:
        probs, truth, fold = [], [], []
        for split, (tr, val, x_tr, x_val, x_te) in zip(splits, arrays, strict=True):
            probs.append(_fit_predict(model, x_tr, labels[tr], x_val, labels[val], x_te,
                                      n_classes, prepared.mask, config))
            truth.append(y[split.test])
            fold.append(np.full(split.test.size, split.name))
        return macro_auc(np.concatenate(truth), np.concatenate(probs), n_classes,
                         np.concatenate(fold))

    observed = cross_validate(y)
    rng = np.random.default_rng(seed)
    n_moments = np.unique(times).size
    shifts = rng.integers(n_moments, size=n_shifts)
    t0 = time.perf_counter()
    null = np.array([cross_validate(cyclic_shift_labels(y, times, int(k))) for k in shifts])
    seconds = (time.perf_counter() - t0) / max(n_shifts, 1)
    p = (1 + int((null >= observed).sum())) / (1 + n_shifts)
    return RetrainedNull(model, observed, null, shifts, p, seconds)
