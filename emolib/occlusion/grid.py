"""The window grid of occlusion, shared by both engines: where windows start, how coarse
window drops spread back onto voxels, class means of maps, and the scored probability;
and :func:`merge_classes`, how the incremental engine groups windows of similar boxes.

Windows start at ``k * stride`` for ``k = 0 .. ceil((size - patch) / stride)`` in each
dimension; the last one may stick out of the volume and is then cut off at the border, so
every voxel is covered when ``stride <= patch``; a voxel's value is the sum of the drops of
the windows covering it divided by their count (Captum's ``Occlusion`` convention).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
import torch

__all__ = [
    "Region", "Triple", "as_triple", "as_tuple", "class_mean_maps", "merge_classes",
    "normalise_region", "spread_coarse_maps", "target_prob", "window_starts",
]

Triple = tuple[int, int, int]


Region = tuple[slice, slice, slice]


def as_tuple(value: int | Sequence[int], name: str, n: int = 3) -> tuple[int, ...]:
    """``value`` as ``n`` positive integers (an int is repeated)."""
    if isinstance(value, (int, np.integer)):
        out = (int(value),) * n
    else:
        out = tuple(int(v) for v in value)
    if len(out) != n or min(out) < 1:
        raise ValueError(f"{name} must be {n} positive integers, got {value!r}")
    return out


def as_triple(value: int | Sequence[int], name: str) -> Triple:
    return as_tuple(value, name, 3)  # type: ignore[return-value]


def normalise_region(region: Region | None, shape: Sequence[int]
                     ) -> tuple[tuple[int, ...], tuple[int, ...]]:
    shape = tuple(int(n) for n in shape)
    nd = len(shape)
    if region is None:
        return (0,) * nd, shape
    if len(region) != nd:
        raise ValueError(f"region must be {nd} slices, got {region!r}")
    lo, hi = [], []
    for sl, n in zip(region, shape, strict=True):
        if not isinstance(sl, slice) or sl.step not in (None, 1):
            raise ValueError(f"region must be {nd} slices with step 1, got {region!r}")
        a, b, _ = sl.indices(n)
        if b <= a:
            raise ValueError(f"region {region!r} is empty for a volume of shape {shape}")
        lo.append(a)
        hi.append(b)
    return tuple(lo), tuple(hi)


def window_starts(
    shape: Sequence[int],
    patch: int | Sequence[int] = (2, 2, 2),
    stride: int | Sequence[int] = (2, 2, 2),
    region: Region | None = None,
) -> tuple[np.ndarray, ...]:
    """Return the start voxels of the occlusion windows along each axis.

    Windows start at ``lo + k * stride`` for ``k = 0 .. ceil((n - patch) / stride)``, where
    ``[lo, lo + n)`` is the occluded range (the whole axis, or ``region``); the last window
    is cut off at ``lo + n`` if it sticks out (Captum's ``Occlusion`` grid).

    Parameters
    ----------
    shape : sequence of int
        Shape of the occluded axes: ``(X, Y, Z)`` of volumes, or ``(T, X, Y, Z)`` of windows
        of volumes (any number of axes; ``patch`` and ``stride`` then have as many).
    patch, stride : int or sequence of int
        Window shape and step, in voxels.
    region : tuple of slice, optional
        Restrict the windows to this box of voxels (tiled as if it were the whole volume).

    Returns
    -------
    tuple of numpy.ndarray
        One int64 array of window starts per axis.
    """
    nd = len(shape)
    shape = as_tuple(shape, "shape", nd)
    patch = as_tuple(patch, "patch", nd)
    stride = as_tuple(stride, "stride", nd)
    lo, hi = normalise_region(region, shape)
    out = []
    for a, b, p, s in zip(lo, hi, patch, stride, strict=True):
        n = b - a
        count = max(math.ceil((n - p) / s), 0) + 1
        starts = a + s * np.arange(count, dtype=np.int64)
        out.append(starts[starts < b])
    return tuple(out)  # type: ignore[return-value]


def spread_coarse_maps(
    coarse: np.ndarray,
    shape: Sequence[int],
    starts: tuple[np.ndarray, ...],
    patch: int | Sequence[int],
    region: Region | None = None,
) -> np.ndarray:
    """Turn per-window drops into voxel maps: each voxel gets the mean over its windows.

    Parameters
    ----------
    coarse : numpy.ndarray, shape (N, gx, gy, gz)
        Drop per window position (one grid axis per occluded axis).
    shape : sequence of int
        Shape of the occluded axes, ``(X, Y, Z)`` (or ``(T, X, Y, Z)``: any number).
    starts : tuple of numpy.ndarray
        Window starts along each axis (:func:`window_starts`); they must be evenly spaced.
    patch : int or sequence of int
        Window shape.
    region : tuple of slice, optional
        Windows are cut off at the end of this box (as in :func:`window_starts`).

    Returns
    -------
    numpy.ndarray, shape (N, X, Y, Z), float32
        Mean drop of the windows covering each voxel, 0 where none does.
    """
    nd = len(shape)
    shape = as_tuple(shape, "shape", nd)
    patch = as_tuple(patch, "patch", nd)
    _, hi = normalise_region(region, shape)
    coarse = np.asarray(coarse, dtype=np.float64)
    n = coarse.shape[0]
    grid = tuple(len(s) for s in starts)
    if coarse.shape[1:] != grid:
        raise ValueError(f"coarse has grid {coarse.shape[1:]}, the starts give {grid}")
    steps = [int(s[1] - s[0]) if len(s) > 1 else 1 for s in starts]
    for s, st in zip(starts, steps, strict=True):
        if len(s) > 1 and not np.all(np.diff(s) == st):
            raise ValueError("window starts must be evenly spaced")
    first = [int(s[0]) for s in starts]
    # accumulate on a canvas large enough for uncut windows, then cut at the region's end
    ext = [f + (g - 1) * st + p for f, g, st, p in zip(first, grid, steps, patch, strict=True)]
    canvas = [max(e, n_) for e, n_ in zip(ext, shape, strict=True)]
    total = np.zeros((n, *canvas))
    count = np.zeros(canvas)
    for offset in itertools.product(*(range(p) for p in patch)):
        sel = tuple(slice(f + d, f + d + (g - 1) * st + 1, st)
                    for f, d, g, st in zip(first, offset, grid, steps, strict=True))
        total[(slice(None), *sel)] += coarse
        count[sel] += 1
    for axis, h in enumerate(hi):  # windows are cut off at the end of the region
        cut = [slice(None)] * nd
        cut[axis] = slice(h, None)
        count[tuple(cut)] = 0
    inside = tuple(slice(0, n_) for n_ in shape)
    count = count[inside]
    total = total[(slice(None), *inside)]
    maps = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
    return maps.astype(np.float32)


def class_mean_maps(maps: np.ndarray, targets: Sequence[int], n_classes: int) -> np.ndarray:
    """Average occlusion maps per class.

    Parameters
    ----------
    maps : numpy.ndarray, shape (N, X, Y, Z)
        One map per volume.
    targets : sequence of int, length N
        Class of each map.
    n_classes : int
        Number of classes.

    Returns
    -------
    numpy.ndarray, shape (n_classes, X, Y, Z), float32
        Mean map of each class; NaN for a class without maps.
    """
    maps = np.asarray(maps)
    targets = np.asarray(targets, dtype=np.int64).reshape(-1)
    if len(targets) != len(maps):
        raise ValueError(f"{len(maps)} maps but {len(targets)} targets")
    if len(targets) and (targets.min() < 0 or targets.max() >= n_classes):
        raise ValueError(f"targets must lie in [0, {n_classes})")
    out = np.full((n_classes, *maps.shape[1:]), np.nan, dtype=np.float64)
    for c in range(n_classes):
        sel = targets == c
        if sel.any():
            out[c] = maps[sel].astype(np.float64).mean(axis=0)
    return out.astype(np.float32)


def target_prob(logits: torch.Tensor, target: int) -> torch.Tensor:
    return torch.softmax(logits, dim=1)[:, target]


def merge_classes(
    keys: list[np.ndarray], members: list[np.ndarray], cost: np.ndarray, at_least: int
) -> list[np.ndarray]:
    """Merge the classes of one axis until each has ``at_least`` windows (or one is left).

    ``keys[c]`` holds the box widths of class ``c`` in every layer (a merged class takes the
    wider of each); the smallest class goes into the one that adds the least arithmetic
    (``cost`` per position of each layer, times the windows that get wider boxes).
    """
    keys, members = list(keys), list(members)
    while len(keys) > 1 and min(len(m) for m in members) < at_least:
        a = min(range(len(keys)), key=lambda c: (len(members[c]), c))
        extra = []
        for c in range(len(keys)):
            wide = np.maximum(keys[a], keys[c])
            extra.append(np.inf if c == a else len(members[a]) * cost @ (wide - keys[a])
                         + len(members[c]) * cost @ (wide - keys[c]))  # fmt: skip
        b = int(np.argmin(extra))
        keys[b] = np.maximum(keys[a], keys[b])
        members[b] = np.sort(np.concatenate([members[a], members[b]]))
        del keys[a], members[a]
    return members
