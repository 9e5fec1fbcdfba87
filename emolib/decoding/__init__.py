"""Decoding the portrayed emotion from prepared StudyForrest volumes, measured honestly.

- :mod:`~emolib.decoding.crossval`: :func:`run_decoding`, the CNN and its baselines in the
  same leakage-free folds (checkpointed, resumable), :func:`summarize_decoding`,
  :func:`ground_truth_check` (planted vs null twins), :func:`load_decoding`.
- :mod:`~emolib.decoding.baselines`: the inner validation set, the linear baseline.
- :mod:`~emolib.decoding.evaluate`: AUCs per class and fold, ROC curves, intervals over
  blocks of movie time (:func:`block_jackknife`, :func:`cluster_bootstrap`, :func:`time_blocks`).
- :mod:`~emolib.decoding.nulls`: the time-aware (cyclic-shift) permutation null;
  :mod:`~emolib.decoding.retrained`: the null that retrains under shifted labels.
- :mod:`~emolib.decoding.calibration`, :mod:`~emolib.decoding.coverage`: the size of the null
  and the coverage of the intervals, measured over many simulated datasets.

Data flow: :class:`emolib.forrest.PreparedData` + :mod:`emolib.forrest.splits` ->
:func:`run_decoding` (:mod:`emolib.models`) -> predictions -> evaluate / nulls.
"""

from emolib.decoding.baselines import inner_validation, linear_baseline
from emolib.decoding.crossval import (
    MODELS,
    DecodingResult,
    decoding_samples,
    ground_truth_check,
    load_decoding,
    run_decoding,
    split_inflation,
    summarize_decoding,
)
from emolib.decoding.evaluate import (
    auc_per_class,
    block_jackknife,
    classification_metrics,
    cluster_bootstrap,
    difference_jackknife,
    fold_metrics,
    macro_auc,
    roc_curves,
    time_blocks,
)
from emolib.decoding.nulls import (
    PermutationResult,
    cyclic_shift_labels,
    fold_shift_aucs,
    permutation_test,
)
from emolib.decoding.retrained import RetrainedNull, retrained_null

__all__ = [
    "MODELS", "DecodingResult", "PermutationResult", "RetrainedNull", "auc_per_class",
    "decoding_samples",
    "block_jackknife", "classification_metrics", "cluster_bootstrap", "cyclic_shift_labels",
    "difference_jackknife", "fold_metrics", "fold_shift_aucs", "ground_truth_check",
    "inner_validation", "linear_baseline", "load_decoding", "macro_auc", "permutation_test",
    "retrained_null", "roc_curves", "run_decoding", "split_inflation", "summarize_decoding",
    "time_blocks",
]
