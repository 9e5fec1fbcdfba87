"""Networks and what is done with any torch model: the original 3D CNN, deterministic
resumable training, feature extraction, and the loop over cross-validation folds.

A generic engine: nothing here knows of either study.

- :mod:`~emolib.models.cnn`: :class:`EmotionCNN`, the original ``Bigger3DCNN``.
- :mod:`~emolib.models.spacetime`: :class:`SpaceTimeCNN`, the (2+1)D network for windows of
  volumes (time as channels is :class:`EmotionCNN` with ``in_channels=T``).
- :mod:`~emolib.models.factory`: :func:`build_model`, either network from its name.
- :mod:`~emolib.models.train`: :func:`train_model` (AdamW, cosine schedule, early stopping,
  atomic per-epoch checkpoints), :func:`load_trained`, batched evaluation.
- :mod:`~emolib.models.features`: activations of named layers (hooks or torchvision's fx
  extraction), pooled features, features of held-out volumes by their own fold's model.
- :mod:`~emolib.models.folds`: :func:`iter_folds`, the one loop over folds that occlusion,
  features and network RDMs share.
- :mod:`~emolib.models.identity`: :func:`model_digest`, what stores of a model's results are
  keyed by.
"""

from emolib.models.cnn import EmotionCNN, SeparableBlock3d, count_parameters
from emolib.models.factory import ARCHITECTURES, build_model
from emolib.models.features import extract_activations, features_by_fold, pooled_features
from emolib.models.folds import (
    FoldBatch,
    ModelForFold,
    ModelSource,
    iter_folds,
    load_model,
    torch_threads,
)
from emolib.models.identity import model_digest
from emolib.models.spacetime import SpaceTimeCNN
from emolib.models.train import (
    TrainConfig,
    TrainResult,
    autocast,
    config_from_dict,
    evaluate_batches,
    load_trained,
    resolve_device,
    to_tensor,
    train_model,
)

__all__ = [
    "ARCHITECTURES", "EmotionCNN", "FoldBatch", "ModelForFold", "ModelSource",
    "SeparableBlock3d", "SpaceTimeCNN", "TrainConfig", "TrainResult", "autocast",
    "build_model", "config_from_dict", "count_parameters", "evaluate_batches",
    "extract_activations", "features_by_fold", "iter_folds", "load_model", "load_trained",
    "model_digest", "pooled_features", "resolve_device", "to_tensor", "train_model",
    "torch_threads",
]
