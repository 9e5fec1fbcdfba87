"""Occlusion in space and time: boxes of (time, x, y, z) blanked in windows of volumes.

The input of a window model is ``(T, X, Y, Z)`` (T consecutive volumes). A box of ``patch``
= ``(pt, px, py, pz)`` elements is set to ``fill`` at every position of the grid of
:func:`emolib.occlusion.grid.window_starts` (with ``stride``), the model runs on the occluded
window, and the drop of the target class's softmax probability is recorded; each element of
the map gets the mean drop of the boxes covering it. Number for number, Captum's
:class:`captum.attr.Occlusion` on input ``(1, T, X, Y, Z)`` with
``sliding_window_shapes=patch``, ``strides=stride`` and ``baselines=fill`` (a test checks it
to 1e-5). The engine is the plain batched one (any ``nn.Module`` taking ``(N, T, X, Y, Z)``).

:func:`temporal_profile` reads *when* from the maps: per class, the mean map value at each
time offset of the window (over the voxels of a mask, and over the windows of that class).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from emolib.occlusion.grid import as_tuple, spread_coarse_maps, target_prob, window_starts

__all__ = ["spacetime_occlusion", "temporal_profile"]


def spacetime_occlusion(
    model: nn.Module,
    windows: np.ndarray | torch.Tensor,
    targets: Sequence[int],
    patch: int | Sequence[int] = (1, 2, 2, 2),
    stride: int | Sequence[int] | None = None,
    fill: float = 0.0,
    batch_size: int = 32,
    progress: bool = False,
) -> np.ndarray:
    """Occlusion maps of windows of volumes, in space and time.

    Parameters
    ----------
    model : torch.nn.Module
        A classifier of windows ``(N, T, X, Y, Z)`` returning logits (put in eval mode here
        for the duration; its parameters' device is used).
    windows : array, shape (N, T, X, Y, Z)
        The windows (z-scored volumes, as the model was trained on).
    targets : sequence of int
        The class scored for each window.
    patch : int or sequence of 4 int, default=(1, 2, 2, 2)
        Box shape in ``(time, x, y, z)`` elements: one volume of the window, 2 voxels a side.
    stride : int or sequence of 4 int, optional
        Box step; default ``patch`` (boxes tile the window).
    fill : float, default=0.0
        Value written into the box (0: the mean after z-scoring).
    batch_size : int, default=32
        Occluded copies per forward pass.
    progress : bool, default=False
        A bar over windows.

    Returns
    -------
    numpy.ndarray, shape (N, T, X, Y, Z), float32
        Mean drop of the target's probability over the boxes covering each element.
    """
    x = torch.as_tensor(np.asarray(windows, dtype=np.float32)
                        if not isinstance(windows, torch.Tensor) else windows).float()
    if x.ndim != 5:
        raise ValueError(f"windows must be (N, T, X, Y, Z), got shape {tuple(x.shape)}")
    targets = [int(t) for t in targets]
    if len(targets) != len(x):
        raise ValueError(f"{len(targets)} targets for {len(x)} windows")
    shape = tuple(x.shape[1:])
    patch = as_tuple(patch, "patch", 4)
    stride = patch if stride is None else as_tuple(stride, "stride", 4)
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    starts = window_starts(shape, patch, stride)
    boxes = np.stack(np.meshgrid(*starts, indexing="ij"), axis=-1).reshape(-1, 4)
    grid = tuple(len(s) for s in starts)
    device = next(model.parameters()).device
    modes = {m: m.training for m in model.modules()}  # each module's own, restored after
    model.eval()
    coarse = np.zeros((len(x), len(boxes)))
    try:
        with torch.inference_mode():
            for k in tqdm(range(len(x)), desc="space-time occlusion", disable=not progress):
                window = x[k].to(device)
                base = float(target_prob(model(window[None]), targets[k]))
                for b0 in range(0, len(boxes), batch_size):
                    chunk = boxes[b0:b0 + batch_size]
                    batch = window.expand(len(chunk), *shape).clone()
                    for j, (t, i, jj, kk) in enumerate(chunk):
                        batch[j, t:t + patch[0], i:i + patch[1], jj:jj + patch[2],
                              kk:kk + patch[3]] = fill
                    prob = target_prob(model(batch), targets[k])
                    coarse[k, b0:b0 + len(chunk)] = base - prob.double().cpu().numpy()
    finally:
        for m, mode in modes.items():
            m.training = mode
    return spread_coarse_maps(coarse.reshape(len(x), *grid), shape, starts, patch)


def temporal_profile(maps: np.ndarray, targets: Sequence[int], n_classes: int,
                     mask: np.ndarray | None = None) -> np.ndarray:
    """Per class, the mean occlusion drop at each time offset of the window.

    Parameters
    ----------
    maps : numpy.ndarray, shape (N, T, X, Y, Z)
        :func:`spacetime_occlusion` maps.
    targets : sequence of int
        Each map's class.
    n_classes : int
        Number of classes.
    mask : numpy.ndarray of bool, shape (X, Y, Z), optional
        Voxels averaged over (default all).

    Returns
    -------
    numpy.ndarray, shape (n_classes, T)
        NaN for a class without maps.
    """
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim != 5:
        raise ValueError(f"maps must be (N, T, X, Y, Z), got shape {maps.shape}")
    targets = np.asarray(targets, dtype=int)
    if len(targets) != len(maps):
        raise ValueError(f"{len(targets)} targets for {len(maps)} maps")
    if mask is None:
        mask = np.ones(maps.shape[2:], dtype=bool)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != maps.shape[2:]:
        raise ValueError(f"mask has shape {mask.shape}, the maps' volumes {maps.shape[2:]}")
    per_window = maps[:, :, mask].mean(axis=2)  # (N, T)
    out = np.full((n_classes, maps.shape[1]), np.nan)
    for c in range(n_classes):
        if (targets == c).any():
            out[c] = per_window[targets == c].mean(axis=0)
    return out
