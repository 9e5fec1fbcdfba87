"""ResNet-50 layer RDMs of the stimulus images.

:func:`load_resnet50` builds torchvision's ResNet-50 (weights from a file, torchvision's cache,
or a seeded random initialisation), :func:`make_image_transform` the ImageNet preprocessing,
:func:`list_images` the images of a folder, and :func:`calc_resnet50_rdms` the layer RDMs
(``conv1``, ``layer1`` .. ``layer4``) with the image names as pattern ids, through
:func:`emolib.rsa.calc_rdms_from_model`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import DTypeLike
from rsatoolbox.rdm import RDMs

from emolib.errors import InputDataError
from emolib.io.bold5000 import LAYERS
from emolib.rsa import PATTERN_KEY, calc_rdms_from_model

__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "IMAGE_EXTENSIONS", "calc_resnet50_rdms",
    "list_images", "load_resnet50", "make_image_transform",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")


#: ImageNet normalisation of torchvision's ResNet-50 weights.
IMAGENET_MEAN = (0.485, 0.456, 0.406)


IMAGENET_STD = (0.229, 0.224, 0.225)


def load_resnet50(weights: Any = None, *, seed: int = 0) -> Any:
    """Build torchvision's ResNet-50, never downloading anything.

    Parameters
    ----------
    weights : None, str or path-like
        ``None``: random initialisation (seeded by ``seed``). A path to a local state dict
        (``.pth``). A torchvision weights name (``"IMAGENET1K_V1"``, ``"IMAGENET1K_V2"``,
        ``"DEFAULT"``): loaded from the torch hub cache if the file is there, else
        :class:`FileNotFoundError`.
    seed : int, default=0
        Seed of the random initialisation.

    Returns
    -------
    torch.nn.Module
        The model in eval mode.
    """
    import torch
    from torchvision.models import ResNet50_Weights, resnet50

    if weights is None:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = resnet50(weights=None)
        return model.eval()
    model = resnet50(weights=None)
    if isinstance(weights, str) and not Path(weights).exists():
        try:
            w = ResNet50_Weights.DEFAULT if weights == "DEFAULT" else ResNet50_Weights[weights]
        except KeyError as exc:
            raise FileNotFoundError(
                f"no weights file or torchvision weights named {weights!r}"
            ) from exc
        cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(w.url)
        if not cached.is_file():
            raise FileNotFoundError(
                f"{cached} is not in the torch hub cache; this project never downloads "
                "weights: pass a local file path or weights=None"
            )
        weights = cached
    state = torch.load(Path(weights), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    model.load_state_dict(state)
    return model.eval()


def make_image_transform(image_size: int = 224) -> Any:
    """torchvision transform of ResNet-50: resize, centre crop, tensor, ImageNet normalisation."""
    from torchvision import transforms

    return transforms.Compose(
        [
            transforms.Resize(int(round(image_size * 256 / 224))),
            transforms.CenterCrop(image_size),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def list_images(image_dir: str | os.PathLike) -> list[Path]:
    """Image files of a folder (``.jpg``, ``.jpeg``, ``.png``, ``.bmp``), sorted by name."""
    image_dir = Path(image_dir)
    if not image_dir.is_dir():
        raise InputDataError(image_dir, "image folder does not exist")
    files = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise InputDataError(image_dir, f"no images ({', '.join(IMAGE_EXTENSIONS)})")
    return files


def calc_resnet50_rdms(
    image_dir: str | os.PathLike,
    *,
    weights: Any = None,
    layers: Sequence[str] = LAYERS,
    image_size: int = 224,
    batch_size: int = 16,
    reduce: str | int = "flatten",
    method: str = "correlation",
    pattern_key: str = PATTERN_KEY,
    device: str | None = None,
    seed: int = 0,
    dtype: DTypeLike = np.float64,
) -> RDMs:
    """Compute ResNet-50 layer RDMs from a folder of images (ids = file names).

    Parameters
    ----------
    image_dir : str or path-like
        Folder of images (see :func:`list_images`).
    weights : None, str, path-like or torch.nn.Module
        See :func:`load_resnet50`; a model instance is used as is.
    layers : sequence of str, default=LAYERS
        Nodes of ResNet-50, read with torchvision's ``create_feature_extractor``.
    image_size : int, default=224
        Crop size of :func:`make_image_transform`.
    batch_size : int, default=16
        Images per forward pass.
    reduce : {"flatten", "mean"} or int, default="flatten"
        See :func:`emolib.models.extract_activations`. ``"flatten"`` keeps all units, which
        needs n_images x 800k floats for ``conv1``; pool (e.g. ``reduce=7``) at scale.
    method : str, default="correlation"
        Dissimilarity.
    pattern_key : str, default="id"
        Pattern descriptor for the ids.
    device : str, optional
        Torch device.
    seed : int, default=0
        Seed of random weights (``weights=None``).
    dtype : dtype, default=float64
        dtype of the dissimilarities.

    Returns
    -------
    rsatoolbox.rdm.RDMs
        One RDM per layer, ``rdm_descriptors`` ``layer`` and ``model="resnet50"``.
    """
    import torch
    from PIL import Image

    files = list_images(image_dir)
    transform = make_image_transform(image_size)
    model = weights if isinstance(weights, torch.nn.Module) else load_resnet50(weights, seed=seed)

    def batches():
        for s in range(0, len(files), batch_size):
            tensors = []
            for p in files[s : s + batch_size]:
                try:
                    with Image.open(p) as im:
                        tensors.append(transform(im.convert("RGB")))
                except OSError as exc:
                    raise InputDataError(p, f"cannot read image: {exc}") from exc
            yield torch.stack(tensors)

    return calc_rdms_from_model(
        model, batches(), [p.name for p in files], layers, method=method,
        pattern_key=pattern_key, reduce=reduce, backend="fx", device=device,
        rdm_descriptors={"model": "resnet50"}, dtype=dtype,
    )
