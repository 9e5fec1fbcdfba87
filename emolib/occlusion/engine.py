"""Occlusion maps: the drop of the target class's probability when a patch is blanked.

For every volume, a box of ``patch`` voxels is set to ``fill`` (0, the mean after
z-scoring) at every position of a regular grid (:mod:`emolib.occlusion.grid`), the model is
run on the occluded volume, and the drop of the softmax probability of the target class is
recorded (``coarse``, one value per window position). Each voxel then gets the mean drop over
the windows that cover it (``maps``). This is, number for number, what Captum's
:class:`captum.attr.Occlusion` computes with the target's softmax probability as forward
function, ``sliding_window_shapes=(C, *patch)``, ``strides=(1, *stride)`` and
``baselines=fill`` (the tests check it to 1e-5).

Two engines compute the drops:

``"batched"``
    Plain batched occlusion for any ``nn.Module``: ``batch_size`` occluded copies of the
    volume per forward pass (run on a ``channels_last_3d`` copy of the model when it has 3-D
    convolutions and no forward hooks, about twice as fast on CPU).
``"incremental"``
    For :class:`emolib.models.EmotionCNN`, exact and many times faster
    (:mod:`emolib.occlusion.incremental`).

``method="auto"`` picks the incremental engine whenever it computes the model exactly (an
``EmotionCNN`` of the original structure, without hooks or replaced ``forward`` methods, in
eval mode: :func:`~emolib.occlusion.incremental.why_not_incremental`), else the batched one,
with a :class:`UserWarning` naming the reason when the model is an ``EmotionCNN``. The engine
knows nothing of the study.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

if TYPE_CHECKING:
    import pandas

from emolib.errors import InputDataError
from emolib.models.cnn import EmotionCNN
from emolib.occlusion.grid import (
    Region,
    Triple,
    as_triple,
    normalise_region,
    spread_coarse_maps,
    target_prob,
    window_starts,
)
from emolib.occlusion.incremental import IncrementalOcclusion, why_not_incremental

__all__ = [
    "OcclusionResult", "occlusion_map",
]


@dataclass(frozen=True)
class OcclusionResult:
    """Occlusion maps of a set of volumes.

    Attributes
    ----------
    maps : numpy.ndarray, shape (N, X, Y, Z), float32
        Per voxel, the mean drop of the target's probability over the windows covering it
        (0 where no window covers it, e.g. outside ``region``).
    coarse : numpy.ndarray, shape (N, gx, gy, gz), float32
        The drop for each window position (window ``(i, j, k)`` starts at voxel
        ``(starts[0][i], starts[1][j], starts[2][k])``).
    base_prob : numpy.ndarray, shape (N,), float32
        Softmax probability of the target class on the unoccluded volume.
    targets : numpy.ndarray, shape (N,), int64
        Target class of each volume.
    starts : tuple of numpy.ndarray
        Start voxel of the windows along each axis.
    patch, stride : tuple of int
        Window shape and step.
    fill : float
        Value written into the occluded patch.
    method : str
        Engine that computed the drops, ``"incremental"`` or ``"batched"``.
    reuse : pandas.DataFrame or None
        With a store (:func:`emolib.occlusion.occlude_by_fold`'s ``store_dir``), one row per
        part of the job: ``fold``, ``part``, ``volumes`` and ``status`` (``"reuse"``,
        ``"new"`` or ``"stale"``: what this call did with it); otherwise None.
    """

    maps: np.ndarray
    coarse: np.ndarray
    base_prob: np.ndarray
    targets: np.ndarray
    starts: tuple[np.ndarray, np.ndarray, np.ndarray]
    patch: Triple
    stride: Triple
    fill: float
    method: str
    reuse: pandas.DataFrame | None = None

    @property
    def grid_shape(self) -> Triple:
        """Number of window positions along each axis, ``(gx, gy, gz)``."""
        return tuple(len(s) for s in self.starts)  # type: ignore[return-value]


def _batched_drops(
    model: nn.Module,
    x: torch.Tensor,
    target: int,
    bounds: list[tuple[np.ndarray, np.ndarray]],
    fill: float,
    batch_size: int,
    bar: tqdm,
) -> tuple[np.ndarray, float]:
    """Drops of one volume ``x`` (1, C, X, Y, Z), flat over the window grid (C order)."""
    base = float(target_prob(model(x), target)[0])
    grid = tuple(len(s) for s, _ in bounds)
    n_win = int(np.prod(grid))
    flat = np.arange(n_win)
    ijk = np.unravel_index(flat, grid)
    box = [(bounds[d][0][ijk[d]], bounds[d][1][ijk[d]]) for d in range(3)]
    drops = np.empty(n_win, dtype=np.float64)
    for first in range(0, n_win, batch_size):
        last = min(first + batch_size, n_win)
        xb = x.repeat(last - first, 1, 1, 1, 1)
        for b, w in enumerate(range(first, last)):
            xb[b, :, box[0][0][w] : box[0][1][w], box[1][0][w] : box[1][1][w],
               box[2][0][w] : box[2][1][w]] = fill  # fmt: skip
        prob = target_prob(model(xb), target)
        drops[first:last] = (base - prob.double()).cpu().numpy()
        bar.update(last - first)
    return drops, base


def _has_forward_hooks(model: nn.Module) -> bool:
    """Whether a forward (pre-)hook is registered on a module of ``model`` or globally."""
    glob = torch.nn.modules.module
    if any(getattr(glob, a, None) for a in ("_global_forward_hooks", "_global_forward_pre_hooks")):
        return True
    return any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def _channels_last_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with 5-D weights in ``channels_last_3d`` (about 2x faster 3-D
    convolutions on CPU here), or ``model`` itself if it has none, cannot be copied, or has
    forward hooks (a hook may tell the modules apart by identity, which a copy changes)."""
    if not any(p.dim() == 5 for p in model.parameters()) or _has_forward_hooks(model):
        return model
    try:
        return copy.deepcopy(model).to(memory_format=torch.channels_last_3d)
    except Exception:  # noqa: BLE001 - any failure: use the model as it is
        return model


def _incremental_refusal(model: nn.Module) -> str | None:
    """:func:`why_not_incremental` for the model as :func:`occlusion_map` runs it, in eval
    mode (the training flags are restored)."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        return why_not_incremental(model)
    finally:
        for m, flag in flags:
            m.training = flag


def _as_volumes(volumes: np.ndarray | torch.Tensor, in_channels: int | None) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(volumes) if not torch.is_tensor(volumes) else volumes)
    if x.dim() == 4:
        x = x[:, None]
    if x.dim() != 5:
        raise ValueError(
            f"volumes must have shape (N, X, Y, Z) or (N, C, X, Y, Z), got {tuple(x.shape)}"
        )
    if in_channels is not None and x.shape[1] != in_channels:
        raise ValueError(f"the model expects {in_channels} channels, volumes have {x.shape[1]}")
    if not torch.is_floating_point(x):
        x = x.float()
    if not bool(torch.isfinite(x).all()):
        raise InputDataError(None, "volumes contain NaN or infinite values")
    return x


def occlusion_map(
    model: nn.Module,
    volumes: np.ndarray | torch.Tensor,
    targets: int | Sequence[int] | np.ndarray,
    patch: int | Sequence[int] = (2, 2, 2),
    stride: int | Sequence[int] = (2, 2, 2),
    fill: float = 0.0,
    batch_size: int = 64,
    *,
    region: Region | None = None,
    method: str = "auto",
    progress: bool = True,
) -> OcclusionResult:
    """Compute occlusion maps: the drop of the target's softmax probability per patch.

    Each window of ``patch`` voxels (all channels) on the grid of :func:`window_starts` is
    set to ``fill``; its score is ``p(target | volume) - p(target | occluded volume)``, and
    each voxel gets the mean score of the windows covering it. Equals Captum's
    ``Occlusion(lambda x: softmax(model(x), 1)).attribute(volume,
    sliding_window_shapes=(C, *patch), strides=(1, *stride), baselines=fill,
    target=target)`` up to float32 rounding.

    Parameters
    ----------
    model : torch.nn.Module
        Classifier returning logits ``(B, n_classes)``; run in eval mode (``model.eval()``,
        the modules' training flags are restored afterwards) on its own device, with its
        hooks. A module that stays in training mode through ``eval()`` is run as it is, by
        the batched engine.
    volumes : numpy.ndarray or torch.Tensor, shape (N, X, Y, Z) or (N, C, X, Y, Z)
        Volumes as the model expects them (z-scored).
    targets : int or sequence of int
        Class whose probability is scored, one per volume (an int applies to all).
    patch : int or tuple of int, default=(2, 2, 2)
        Shape of the occluded box, in voxels.
    stride : int or tuple of int, default=(2, 2, 2)
        Step between windows; ``stride < patch`` gives overlapping windows. With
        ``stride > patch`` some voxels are not covered and get 0.
    fill : float, default=0.0
        Value written into the patch (0 is the mean of a z-scored volume).
    batch_size : int, default=64
        Windows evaluated together.
    region : tuple of slice, optional
        Occlude only windows tiling this box of voxels (maps are 0 outside it). The model
        still sees the whole volume.
    method : {"auto", "incremental", "batched"}, default="auto"
        Engine: ``"incremental"`` (exact, for :class:`emolib.models.cnn.EmotionCNN`, many times
        faster), ``"batched"`` (any model) or ``"auto"`` (incremental when it is exact for
        the model in eval mode, see
        :func:`~emolib.occlusion.incremental.why_not_incremental`; the result's ``method``
        says which ran).
    progress : bool, default=True
        Show a progress bar over windows.

    Returns
    -------
    OcclusionResult
        ``maps`` (N, X, Y, Z), ``coarse`` (N, gx, gy, gz), ``base_prob`` (N,) and the grid.

    Raises
    ------
    ValueError
        On inconsistent shapes, targets, patch/stride, an unknown ``method``, or
        ``method="incremental"`` for a model the incremental engine cannot compute exactly
        (the message says why).
    emolib.errors.InputDataError
        If the volumes contain NaN or infinite values.

    Warns
    -----
    UserWarning
        With ``method="auto"``, when the model is an ``EmotionCNN`` that the incremental
        engine cannot compute exactly (a replaced layer, a hook, ...): the batched engine
        runs instead, and the warning says why.
    """
    if method not in ("auto", "incremental", "batched"):
        raise ValueError(f"method must be 'auto', 'incremental' or 'batched', got {method!r}")
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    reason = _incremental_refusal(model)
    if method == "incremental" and reason is not None:
        raise ValueError(f"the incremental engine cannot compute this model exactly: {reason}")
    if method == "auto" and reason is not None and isinstance(model, EmotionCNN):
        warnings.warn(
            f"occlusion_map runs the batched engine: the incremental one cannot compute this "
            f"EmotionCNN exactly ({reason})", UserWarning, stacklevel=2,
        )  # fmt: skip
    use_incremental = reason is None and method != "batched"
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None else torch.float32
    in_channels = getattr(model, "in_channels", None) if reason is None else None
    x_all = _as_volumes(volumes, in_channels).to(dtype)
    n = x_all.shape[0]
    shape = tuple(int(s) for s in x_all.shape[2:])
    patch = as_triple(patch, "patch")
    stride = as_triple(stride, "stride")
    t_all = np.asarray(targets, dtype=np.int64)
    if t_all.ndim == 0:
        t_all = np.full(n, int(t_all), dtype=np.int64)
    t_all = t_all.reshape(-1)
    if len(t_all) != n:
        raise ValueError(f"{n} volumes but {len(t_all)} targets")
    n_classes = getattr(model, "n_classes", None)
    if n and (t_all.min() < 0 or (n_classes is not None and t_all.max() >= n_classes)):
        raise ValueError(f"targets must lie in [0, {n_classes})")
    lo_hi = normalise_region(region, shape)
    starts = window_starts(shape, patch, stride, region)
    bounds = [(s, np.minimum(s + p, hi)) for s, p, hi in zip(starts, patch, lo_hi[1], strict=True)]
    grid = tuple(len(s) for s in starts)

    coarse = np.empty((n, *grid), dtype=np.float64)
    base = np.empty(n, dtype=np.float64)
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        engine = IncrementalOcclusion(model) if use_incremental else None
        net = model if engine is not None else _channels_last_copy(model)
        with (
            torch.inference_mode(),
            tqdm(
                total=n * int(np.prod(grid)), disable=not progress, desc="occlusion", unit="win"
            ) as bar,
        ):
            plan = engine.plan(shape, bounds, batch_size) if engine is not None else None
            for i in range(n):
                x = x_all[i : i + 1].to(device)
                if engine is not None:
                    drops, b = engine.run(x, int(t_all[i]), plan, fill, batch_size, bar)
                else:
                    drops, b = _batched_drops(net, x, int(t_all[i]), bounds, fill, batch_size, bar)
                coarse[i] = drops.reshape(grid)
                base[i] = b
    finally:
        for m, flag in flags:
            m.training = flag
    maps = spread_coarse_maps(coarse, shape, starts, patch, region)
    return OcclusionResult(
        maps=maps,
        coarse=coarse.astype(np.float32),
        base_prob=base.astype(np.float32),
        targets=t_all,
        starts=starts,
        patch=patch,
        stride=stride,
        fill=float(fill),
        method="incremental" if use_incremental else "batched",
    )
