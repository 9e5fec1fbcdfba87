"""Generated data in exactly the real on-disk formats, with a planted ground truth.

- :mod:`emolib.synthetic.forrest`: a ds000113 ``ses-movie`` BIDS tree with emotion-driven
  BOLD responses in planted regions, and annotation CSVs in the Labs et al. format.
- :mod:`emolib.synthetic.truth`: reading that dataset's planted truth back.
- :mod:`emolib.synthetic.bold5000`: BOLD5000-shaped RDM files (subjects CSI1-3, 10 ROIs) and
  ResNet-50 layer RDMs with a planted layer/ROI correspondence.
- :mod:`emolib.synthetic.bold5000_release`: the BOLD5000 Release 1.0 layout itself (per-trial
  ROI patterns in ``.h5``/``.mat`` for every TR, stimulus lists with ``rep_`` repeats, the
  stimulus images), planted on the layer RDMs of a network the caller computes on the images.
"""

from emolib.synthetic.bold5000 import (
    generate_bold5000,
    read_bold5000_truth,
    simulate_bold5000_rdms,
)
from emolib.synthetic.bold5000_release import (
    generate_bold5000_release,
    layer_sketch,
    read_bold5000_release_truth,
    same_sketch,
)
from emolib.synthetic.forrest import generate_annotations, generate_studyforrest
from emolib.synthetic.truth import find_truth, planted_profile, planted_responses, read_truth

__all__ = [
    "find_truth", "generate_annotations", "generate_bold5000", "generate_bold5000_release",
    "generate_studyforrest", "layer_sketch", "planted_profile", "planted_responses",
    "read_bold5000_release_truth",
    "read_bold5000_truth", "read_truth", "same_sketch", "simulate_bold5000_rdms",
]
