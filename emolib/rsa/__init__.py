"""Representational similarity analysis on rsatoolbox's objects, aligned by pattern id.

A generic engine: it knows nothing of either study (an import-linter contract in the suite
keeps it so). Everything here takes and returns :class:`rsatoolbox.rdm.RDMs`, so results
interoperate with the field (``RDMs.save``/``load_rdm`` hdf5 files, rsatoolbox's plots and
inference). What it adds over rsatoolbox, each proven against it in ``tests/test_rsa.py``:

=========================  ===============================================================
module                     what
=========================  ===============================================================
:mod:`~emolib.rsa.align`    pattern ids; alignment by id, never by position
                           (:class:`PatternMismatchError` on different id sets)
:mod:`~emolib.rsa.compare`  all model x data comparisons in one vectorised pass (corr,
                           cosine, spearman, rho-a, exact tau-a), NaN pairs dropped
:mod:`~emolib.rsa.rdms`     RDMs of pattern matrices (blocked Gram matrix), torch model
                           layers and brain ROIs (masks or nilearn maskers); joint RDMs
:mod:`~emolib.rsa.streamed` exact layer RDMs of many stimuli with bounded memory: activations
                           streamed to disk rows, Gram matrix over column chunks,
                           resumable (:func:`calc_rdms_streamed`)
:mod:`~emolib.rsa.patterns` averaging rows into patterns, centring within blocks, blanking
                           pairs across blocks
:mod:`~emolib.rsa.bootstrap` the pattern bootstrap as one weighted comparison per chunk;
                           dependent patterns resampled in groups (``pattern_groups``)
:mod:`~emolib.rsa.inference` noise ceilings, tests against zero and between models (FDR),
                           group contrasts, the Mantel test, result tables
:mod:`~emolib.rsa.vectors`  condensed-vector helpers; ``SQUARES_BYTES``, the memory for
                           square copies while reordering
=========================  ===============================================================

Data flow: patterns -> :mod:`rdms` -> (:mod:`align`) -> :mod:`compare` / :mod:`bootstrap`
-> :mod:`inference`. The study-specific pieces (movie-moment patterns of the StudyForrest
decoding, per-fold network RDMs) live in :mod:`emolib.forrest.patterns`.
"""

from emolib.rsa.align import (
    PATTERN_KEY,
    PatternMismatchError,
    align_rdms,
    concat_rdms,
    find_duplicates,
    get_pattern_ids,
    reorder_patterns,
)
from emolib.rsa.bootstrap import (
    FAST_BOOTSTRAP_METHODS,
    BootstrapResult,
    bootstrap_compare,
    concat_bootstraps,
)
from emolib.rsa.compare import COMPARE_METHODS, compare_rdms, compare_table, compare_vectors
from emolib.rsa.inference import (
    MantelResult,
    calc_group_contrast,
    calc_mantel,
    calc_noise_ceiling,
    calc_pair_tests,
    calc_zero_tests,
    collect_results,
)
from emolib.rsa.patterns import average_patterns, center_patterns, restrict_pairs
from emolib.rsa.rdms import (
    calc_joint_rdms,
    calc_rdms_from_model,
    calc_rdms_from_patterns,
    calc_roi_rdms,
)
from emolib.rsa.streamed import calc_rdms_streamed
from emolib.rsa.vectors import condense_square

__all__ = [
    "COMPARE_METHODS", "FAST_BOOTSTRAP_METHODS", "PATTERN_KEY", "BootstrapResult",
    "MantelResult", "PatternMismatchError", "align_rdms", "average_patterns",
    "bootstrap_compare", "calc_group_contrast", "calc_joint_rdms", "calc_mantel",
    "calc_noise_ceiling", "calc_pair_tests", "calc_rdms_from_model", "calc_rdms_from_patterns",
    "calc_rdms_streamed", "calc_roi_rdms", "calc_zero_tests", "center_patterns",
    "collect_results", "compare_rdms", "compare_table", "compare_vectors", "concat_bootstraps",
    "concat_rdms", "condense_square", "find_duplicates", "get_pattern_ids", "reorder_patterns",
    "restrict_pairs",
]
