"""Activations of any torch model, batched: named layers (forward hooks, or torchvision's
``create_feature_extractor`` for graph nodes) with :func:`extract_activations`, the pooled
features of a network with a ``features`` method (:func:`pooled_features`), and those of
held-out volumes, each by its own fold's model (:func:`features_by_fold`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from numpy.typing import DTypeLike

from emolib.models.folds import ModelForFold, iter_folds

__all__ = ["extract_activations", "features_by_fold", "pooled_features"]


def _iter_batches(inputs: Any, batch_size: int):
    import torch

    if isinstance(inputs, np.ndarray):
        inputs = torch.from_numpy(inputs)
    if isinstance(inputs, torch.Tensor):
        yield from torch.split(inputs, batch_size)
        return
    for batch in inputs:
        if isinstance(batch, (tuple, list)):
            batch = batch[0]
        if isinstance(batch, np.ndarray):
            batch = torch.from_numpy(batch)
        yield batch


def _reduce_activation(t: Any, reduce: str | int):
    import torch.nn.functional as F

    if reduce == "flatten" or t.ndim <= 2:
        return t.reshape(t.shape[0], -1)
    if reduce == "mean":
        return t.mean(dim=tuple(range(2, t.ndim)))
    if isinstance(reduce, int):
        pool = {3: F.adaptive_avg_pool1d, 4: F.adaptive_avg_pool2d, 5: F.adaptive_avg_pool3d}
        size = tuple(min(reduce, s) for s in t.shape[2:])  # never upsample a small layer
        return pool[t.ndim](t, size if t.ndim > 3 else size[0]).reshape(t.shape[0], -1)
    raise ValueError(f"reduce must be 'flatten', 'mean' or an int, not {reduce!r}")


def extract_activations(
    model: Any,
    inputs: Any,
    layers: Sequence[str],
    *,
    batch_size: int = 32,
    reduce: str | int = "flatten",
    backend: str = "hooks",
    device: str | None = None,
    dtype: DTypeLike = np.float32,
) -> dict[str, np.ndarray]:
    """Record the activations of named layers of a torch model.

    Parameters
    ----------
    model : torch.nn.Module
        Any model; layers are named as in ``model.named_modules()`` (e.g. ``conv1``,
        ``block1`` of :class:`emolib.models.cnn.EmotionCNN`; ``layer1`` of torchvision's ResNet).
    inputs : torch.Tensor, numpy.ndarray or iterable of batches
        Stimuli (N, ...); an iterable may yield tensors or ``(x, ...)`` tuples.
    layers : sequence of str
        Layer (module, or fx node) names.
    batch_size : int, default=32
        Batch size when ``inputs`` is one tensor/array.
    reduce : {"flatten", "mean"} or int, default="flatten"
        ``"flatten"`` keeps every unit; ``"mean"`` averages over spatial dimensions;
        an int average-pools every spatial dimension to at most that size first (memory at
        scale; a dimension that is already smaller is kept, never upsampled).
    backend : {"hooks", "fx"}, default="hooks"
        Forward hooks on modules, or torchvision's ``create_feature_extractor``.
    device : str, optional
        Device to run on (default: the model's).
    dtype : dtype, default=float32
        dtype of the returned arrays.

    Returns
    -------
    dict of str to numpy.ndarray
        ``{layer: (N, n_features)}``, in input order. The model is run in eval mode under
        ``torch.inference_mode`` and its training flag is restored.
    """
    import torch

    layers = list(layers)
    was_training = model.training
    model.eval()
    if device is None:
        try:
            device = next(model.parameters()).device
        except StopIteration:
            device = "cpu"
    store: dict[str, list[np.ndarray]] = {name: [] for name in layers}

    def keep(name: str, out: Any) -> None:
        t = _reduce_activation(out.detach(), reduce).to("cpu", torch.float32)
        store[name].append(np.array(t.numpy(), dtype=dtype, copy=True))

    handles = []
    extractor = None
    try:
        if backend == "hooks":
            modules = dict(model.named_modules())
            missing = [name for name in layers if name not in modules]
            if missing:
                raise ValueError(
                    f"model has no modules {missing}; it has e.g. {list(modules)[:12]}"
                )
            for name in layers:
                handles.append(
                    modules[name].register_forward_hook(
                        lambda _m, _i, out, name=name: keep(name, out)
                    )
                )
        elif backend == "fx":
            from torchvision.models.feature_extraction import create_feature_extractor

            extractor = create_feature_extractor(model, return_nodes={n: n for n in layers})
            extractor.eval()
        else:
            raise ValueError(f"backend must be 'hooks' or 'fx', not {backend!r}")
        with torch.inference_mode():
            for batch in _iter_batches(inputs, batch_size):
                batch = batch.to(device)
                if extractor is None:
                    model(batch)
                else:
                    for name, out in extractor(batch).items():
                        keep(name, out)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return {name: np.concatenate(chunks, axis=0) for name, chunks in store.items()}


@torch.inference_mode()
def pooled_features(model: torch.nn.Module, volumes: np.ndarray, batch_size: int = 32
                    ) -> np.ndarray:
    """The model's pooled features (``model.features``, 256-d for the EmotionCNN), eval mode.

    Parameters
    ----------
    model : torch.nn.Module
        A network with a ``features`` method (e.g. :class:`emolib.models.cnn.EmotionCNN`).
    volumes : numpy.ndarray, shape (N, X, Y, Z)
        Z-scored volumes.
    batch_size : int, default=32
        Volumes per forward pass.

    Returns
    -------
    numpy.ndarray, shape (N, n_features), float32
    """
    was = model.training
    model.eval()
    param = next(iter(model.parameters()))
    out = []
    try:
        for a in range(0, len(volumes), batch_size):
            x = torch.from_numpy(np.array(volumes[a:a + batch_size], dtype=np.float32))
            out.append(model.features(x[:, None].to(param.device, param.dtype)).float().cpu())
    finally:
        model.train(was)
    if not out:
        return np.zeros((0, 0), np.float32)
    return torch.cat(out).numpy()


def features_by_fold(
    rows: pd.DataFrame,
    volumes: np.ndarray,
    model_for_fold: ModelForFold,
    batch_size: int = 32,
    n_threads: int | None = None,
    device: str = "cpu",
) -> np.ndarray:
    """Pooled CNN features of held-out volumes, each computed by its own fold's model.

    Parameters
    ----------
    rows : pandas.DataFrame
        One row per volume with ``fold`` and ``sample`` (row of ``volumes``).
    volumes : numpy.ndarray, shape (n_samples, X, Y, Z)
        All prepared volumes.
    model_for_fold : callable
        ``model_for_fold(fold)`` -> model or path of its ``best.pt``.
    batch_size : int, default=32
        Volumes per forward pass.
    n_threads : int, optional
        Torch threads meanwhile (``None`` leaves the setting alone).
    device : str, default="cpu"
        Where a model loaded from a path is put.

    Returns
    -------
    numpy.ndarray, shape (len(rows), n_features), float32
        In the row order of ``rows``.
    """
    out: np.ndarray | None = None
    for batch in iter_folds(rows, volumes, model_for_fold, n_threads=n_threads, device=device):
        feats = pooled_features(batch.model, batch.volumes, batch_size)
        if out is None:
            out = np.empty((len(rows), feats.shape[1]), dtype=np.float32)
        out[batch.positions] = feats
    if out is None:
        raise ValueError("rows is empty")
    return out
