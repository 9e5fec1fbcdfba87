"""torchvision's ResNet-50, its ImageNet preprocessing and batches of image files.

Generic (no study, no file layout): :func:`load_resnet50` builds the network from a local
weights file, torchvision's cache or a seeded random initialisation (never a download),
:func:`make_image_transform` the ImageNet preprocessing, :func:`iter_image_batches` the
preprocessed batches of a list of image files, and :data:`CONV1_NODES` names the honest
choices of the network's first stage as torchvision fx nodes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from emolib.errors import InputDataError

__all__ = [
    "CONV1_NODES", "IMAGENET_MEAN", "IMAGENET_STD", "iter_image_batches", "load_resnet50",
    "make_image_transform",
]

#: ImageNet normalisation (channel means) of torchvision's ResNet-50 weights.
IMAGENET_MEAN = (0.485, 0.456, 0.406)

#: ImageNet normalisation (channel standard deviations) of torchvision's ResNet-50 weights.
IMAGENET_STD = (0.229, 0.224, 0.225)

#: The first stage of torchvision's ResNet-50 as fx node names (what
#: ``torchvision.models.feature_extraction.get_graph_node_names`` lists), with the shape of
#: one image's activation at 224 x 224 input:
#:
#: - ``"conv1"``: the raw 7x7/2 convolution, *before* batch norm and ReLU (64 x 112 x 112 =
#:   802,816 units); also what a forward hook on the module ``model.conv1`` records;
#: - ``"relu"``: after ``bn1`` and the ReLU (64 x 112 x 112 = 802,816 units);
#: - ``"maxpool"``: after the 3x3/2 max pooling (64 x 56 x 56 = 200,704 units), the input of
#:   ``layer1``.
CONV1_NODES: dict[str, str] = {
    "conv1": "raw convolution output, before batch norm (64 x 112 x 112)",
    "relu": "after bn1 and ReLU (64 x 112 x 112)",
    "maxpool": "after bn1, ReLU and 3x3/2 max pooling (64 x 56 x 56)",
}


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
    """torchvision transform of ResNet-50: resize, centre crop, tensor, ImageNet normalisation.

    Parameters
    ----------
    image_size : int, default=224
        Side of the centre crop; the shorter side is first resized to
        ``round(image_size * 256 / 224)``.

    Returns
    -------
    torchvision.transforms.Compose
        PIL image -> float tensor (3, image_size, image_size).
    """
    from torchvision import transforms

    return transforms.Compose(
        [
            transforms.Resize(int(round(image_size * 256 / 224))),
            transforms.CenterCrop(image_size),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def iter_image_batches(
    files: Sequence[str | os.PathLike], transform: Any, batch_size: int
) -> Iterator[Any]:
    """Yield batches of preprocessed images, in the order of ``files``.

    Parameters
    ----------
    files : sequence of path-like
        Image files (anything PIL reads); each is converted to RGB.
    transform : callable
        PIL image -> float tensor (C, H, W), e.g. :func:`make_image_transform`.
    batch_size : int
        Images per batch (the last batch may be smaller).

    Yields
    ------
    torch.Tensor, shape (b, C, H, W), float32

    Raises
    ------
    emolib.errors.InputDataError
        An image cannot be opened or decoded (the message names the file).
    """
    import torch
    from PIL import Image

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, not {batch_size}")
    files = list(files)
    for s in range(0, len(files), batch_size):
        tensors = []
        for p in files[s : s + batch_size]:
            try:
                with Image.open(p) as im:
                    tensors.append(transform(im.convert("RGB")))
            except (OSError, ValueError) as exc:
                raise InputDataError(p, f"cannot read image: {exc}") from exc
        yield torch.stack(tensors).float()
