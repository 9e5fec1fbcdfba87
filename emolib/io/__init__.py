"""The real on-disk formats in and out: readers, writers and their validation.

Every reader raises :class:`emolib.errors.InputDataError` naming the file (and line) and the
problem. Nothing here knows of analyses.

- :mod:`~emolib.io.bids`: ds000113 ``ses-movie`` BOLD runs, raw (native space) or the
  aligned derivative (finding with BIDS entities, TR by BIDS inheritance, grid checks, fast
  reading equal to nibabel's).
- :mod:`~emolib.io.annotations`: the Labs et al. (2015) emotion annotation files.
- :mod:`~emolib.io.bold5000`: BOLD5000 RDM files (rsatoolbox's hdf5 layout and a plain one),
  the names of subjects, ROIs and layers.
- :mod:`~emolib.io.bold5000_release`: the BOLD5000 Release 1.0 ROI files (per-trial
  patterns in ``.h5``/``.mat``, stimulus lists with ``rep_`` repeats, the stimulus folders)
  and ROI RDMs computed from them, images matched by name.
"""

from emolib.io.annotations import COLUMNS, EMOTIONS, read_observer, read_observers
from emolib.io.bids import (
    BIDS_LAYOUTS,
    STUDYFORREST_SUBJECTS,
    GridWarning,
    RunInfo,
    RunScan,
    bold_path,
    check_grids,
    check_runs,
    decode_bold,
    find_runs,
    read_bold,
    read_run_info,
    read_sidecar,
    scan_runs,
)
from emolib.io.bold5000 import (
    Bold5000RDMs,
    detect_layout,
    load_bold5000,
    load_rdms,
    save_rdms,
)
from emolib.io.bold5000_release import (
    RELEASE_TRS,
    ImageOverlap,
    RoiPatterns,
    average_repeats,
    common_images,
    describe_stim_list,
    image_category,
    load_roi_rdms,
    read_roi_patterns,
    read_stim_list,
    roi_file,
    select_images,
    stim_list_file,
    stimulus_path,
    strip_rep,
)

__all__ = [
    "BIDS_LAYOUTS", "GridWarning", "RunScan", "check_grids", "read_sidecar", "scan_runs",
    "COLUMNS", "EMOTIONS", "RELEASE_TRS", "STUDYFORREST_SUBJECTS", "Bold5000RDMs",
    "ImageOverlap", "RoiPatterns", "RunInfo", "average_repeats", "bold_path", "check_runs",
    "common_images", "decode_bold", "describe_stim_list", "detect_layout", "find_runs",
    "image_category", "load_bold5000", "load_rdms", "load_roi_rdms", "read_bold",
    "read_observer", "read_observers", "read_roi_patterns", "read_run_info", "read_stim_list",
    "roi_file", "save_rdms", "select_images", "stim_list_file", "stimulus_path", "strip_rep",
]
