"""Generated data in exactly the real on-disk formats, with a planted ground truth.

- :mod:`emolib.synthetic.forrest`: a ds000113 ``ses-movie`` BIDS tree with emotion-driven
  BOLD responses in planted regions, and annotation CSVs in the Labs et al. format.
- :mod:`emolib.synthetic.bold5000`: BOLD5000-shaped RDM files (subjects CSI1-3, 10 ROIs) and
  ResNet-50 layer RDMs with a planted layer/ROI correspondence.
"""

from emolib.synthetic.bold5000 import (
    generate_bold5000,
    read_bold5000_truth,
    simulate_bold5000_rdms,
)
from emolib.synthetic.forrest import (
    find_truth,
    generate_annotations,
    generate_studyforrest,
    read_truth,
)

__all__ = [
    "find_truth", "generate_annotations", "generate_bold5000", "generate_studyforrest",
    "read_bold5000_truth", "read_truth", "simulate_bold5000_rdms",
]
