"""The ResNet-50 vs BOLD5000 study: layer RDMs of the stimuli, summaries, best layers and the
recovery of a planted hierarchy.

The release's files are read by :mod:`emolib.io.bold5000` (whose names of subjects, ROIs,
layers and ROI systems are re-exported here), the RDMs are compared with :mod:`emolib.rsa`.

- :mod:`~emolib.bold5000.resnet`: ResNet-50 (torchvision) and its layer RDMs from an image
  folder.
- :mod:`~emolib.bold5000.analysis`: the data summary, the best layer per ROI, and the check
  that a planted layer/ROI hierarchy is found.
"""

from emolib.bold5000.analysis import check_recovery, find_best_layers, summarize_bold5000
from emolib.bold5000.resnet import (
    calc_resnet50_rdms,
    list_images,
    load_resnet50,
    make_image_transform,
)
from emolib.io.bold5000 import (
    LAYERS,
    ROI_AREAS,
    ROIS,
    SUBJECTS,
    SYSTEMS,
    roi_area,
    roi_system,
)

__all__ = [
    "LAYERS", "ROIS", "ROI_AREAS", "SUBJECTS", "SYSTEMS", "calc_resnet50_rdms",
    "check_recovery", "find_best_layers", "list_images", "load_resnet50", "make_image_transform",
    "roi_area", "roi_system", "summarize_bold5000",
]
