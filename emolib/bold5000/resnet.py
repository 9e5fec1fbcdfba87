"""ResNet-50 layer RDMs of the stimulus images.

The network and its preprocessing are generic and live in :mod:`emolib.models.resnet`
(:func:`load_resnet50`, :func:`make_image_transform`, :data:`CONV1_NODES`, re-exported here
under the same names); :func:`list_images` lists the images of a folder, and
:func:`calc_resnet50_rdms` computes the layer RDMs (``conv1``, ``layer1`` .. ``layer4``) with the
image names as pattern ids: in memory through :func:`emolib.rsa.calc_rdms_from_model` (small
jobs), or with the activations streamed to disk through :func:`emolib.rsa.calc_rdms_streamed`
(BOLD5000's 4916 images at 224 x 224, exact, bounded memory).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import DTypeLike
from rsatoolbox.rdm import RDMs

from emolib.errors import InputDataError
from emolib.io.bold5000 import LAYERS
from emolib.models.resnet import (
    CONV1_NODES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    iter_image_batches,
    load_resnet50,
    make_image_transform,
)
from emolib.rsa import PATTERN_KEY, calc_rdms_from_model, calc_rdms_streamed

__all__ = [
    "CONV1_NODES", "IMAGENET_MEAN", "IMAGENET_STD", "IMAGE_EXTENSIONS", "calc_resnet50_rdms",
    "list_images", "load_resnet50", "make_image_transform",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")


def list_images(image_dir: str | os.PathLike) -> list[Path]:
    """Image files of a folder (``.jpg``, ``.jpeg``, ``.png``, ``.bmp``), sorted by name."""
    image_dir = Path(image_dir)
    if not image_dir.is_dir():
        raise InputDataError(image_dir, "image folder does not exist")
    files = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise InputDataError(image_dir, f"no images ({', '.join(IMAGE_EXTENSIONS)})")
    return files



def _resolve_images(images: Any, ids: Sequence | None) -> tuple[list[Path], list]:
    if isinstance(images, (str, os.PathLike)):
        files = list_images(images)
    else:
        files = [Path(p) for p in images]
        if not files:
            raise ValueError("images is an empty sequence")
        missing = [p for p in files if not p.is_file()]
        if missing:
            raise InputDataError(missing[0], f"image file does not exist ({len(missing)} "
                                             "missing in all)")
    names = [p.name for p in files] if ids is None else list(ids)
    if len(names) != len(files):
        raise ValueError(f"{len(names)} ids for {len(files)} images")
    return files, names


def _images_key(files: Sequence[Path], transform: Any) -> str:
    """Hash of the images' contents (in order) and of the transform's parameters."""
    h = hashlib.blake2b(digest_size=16)
    for p in files:
        with open(p, "rb") as f:
            h.update(hashlib.file_digest(f, "blake2b").digest())
    h.update(json.dumps([repr(transform), IMAGENET_MEAN, IMAGENET_STD]).encode())
    return h.hexdigest()


def calc_resnet50_rdms(
    images: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    ids: Sequence | None = None,
    weights: Any = None,
    layers: Sequence[str] | None = None,
    conv1_node: str = "conv1",
    image_size: int = 224,
    batch_size: int = 16,
    reduce: str | int = "flatten",
    method: str = "correlation",
    pattern_key: str = PATTERN_KEY,
    device: str | None = None,
    seed: int = 0,
    dtype: DTypeLike = np.float64,
    store_dir: str | os.PathLike | None = None,
    store_dtype: DTypeLike = "float32",
    memory_limit_gb: float = 2.0,
    progress: bool = False,
    resume: bool = True,
) -> RDMs:
    """Compute ResNet-50 layer RDMs of images (ids = file names).

    Which first stage: the layer called ``conv1`` in the original study's RDM files (the
    release ships only precomputed RDMs, so its exact node cannot be read from them) is
    taken to be what its name says in torchvision, the module ``model.conv1``: the raw
    convolution before batch norm and ReLU (802,816 units at 224 x 224), the default here.
    ``conv1_node="relu"`` (after bn1 + ReLU) or ``"maxpool"`` (56 x 56, the input of
    ``layer1``) choose another stage of :data:`CONV1_NODES`; the RDM's ``layer`` descriptor
    then names that node, never ``conv1``.

    Parameters
    ----------
    images : str, path-like or sequence of path-like
        A folder of images (see :func:`list_images`, sorted by name) or the image files in
        the order wanted.
    ids : sequence, optional
        One unique id per image; default: the file names.
    weights : None, str, path-like or torch.nn.Module
        See :func:`load_resnet50`; a model instance is used as is.
    layers : sequence of str, optional
        fx nodes of ResNet-50 (``torchvision.models.feature_extraction``), named as given in
        the ``layer`` descriptor. Default: ``(conv1_node, "layer1", ..., "layer4")``.
    conv1_node : {"conv1", "relu", "maxpool"}, default="conv1"
        First stage of the default layers (see :data:`CONV1_NODES`); only with
        ``layers=None``.
    image_size : int, default=224
        Crop size of :func:`make_image_transform`.
    batch_size : int, default=16
        Images per forward pass.
    reduce : {"flatten", "mean"} or int, default="flatten"
        See :func:`emolib.models.extract_activations` (in-memory path only; the streamed
        path keeps every unit). ``"flatten"`` in memory needs n_images x 2.3M float32 for
        conv1..layer4 (45 GB at 4916 images): use ``store_dir`` at that scale.
    method : str, default="correlation"
        Dissimilarity (``"correlation"`` or ``"euclidean"`` when streamed).
    pattern_key : str, default="id"
        Pattern descriptor for the ids.
    device : str, optional
        Torch device.
    seed : int, default=0
        Seed of random weights (``weights=None``).
    dtype : dtype, default=float64
        dtype of the dissimilarities.
    store_dir : str or path-like, optional
        ``None``: activations in memory (small jobs). A folder: activations streamed to disk
        there, resumable (see :func:`emolib.rsa.calc_rdms_streamed`; the key covers the
        images' contents, the transform, the weights, ids, layers and method).
    store_dtype, memory_limit_gb, resume
        See :func:`emolib.rsa.calc_rdms_streamed` (with ``store_dir`` only).
    progress : bool, default=False
        Progress bars (with ``store_dir``).

    Returns
    -------
    rsatoolbox.rdm.RDMs
        One RDM per layer, ``rdm_descriptors`` ``layer`` (the node names) and
        ``model="resnet50"``.
    """
    import torch

    if layers is None:
        if conv1_node not in CONV1_NODES:
            raise ValueError(f"conv1_node must be one of {list(CONV1_NODES)}, "
                             f"not {conv1_node!r}")
        layers = (conv1_node, *LAYERS[1:])
    elif conv1_node != "conv1":
        raise ValueError("give either layers or conv1_node, not both")
    layers = list(layers)
    files, names = _resolve_images(images, ids)
    transform = make_image_transform(image_size)
    model = weights if isinstance(weights, torch.nn.Module) else load_resnet50(weights, seed=seed)
    if store_dir is None:
        return calc_rdms_from_model(
            model, iter_image_batches(files, transform, batch_size), names, layers,
            method=method, pattern_key=pattern_key, reduce=reduce, backend="fx",
            device=device, rdm_descriptors={"model": "resnet50"}, dtype=dtype,
        )
    if reduce != "flatten":
        raise ValueError("with store_dir the RDMs keep every unit: reduce must be 'flatten'")
    return calc_rdms_streamed(
        model, lambda start: iter_image_batches(files[start:], transform, batch_size), names,
        layers, store_dir=store_dir, method=method, store_dtype=store_dtype,
        memory_limit_gb=memory_limit_gb, backend="fx", device=device,
        pattern_key=pattern_key, rdm_descriptors={"model": "resnet50"}, dtype=dtype,
        progress=progress, resume=resume, input_key=_images_key(files, transform),
    )
