"""The real on-disk formats in and out: readers, writers and their validation.

Every reader raises :class:`emolib.errors.InputDataError` naming the file (and line) and the
problem. Nothing here knows of analyses.

- :mod:`~emolib.io.bids`: ds000113 ``ses-movie`` BOLD runs (finding, header checks, fast
  reading equal to nibabel's).
- :mod:`~emolib.io.annotations`: the Labs et al. (2015) emotion annotation files.
- :mod:`~emolib.io.bold5000`: BOLD5000 RDM files (rsatoolbox's hdf5 layout and a plain one),
  the names of subjects, ROIs and layers.
"""

from emolib.io.annotations import COLUMNS, EMOTIONS, read_observer, read_observers
from emolib.io.bids import (
    STUDYFORREST_SUBJECTS,
    RunInfo,
    bold_path,
    check_runs,
    decode_bold,
    find_runs,
    read_bold,
    read_run_info,
)
from emolib.io.bold5000 import (
    Bold5000RDMs,
    detect_layout,
    load_bold5000,
    load_rdms,
    save_rdms,
)

__all__ = [
    "COLUMNS", "EMOTIONS", "STUDYFORREST_SUBJECTS", "Bold5000RDMs", "RunInfo", "bold_path",
    "check_runs", "decode_bold", "detect_layout", "find_runs", "load_bold5000", "load_rdms",
    "read_bold", "read_observer", "read_observers", "read_run_info", "save_rdms",
]
