"""The StudyForrest study: run timing, consensus labels, data preparation, leakage-free splits,
regions of interest and the RSA patterns of the decoding.

Data flow: annotations (:mod:`emolib.io.annotations`) -> :mod:`~emolib.forrest.labels`
(consensus on the 2-s grid) -> :mod:`~emolib.forrest.timing` (movie time of every volume,
with the run overlaps and the HRF lag) -> :mod:`~emolib.forrest.dataprep` (BOLD runs read by
:mod:`emolib.io.bids`, labelled, z-scored, cached) -> :mod:`~emolib.forrest.splits` (by run,
by subject, or the original's random split, with leak guards; :mod:`~emolib.forrest.windows`
for samples that are windows of consecutive volumes, prepared with their neighbours by
:func:`~emolib.forrest.variants.prepare_variant`) -> :mod:`emolib.decoding`.
After decoding: :mod:`~emolib.forrest.rois` (planted regions, parcels or an atlas) and
:mod:`~emolib.forrest.patterns` (movie-moment patterns; ROI and per-fold network RDMs).
"""

from emolib.forrest.dataprep import (
    PreparedData,
    load_prepared,
    prepare_dataset,
    summarize_inputs,
)
from emolib.forrest.labels import LABEL_STEP_S, class_counts, consensus_labels, select_classes
from emolib.forrest.leaks import (
    HRF_SPAN_S,
    LeakageError,
    LeakReport,
    assert_no_leak,
    find_leaks,
    leak_table,
)
from emolib.forrest.patterns import (
    add_pattern_groups,
    average_over_blocks,
    calc_brain_rdms,
    calc_network_rdms,
    define_patterns,
)
from emolib.forrest.rois import RoiSet, load_atlas, make_rois, masks_from_labels, parcellate_mask
from emolib.forrest.splits import Split, guard, make_splits, removal_table
from emolib.forrest.standardize import zscore_volumes, zscore_voxels
from emolib.forrest.timing import STUDYFORREST, RunTiming, label_volumes
from emolib.forrest.variants import prepare_variant
from emolib.forrest.windows import (
    WindowedSamples,
    as_offsets,
    gather_windows,
    window_cache_bytes,
    window_samples,
    window_support,
)

__all__ = [
    "HRF_SPAN_S", "LABEL_STEP_S", "STUDYFORREST", "LeakReport", "LeakageError",
    "PreparedData", "RoiSet", "RunTiming",
    "Split", "assert_no_leak", "calc_brain_rdms", "calc_network_rdms", "class_counts",
    "average_over_blocks", "consensus_labels", "define_patterns", "find_leaks", "guard",
    "add_pattern_groups",
    "label_volumes", "leak_table", "load_atlas",
    "load_prepared", "make_rois", "make_splits", "masks_from_labels", "parcellate_mask",
    "prepare_dataset", "prepare_variant", "removal_table", "select_classes", "summarize_inputs",
    "WindowedSamples", "as_offsets", "gather_windows", "window_cache_bytes", "window_samples",
    "window_support",
    "zscore_volumes", "zscore_voxels",
]
