"""Generated data in exactly the real on-disk formats, with a planted ground truth.

- :mod:`emolib.synthetic.forrest`: a ds000113 ``ses-movie`` BIDS tree with emotion-driven
  BOLD responses in planted regions, and annotation CSVs in the Labs et al. format.
"""

from emolib.synthetic.forrest import (
    generate_annotations,
    generate_studyforrest,
    read_truth,
)

__all__ = ["generate_annotations", "generate_studyforrest", "read_truth"]
