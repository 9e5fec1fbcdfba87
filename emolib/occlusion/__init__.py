"""Occlusion: exact engines (they know nothing of the study) and the maps built with them.

- :mod:`~emolib.occlusion.grid`: the window grid, spreading window drops onto voxels.
- :mod:`~emolib.occlusion.engine`: :func:`occlusion_map`, batched for any model or
  incremental (:mod:`~emolib.occlusion.incremental`) for :class:`emolib.models.EmotionCNN`,
  both equal to Captum's ``Occlusion``.
- :mod:`~emolib.occlusion.spacetime`: :func:`spacetime_occlusion` of windows of volumes
  (boxes in time and space, equal to Captum's ``Occlusion`` on 4-D input) and
  :func:`temporal_profile`, when the model looks.
- :mod:`~emolib.occlusion.maps`: selection of volumes to explain, occlusion per fold, NIfTI
  class maps, top voxels, per-voxel drop vectors, localisation against known regions.

Data flow: predictions -> :func:`select_confident` -> :func:`occlude_by_fold` (engine) ->
class maps -> NIfTI / top voxels / UMAP inputs / localisation.
"""

from emolib.occlusion.engine import OcclusionResult, occlusion_map
from emolib.occlusion.grid import class_mean_maps, spread_coarse_maps, window_starts
from emolib.occlusion.incremental import supports_incremental, why_not_incremental
from emolib.occlusion.maps import (
    analysis_mask,
    class_map_images,
    label_voxels,
    localisation_matrix,
    localisation_scores,
    occlude_by_fold,
    save_class_maps,
    select_confident,
    top_voxels,
    voxel_drop_vectors,
)
from emolib.occlusion.spacetime import spacetime_occlusion, temporal_profile

__all__ = [
    "OcclusionResult", "analysis_mask", "class_map_images", "class_mean_maps", "label_voxels",
    "localisation_matrix", "localisation_scores", "occlude_by_fold", "occlusion_map",
    "save_class_maps", "select_confident", "spacetime_occlusion", "spread_coarse_maps",
    "supports_incremental", "temporal_profile", "top_voxels", "voxel_drop_vectors",
    "why_not_incremental", "window_starts",
]
