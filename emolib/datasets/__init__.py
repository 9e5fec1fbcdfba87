"""Where each study's input data come from: the real release on disk, or a twin generated
in the same layout with a planted truth (:mod:`emolib.synthetic`).

The notebooks take the same parameters whatever the source, so the book runs on generated
data by default and on the real data by pointing a parameter at them.

- :func:`obtain_dataset`: a ds000113-shaped BIDS tree and the annotations.
- :func:`obtain_bold5000_release`: the BOLD5000 Release 1.0 (ROI patterns to RDMs, stimuli).
- :func:`obtain_bold5000`: precomputed BOLD5000 RDM files (ROI and ResNet-50 layer RDMs).
- :mod:`~emolib.datasets.fetch`: the real data, downloaded into the data folder as nilearn's
  fetchers do (``fetch_emotion_annotations``, ``fetch_ds000113``, ``fetch_bold5000_release``,
  ``fetch_resnet50_weights``; ``make data``).
"""

from emolib.datasets.bold5000 import (
    BOLD5000_SOURCES,
    Bold5000Release,
    Bold5000Source,
    obtain_bold5000,
    obtain_bold5000_release,
)
from emolib.datasets.fetch import (
    FETCHED,
    FetchError,
    fetch_bold5000_release,
    fetch_ds000113,
    fetch_emotion_annotations,
    fetch_files,
    fetch_resnet50_weights,
    fetched_dir,
    real_data_dir,
)
from emolib.datasets.forrest import DatasetSource, obtain_dataset, resolve_annotations_dir

__all__ = [
    "BOLD5000_SOURCES", "Bold5000Release", "Bold5000Source", "DatasetSource", "FetchError",
    "fetch_bold5000_release", "fetch_ds000113", "fetch_emotion_annotations", "fetch_files",
    "fetch_resnet50_weights", "fetched_dir", "FETCHED", "obtain_bold5000",
    "obtain_bold5000_release", "obtain_dataset", "real_data_dir", "resolve_annotations_dir",
]
