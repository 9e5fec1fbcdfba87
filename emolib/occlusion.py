"""Occlusion maps: the drop of the target class's probability when a patch is blanked.

For every volume, a box of ``patch`` voxels is set to ``fill`` (0, the mean after
z-scoring) at every position of a regular grid, the model is run on the occluded volume,
and the drop of the softmax probability of the target class is recorded
(``coarse``, one value per window position). Each voxel then gets the mean drop over the
windows that cover it (``maps``). This is, number for number, what Captum's
:class:`captum.attr.Occlusion` computes with the target's softmax probability as forward
function, ``sliding_window_shapes=(C, *patch)``, ``strides=(1, *stride)`` and
``baselines=fill`` (the tests check it to 1e-5):

- windows start at ``k * stride`` for ``k = 0 .. ceil((size - patch) / stride)`` in each
  dimension; the last one may stick out of the volume and is then cut off at the border, so
  every voxel is covered when ``stride <= patch``;
- a voxel's value is the sum of the drops of the windows covering it divided by their count.

Two engines compute the drops:

``"batched"``
    Plain batched occlusion for any ``nn.Module``: ``batch_size`` occluded copies of the
    volume per forward pass (run on a ``channels_last_3d`` copy of the model when it has 3-D
    convolutions, about twice as fast on CPU).
``"incremental"``
    For :class:`emolib.model.EmotionCNN` (in eval mode a chain of local operators up to
    the global average pool). Batch norm is folded into the convolutions, and the
    unoccluded activations of every layer are computed once per volume. For a window, only
    the box of each layer's activations that the patch can reach is recomputed (about
    3 x 3 x 3 positions in the deep layers), batched over windows: the input of each 3x3x3
    convolution is gathered from the cached activations (kept with their zero padding) with
    the recomputed box of the layer below spliced in. The projection of the last block and
    the pool are linear, so the new pooled vector is the cached one plus the change of the
    last depthwise output, summed over its box, projected and divided by the number of
    positions. The result equals the plain forward pass up to float32 rounding (about 1e-7
    in probabilities). This is incremental CNN inference for occlusion (Nakandala et al.,
    2019, "Incremental and approximate inference for faster occlusion-based deep CNN
    explanations"), without their approximations.

``method="auto"`` picks the incremental engine whenever the model is an ``EmotionCNN`` of
the expected structure, else the batched one.

The occlusion chapter's pipeline builds on it: :func:`select_confident` picks the held-out
volumes to explain (the original's rule), :func:`occlude_by_fold` occludes each with its own
fold's network, :func:`class_map_images` / :func:`save_class_maps` write the class-mean maps
as NIfTI in the data's space, :func:`top_voxels` lists each map's largest drops, and on
generated data (:func:`emolib.synthetic.forrest.find_truth`) :func:`localisation_scores` and
:func:`localisation_matrix` score the maps against the planted regions.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas
import torch
from sklearn.metrics import roc_auc_score
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from emolib.errors import InputDataError
from emolib.model import EmotionCNN, SeparableBlock3d

__all__ = [
    "OcclusionResult",
    "occlusion_map",
    "window_starts",
    "spread_coarse_maps",
    "class_mean_maps",
    "supports_incremental",
]

Triple = tuple[int, int, int]
Region = tuple[slice, slice, slice]


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

    @property
    def grid_shape(self) -> Triple:
        """Number of window positions along each axis, ``(gx, gy, gz)``."""
        return tuple(len(s) for s in self.starts)  # type: ignore[return-value]


# --------------------------------------------------------------------------------------
# window grid and maps
# --------------------------------------------------------------------------------------


def _triple(value: int | Sequence[int], name: str) -> Triple:
    if isinstance(value, (int, np.integer)):
        out = (int(value),) * 3
    else:
        out = tuple(int(v) for v in value)
    if len(out) != 3 or min(out) < 1:
        raise ValueError(f"{name} must be 3 positive integers, got {value!r}")
    return out  # type: ignore[return-value]


def _normalise_region(region: Region | None, shape: Triple) -> tuple[Triple, Triple]:
    if region is None:
        return (0, 0, 0), shape
    if len(region) != 3:
        raise ValueError(f"region must be 3 slices, got {region!r}")
    lo, hi = [], []
    for sl, n in zip(region, shape, strict=True):
        if not isinstance(sl, slice) or sl.step not in (None, 1):
            raise ValueError(f"region must be 3 slices with step 1, got {region!r}")
        a, b, _ = sl.indices(n)
        if b <= a:
            raise ValueError(f"region {region!r} is empty for a volume of shape {shape}")
        lo.append(a)
        hi.append(b)
    return tuple(lo), tuple(hi)  # type: ignore[return-value]


def window_starts(
    shape: Sequence[int],
    patch: int | Sequence[int] = (2, 2, 2),
    stride: int | Sequence[int] = (2, 2, 2),
    region: Region | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the start voxels of the occlusion windows along each axis.

    Windows start at ``lo + k * stride`` for ``k = 0 .. ceil((n - patch) / stride)``, where
    ``[lo, lo + n)`` is the occluded range (the whole axis, or ``region``); the last window
    is cut off at ``lo + n`` if it sticks out (Captum's ``Occlusion`` grid).

    Parameters
    ----------
    shape : sequence of int
        Spatial shape ``(X, Y, Z)`` of the volumes.
    patch, stride : int or sequence of int
        Window shape and step, in voxels.
    region : tuple of slice, optional
        Restrict the windows to this box of voxels (tiled as if it were the whole volume).

    Returns
    -------
    tuple of numpy.ndarray
        Three int64 arrays of window starts.
    """
    shape = _triple(shape, "shape")
    patch = _triple(patch, "patch")
    stride = _triple(stride, "stride")
    lo, hi = _normalise_region(region, shape)
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
    starts: tuple[np.ndarray, np.ndarray, np.ndarray],
    patch: int | Sequence[int],
    region: Region | None = None,
) -> np.ndarray:
    """Turn per-window drops into voxel maps: each voxel gets the mean over its windows.

    Parameters
    ----------
    coarse : numpy.ndarray, shape (N, gx, gy, gz)
        Drop per window position.
    shape : sequence of int
        Spatial shape ``(X, Y, Z)`` of the volumes.
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
    shape = _triple(shape, "shape")
    patch = _triple(patch, "patch")
    _, hi = _normalise_region(region, shape)
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
    for dx in range(patch[0]):
        for dy in range(patch[1]):
            for dz in range(patch[2]):
                sel = tuple(
                    slice(f + d, f + d + (g - 1) * st + 1, st)
                    for f, d, g, st in zip(first, (dx, dy, dz), grid, steps, strict=True)
                )
                total[(slice(None), *sel)] += coarse
                count[sel] += 1
    for axis, h in enumerate(hi):  # windows are cut off at the end of the region
        cut = [slice(None)] * 3
        cut[axis] = slice(h, None)
        count[tuple(cut)] = 0
    count = count[: shape[0], : shape[1], : shape[2]]
    total = total[:, : shape[0], : shape[1], : shape[2]]
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


# --------------------------------------------------------------------------------------
# batched engine (any model)
# --------------------------------------------------------------------------------------


def _target_prob(logits: torch.Tensor, target: int) -> torch.Tensor:
    return torch.softmax(logits, dim=1)[:, target]


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
    base = float(_target_prob(model(x), target)[0])
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
        prob = _target_prob(model(xb), target)
        drops[first:last] = (base - prob.double()).cpu().numpy()
        bar.update(last - first)
    return drops, base


# --------------------------------------------------------------------------------------
# incremental engine (EmotionCNN)
# --------------------------------------------------------------------------------------


def _conv_out(n: int, k: int, st: int, pd: int) -> int:
    return (n + 2 * pd - k) // st + 1


def _fold_bn(bn: nn.BatchNorm3d) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode batch norm as ``x * scale + shift`` (computed in float64)."""
    inv = torch.rsqrt(bn.running_var.double() + bn.eps)
    if bn.affine:
        scale = bn.weight.double() * inv
        shift = bn.bias.double() - bn.running_mean.double() * scale
    else:
        scale = inv
        shift = -bn.running_mean.double() * scale
    return scale, shift


def _is_plain_conv(conv: nn.Module, k: int | None = None, groups: int | None = None) -> bool:
    if not isinstance(conv, nn.Conv3d) or conv.padding_mode != "zeros":
        return False
    if isinstance(conv.padding, str):
        return False
    ks, st, pd, dl = conv.kernel_size, conv.stride, conv.padding, conv.dilation
    if len(set(ks)) != 1 or len(set(st)) != 1 or len(set(pd)) != 1 or set(dl) != {1}:
        return False
    if k is not None and ks[0] != k:
        return False
    if k == 1 and (st[0] != 1 or pd[0] != 0):
        return False
    return groups is None or conv.groups == groups


def _is_bn(bn: nn.Module, channels: int) -> bool:
    return (
        isinstance(bn, nn.BatchNorm3d)
        and bn.track_running_stats
        and bn.running_mean is not None
        and bn.num_features == channels
    )


def supports_incremental(model: nn.Module) -> bool:
    """Tell whether the incremental occlusion engine can run ``model`` exactly.

    True for an :class:`emolib.model.EmotionCNN` whose ``forward`` is not overridden and
    whose layers have the structure of the original network (stem convolution with batch
    norm and ReLU6, depthwise-separable blocks, global average pooling, linear read-out).

    Parameters
    ----------
    model : torch.nn.Module
        The network.

    Returns
    -------
    bool
    """
    if not isinstance(model, EmotionCNN):
        return False
    cls = type(model)
    if cls.forward is not EmotionCNN.forward or cls.features is not EmotionCNN.features:
        return False
    try:
        conv, bn, act = model.conv1.conv, model.conv1.bn, model.conv1.act
        if len(model.conv1) != 3 or conv.groups != 1 or not _is_plain_conv(conv):
            return False
        if conv.stride[0] != 1 or not _is_bn(bn, conv.out_channels):
            return False
        if not isinstance(act, nn.ReLU6):
            return False
        c = conv.out_channels
        for name in ("block1", "block2", "block3", "block4"):
            block = getattr(model, name)
            if type(block) is not SeparableBlock3d:
                return False
            mods = list(block.children())
            if len(mods) != 8:
                return False
            ex, exbn, exact, dw, dwbn, dwact, pj, pjbn = mods
            h = ex.out_channels
            ok = (
                _is_plain_conv(ex, 1, 1) and ex.in_channels == c and _is_bn(exbn, h)
                and isinstance(exact, nn.ReLU6) and _is_plain_conv(dw, None, h)
                and dw.in_channels == h and dw.out_channels == h and _is_bn(dwbn, h)
                and isinstance(dwact, nn.ReLU6) and _is_plain_conv(pj, 1, 1)
                and pj.in_channels == h and _is_bn(pjbn, pj.out_channels)
            )  # fmt: skip
            if not ok:
                return False
            c = pj.out_channels
        pool = list(model.pool.children())
        if len(pool) != 2 or not isinstance(pool[0], nn.AdaptiveAvgPool3d):
            return False
        if tuple(np.broadcast_to(pool[0].output_size, 3)) != (1, 1, 1):
            return False
        if not isinstance(pool[1], nn.Flatten):
            return False
        return isinstance(model.fc, nn.Linear) and model.fc.in_features == c
    except (AttributeError, TypeError):
        return False


@dataclass
class _Layer:
    """Folded weights of one depthwise-separable block."""

    we: torch.Tensor  # (Cin, H) expansion
    be: torch.Tensor
    wd: torch.Tensor  # (H, 1, k, k, k) depthwise
    bd: torch.Tensor
    wp: torch.Tensor  # (H, Cout) projection
    bp: torch.Tensor
    k: int
    st: int
    pd: int


class _Incremental:
    """Incremental occlusion for an EmotionCNN (see the module docstring)."""

    def __init__(self, model: EmotionCNN):
        self.model = model
        p = next(model.parameters())
        dev, dt = p.device, p.dtype
        self.device, self.dtype = dev, dt

        def cast(t: torch.Tensor) -> torch.Tensor:
            return t.to(device=dev, dtype=dt).contiguous()

        conv, bn = model.conv1.conv, model.conv1.bn
        scale, shift = _fold_bn(bn)
        w = conv.weight.double() * scale[:, None, None, None, None]
        self.k0, self.pd0 = conv.kernel_size[0], conv.padding[0]
        self.w0 = cast(w)  # (32, C, k, k, k)
        b0 = shift if conv.bias is None else shift + conv.bias.double() * scale
        self.b0 = cast(b0)
        self.layers: list[_Layer] = []
        for name in ("block1", "block2", "block3", "block4"):
            ex, exbn, _, dw, dwbn, _, pj, pjbn = list(getattr(model, name).children())
            folded = []
            for cv, nb in ((ex, exbn), (dw, dwbn), (pj, pjbn)):
                sc, sh = _fold_bn(nb)
                wt = cv.weight.double() * sc.view(-1, *([1] * (cv.weight.dim() - 1)))
                if cv.bias is not None:
                    sh = sh + cv.bias.double() * sc
                folded.append((wt, sh))
            (we, be), (wd, bd), (wp, bp) = folded
            self.layers.append(
                _Layer(
                    we=cast(we.flatten(1).T), be=cast(be),
                    wd=cast(wd), bd=cast(bd),
                    wp=cast(wp.flatten(1).T), bp=cast(bp),
                    k=dw.kernel_size[0], st=dw.stride[0], pd=dw.padding[0],
                )
            )  # fmt: skip

    # ---- geometry -------------------------------------------------------------------

    def plan(self, shape: Triple, bounds: list[tuple[np.ndarray, np.ndarray]]) -> dict:
        """Boxes and halos of every layer for every window, per axis (the grid is separable).

        Layer 0 is the input, layer 1 the stem output, layer ``l + 1`` the output of block
        ``l``. For each conv (stem and depthwise) and window, the recomputed output box is
        ``[lo, lo + m)`` (``m`` the same for all windows, the box kept inside the map) and its
        halo is the input range ``stride * lo - pad + [0, stride * (m - 1) + k)``.
        """
        dev = self.device
        geoms = [(self.k0, 1, self.pd0)] + [(ly.k, ly.st, ly.pd) for ly in self.layers]
        sizes = [shape]
        for k, st, pd in geoms:
            sizes.append(tuple(_conv_out(n, k, st, pd) for n in sizes[-1]))
        box_lo: list[list[np.ndarray]] = [[] for _ in sizes]
        box_m: list[list[int]] = [[] for _ in sizes]
        for d in range(3):
            # changed range (inclusive) of every window, pushed through the convs
            a, b = bounds[d][0].astype(np.int64), bounds[d][1].astype(np.int64) - 1
            for layer, (k, st, pd) in enumerate(geoms, start=1):
                n_out = sizes[layer][d]
                a = np.maximum(-((-(a + pd - k + 1)) // st), 0)  # ceil division
                b = np.minimum((b + pd) // st, n_out - 1)
                m = int(min(max(int((b - a).max()) + 1, 1), n_out))
                box_lo[layer].append(np.clip(a, 0, n_out - m))
                box_m[layer].append(m)
        halos = []  # per conv, per axis: (padded position, inside flag, position in box)
        for layer, (k, st, pd) in enumerate(geoms, start=1):
            per_axis = []
            for d in range(3):
                u = np.arange(st * (box_m[layer][d] - 1) + k)
                q = st * box_lo[layer][d][:, None] - pd + u[None, :]
                if layer == 1:  # inside the occluded patch (cut at the region's end)
                    rel = q - bounds[d][0][:, None]
                    inside = (rel >= 0) & (q < bounds[d][1][:, None])
                else:  # inside the recomputed box of the layer below
                    rel = q - box_lo[layer - 1][d][:, None]
                    inside = (rel >= 0) & (rel < box_m[layer - 1][d])
                per_axis.append(
                    tuple(torch.as_tensor(t, device=dev) for t in (q + pd, inside, rel))
                )
            halos.append(per_axis)
        last = [
            torch.as_tensor(box_lo[-1][d][:, None] + np.arange(box_m[-1][d]), device=dev)
            for d in range(3)
        ]
        return {"sizes": sizes, "m": box_m, "halos": halos, "last": last, "geoms": geoms}

    @staticmethod
    def _halo_index(
        tabs: list[tuple[torch.Tensor, ...]],
        ijk: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        padded: Triple,
        m_in: Sequence[int] | None,
        new_base: int,
    ) -> torch.Tensor:
        """Rows (B, hx, hy, hz) of a halo in ``[padded cache; new rows]``.

        A position inside the recomputed box of the layer below (or, for the stem, inside
        the patch, ``m_in=None``) reads the new rows, any other the cached ones; positions
        in the zero padding read the padded cache's zero border.
        """
        (qx, ix, rx), (qy, iy, ry), (qz, iz, rz) = (
            tuple(t[ijk[d]] for t in tabs[d]) for d in range(3)
        )
        cache = (qx[:, :, None, None] * padded[1] + qy[:, None, :, None]) * padded[2]
        cache = cache + qz[:, None, None, :]
        inside = ix[:, :, None, None] & iy[:, None, :, None] & iz[:, None, None, :]
        if m_in is None:
            new = torch.full_like(cache, new_base)
        else:
            b = torch.arange(qx.shape[0], device=qx.device).view(-1, 1, 1, 1)
            new = (rx[:, :, None, None] * m_in[1] + ry[:, None, :, None]) * m_in[2]
            new = new + rz[:, None, None, :] + (new_base + b * (m_in[0] * m_in[1] * m_in[2]))
        return torch.where(inside, new, cache)

    # ---- one volume -----------------------------------------------------------------

    def run(
        self,
        x: torch.Tensor,
        target: int,
        bounds: list[tuple[np.ndarray, np.ndarray]],
        plan: dict,
        fill: float,
        batch_size: int,
        bar: tqdm,
    ) -> tuple[np.ndarray, float]:
        """Drops of one volume ``x`` (1, C, X, Y, Z), flat over the window grid (C order)."""
        model = self.model
        sizes, box_m, halos, geoms = plan["sizes"], plan["m"], plan["halos"], plan["geoms"]
        padded = [tuple(n + 2 * g[2] for n in sizes[i]) for i, g in enumerate(geoms)]

        # Unoccluded activations, computed once per volume with the folded layers, in rows
        # (positions x channels). The input of every conv is kept padded with its zero
        # border in a buffer ``[cache; recomputed rows of a window batch]`` (for the stem,
        # one row holding the fill value). Large work tensors are allocated once per volume:
        # fresh allocations of this size cost more than the gathers themselves.
        c_in, k0 = x.shape[1], self.k0
        xp = F.pad(x, (self.pd0,) * 6)[0]  # (C, Xp, Yp, Zp)
        rows0 = xp.permute(1, 2, 3, 0).reshape(-1, c_in)
        bufs = [torch.cat([rows0, rows0.new_full((1, c_in), fill)])]
        new_at = [rows0.shape[0]]
        cols = xp.unfold(1, k0, 1).unfold(2, k0, 1).unfold(3, k0, 1)  # C,X,Y,Z,k,k,k
        cols = cols.permute(1, 2, 3, 0, 4, 5, 6).reshape(-1, self.w0[0].numel())
        h = torch.addmm(self.b0, cols, self.w0.flatten(1).T).clamp_(0, 6)
        del cols
        for li, ly in enumerate(self.layers):
            layer, pd, hid = li + 1, ly.pd, ly.we.shape[1]
            n, npad = sizes[layer], padded[layer]
            m = box_m[layer]
            buf = h.new_empty(int(np.prod(npad)) + batch_size * m[0] * m[1] * m[2], hid)
            grid_view = buf[: int(np.prod(npad))].view(*npad, hid)
            for axis in range(3):  # zero border
                grid_view.narrow(axis, 0, pd).zero_()
                grid_view.narrow(axis, n[axis] + pd, pd).zero_()
            inner = grid_view[pd : pd + n[0], pd : pd + n[1], pd : pd + n[2]]
            inner.copy_(torch.addmm(ly.be, h, ly.we).clamp_(0, 6).view(*n, hid))
            bufs.append(buf)
            new_at.append(int(np.prod(npad)))
            dw_out = F.conv3d(grid_view.permute(3, 0, 1, 2)[None], ly.wd, ly.bd, stride=ly.st,
                              groups=hid)  # fmt: skip
            dw_rows = dw_out[0].permute(1, 2, 3, 0).reshape(-1, hid).clamp_(0, 6)
            h = torch.addmm(ly.bp, dw_rows, ly.wp)
        last_rows = dw_rows  # block4's depthwise output
        n_last = last_rows.shape[0]
        pooled_base = h.mean(0, keepdim=True)  # (1, Cout)
        fc_w, fc_b = model.fc.weight, model.fc.bias
        base_prob = _target_prob(F.linear(pooled_base, fc_w, fc_b), target)

        def halo_len(layer: int) -> int:
            k, st, _ = geoms[layer]
            return int(np.prod([st * (m - 1) + k for m in box_m[layer + 1]]))

        def box_len(layer: int) -> int:
            return int(np.prod(box_m[layer]))

        new = bufs[0].new_empty
        ws_halo = [new(batch_size * halo_len(i), bufs[i].shape[1]) for i in range(len(bufs))]
        ws_h = [None] + [new(batch_size * box_len(i + 2), ly.wp.shape[1])
                         for i, ly in enumerate(self.layers)]  # fmt: skip

        def conv_relu6(halo: torch.Tensor, w: torch.Tensor, b: torch.Tensor, st: int, g: int):
            """Conv (no padding) + ReLU6 of a channels-last batch of halos, as rows."""
            out = F.conv3d(halo.permute(0, 4, 1, 2, 3), w, b, stride=st, groups=g)
            return out.permute(0, 2, 3, 4, 1).reshape(-1, w.shape[0]).clamp_(0, 6)

        grid = tuple(len(s) for s, _ in bounds)
        n_win = int(np.prod(grid))
        drops = torch.empty(n_win, dtype=torch.float64, device=self.device)
        last_layer = self.layers[-1]
        for first in range(0, n_win, batch_size):
            last = min(first + batch_size, n_win)
            nb = last - first
            flat = torch.arange(first, last, device=self.device)
            ijk = (flat // (grid[1] * grid[2]), (flat // grid[2]) % grid[1], flat % grid[2])
            # stem conv (+ folded BN, ReLU6) on its box, from the occluded input
            idx = self._halo_index(halos[0], ijk, padded[0], None, new_at[0])
            halo = ws_halo[0][: idx.numel()]
            torch.index_select(bufs[0], 0, idx.reshape(-1), out=halo)
            h = conv_relu6(halo.view(*idx.shape, c_in), self.w0, self.b0, 1, 1)
            for li, ly in enumerate(self.layers):
                layer = li + 1  # h is the box of layer `layer`; the dw gives layer + 1
                m_in = box_m[layer]
                buf = bufs[layer]
                # expansion on the box below, written into the gather buffer
                e = buf[new_at[layer] : new_at[layer] + h.shape[0]]
                torch.addmm(ly.be, h, ly.we, out=e).clamp_(0, 6)
                idx = self._halo_index(halos[layer], ijk, padded[layer], m_in, new_at[layer])
                halo = ws_halo[layer][: idx.numel()]
                torch.index_select(buf, 0, idx.reshape(-1), out=halo)
                hid = buf.shape[1]
                acc = conv_relu6(halo.view(*idx.shape, hid), ly.wd, ly.bd, ly.st, hid)
                if ly is last_layer:
                    h = acc
                else:
                    h = ws_h[layer][: acc.shape[0]]
                    torch.addmm(ly.bp, acc, ly.wp, out=h)
            # projection and pool are linear: pooled = base + (sum over the last box of the
            # change of block4's depthwise output) @ W_project / positions
            lx, ly_, lz = (plan["last"][d][ijk[d]] for d in range(3))
            n5 = sizes[-1]
            pos = (lx[:, :, None, None] * n5[1] + ly_[:, None, :, None]) * n5[2]
            pos = pos + lz[:, None, None, :]
            old = last_rows.index_select(0, pos.reshape(-1))
            delta = (h - old).view(nb, -1, h.shape[1]).sum(1) @ last_layer.wp
            pooled = pooled_base + delta / n_last
            prob = _target_prob(F.linear(pooled, fc_w, fc_b), target)
            drops[first:last] = base_prob.double() - prob.double()
            bar.update(nb)
        return drops.cpu().numpy(), float(base_prob[0])


# --------------------------------------------------------------------------------------
# public entry point
# --------------------------------------------------------------------------------------


def _channels_last_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with 5-D weights in ``channels_last_3d`` (about 2x faster 3-D
    convolutions on CPU here), or ``model`` itself if it has none or cannot be copied."""
    if not any(p.dim() == 5 for p in model.parameters()):
        return model
    try:
        return copy.deepcopy(model).to(memory_format=torch.channels_last_3d)
    except Exception:  # noqa: BLE001 - any failure: use the model as it is
        return model


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
        Classifier returning logits ``(B, n_classes)``; run in eval mode on its own device
        (its training flag is restored afterwards).
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
        Engine: ``"incremental"`` (exact, for :class:`emolib.model.EmotionCNN`, many times
        faster), ``"batched"`` (any model) or ``"auto"`` (incremental when supported).
    progress : bool, default=True
        Show a progress bar over windows.

    Returns
    -------
    OcclusionResult
        ``maps`` (N, X, Y, Z), ``coarse`` (N, gx, gy, gz), ``base_prob`` (N,) and the grid.

    Raises
    ------
    ValueError
        On inconsistent shapes, targets, patch/stride or an unsupported ``method``.
    emolib.errors.InputDataError
        If the volumes contain NaN or infinite values.
    """
    if method not in ("auto", "incremental", "batched"):
        raise ValueError(f"method must be 'auto', 'incremental' or 'batched', got {method!r}")
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    incremental = supports_incremental(model)
    if method == "incremental" and not incremental:
        raise ValueError("the incremental engine needs an emolib.model.EmotionCNN")
    use_incremental = incremental and method != "batched"
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None else torch.float32
    in_channels = getattr(model, "in_channels", None) if incremental else None
    x_all = _as_volumes(volumes, in_channels).to(dtype)
    n = x_all.shape[0]
    shape = tuple(int(s) for s in x_all.shape[2:])
    patch = _triple(patch, "patch")
    stride = _triple(stride, "stride")
    t_all = np.asarray(targets, dtype=np.int64)
    if t_all.ndim == 0:
        t_all = np.full(n, int(t_all), dtype=np.int64)
    t_all = t_all.reshape(-1)
    if len(t_all) != n:
        raise ValueError(f"{n} volumes but {len(t_all)} targets")
    n_classes = getattr(model, "n_classes", None)
    if n and (t_all.min() < 0 or (n_classes is not None and t_all.max() >= n_classes)):
        raise ValueError(f"targets must lie in [0, {n_classes})")
    lo_hi = _normalise_region(region, shape)
    starts = window_starts(shape, patch, stride, region)
    bounds = [(s, np.minimum(s + p, hi)) for s, p, hi in zip(starts, patch, lo_hi[1], strict=True)]
    grid = tuple(len(s) for s in starts)

    coarse = np.empty((n, *grid), dtype=np.float64)
    base = np.empty(n, dtype=np.float64)
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        engine = _Incremental(model) if use_incremental else None
        net = model if engine is not None else _channels_last_copy(model)
        with (
            torch.inference_mode(),
            tqdm(
                total=n * int(np.prod(grid)), disable=not progress, desc="occlusion", unit="win"
            ) as bar,
        ):
            plan = engine.plan(shape, bounds) if engine is not None else None
            for i in range(n):
                x = x_all[i : i + 1].to(device)
                if engine is not None:
                    drops, b = engine.run(x, int(t_all[i]), bounds, plan, fill, batch_size, bar)
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


# --------------------------------------------------------------------------------------
# the chapter's pipeline: selection, occlusion per fold, NIfTI maps, top voxels, truth
# --------------------------------------------------------------------------------------

ModelSource = nn.Module | str | os.PathLike
ModelForFold = Callable[[str], ModelSource]


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run a block with ``torch.set_num_threads(n)`` (``None``: leave it as it is).

    Occlusion batches are small; on a busy machine one thread is often faster than several.
    """
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _load_model(source: ModelSource, device: str = "cpu") -> nn.Module:
    if isinstance(source, nn.Module):
        return source
    from emolib.train import load_trained

    return load_trained(source, device=device)


def select_confident(
    predictions: pandas.DataFrame,
    classes: Sequence[str],
    min_prob: float = 0.75,
    n_per_class: int = 10,
    seed: int = 0,
    correct_only: bool = True,
    model: str = "cnn",
    fill_up: bool = False,
) -> pandas.DataFrame:
    """Mark the held-out volumes to occlude, as the original did.

    A held-out prediction is *eligible* when the model got it right (``correct_only``) with a
    true-class probability of at least ``min_prob``; of each class's eligible volumes,
    ``n_per_class`` are drawn at random (seeded), or all of them when there are fewer. With
    ``fill_up``, a class with fewer eligible volumes is filled up to ``n_per_class`` with its
    other held-out volumes of highest true-class probability (flagged in ``rule``), so that a
    network that is rarely confident still gets maps, to be read with that in mind.

    Parameters
    ----------
    predictions : pandas.DataFrame
        Held-out predictions (:attr:`emolib.decoding.DecodingResult.predictions`): columns
        ``fold``, ``sample``, ``y``, ``model`` and ``p_<class>``.
    classes : sequence of str
        Class names, in the order ``y`` indexes them.
    min_prob : float, default=0.75
        Smallest true-class probability (the original's 0.75).
    n_per_class : int, default=10
        Volumes drawn per class (the original's 10).
    seed : int, default=0
        Seed of the draw.
    correct_only : bool, default=True
        Require the predicted class (the argmax) to be the true one.
    model : str, default="cnn"
        Which model's predictions to use.
    fill_up : bool, default=False
        Fill classes with too few eligible volumes up with their most confident others.

    Returns
    -------
    pandas.DataFrame
        The rows of ``model`` with ``p_true`` (true-class probability), ``pred`` (predicted
        class index), ``eligible``, ``selected`` and ``rule`` (``"original"`` for volumes
        drawn by the rule, ``"filled up"``, or ``""`` when not selected) added; index reset.
    """
    if n_per_class < 0:
        raise ValueError("n_per_class must be >= 0")
    rows = predictions[predictions["model"] == model].reset_index(drop=True)
    if rows.empty:
        raise ValueError(f"no predictions of model {model!r}")
    cols = [f"p_{c}" for c in classes]
    missing = [c for c in cols if c not in rows.columns]
    if missing:
        raise ValueError(f"predictions lack the columns {missing}")
    probs = rows[cols].to_numpy(dtype=np.float64)
    y = rows["y"].to_numpy(dtype=np.int64)
    p_true = probs[np.arange(len(y)), y]
    pred = probs.argmax(axis=1)
    eligible = p_true >= min_prob
    if correct_only:
        eligible &= pred == y
    rng = np.random.default_rng(seed)
    rule = np.full(len(rows), "", dtype=object)
    for c in range(len(classes)):
        idx = np.flatnonzero(eligible & (y == c))
        take = min(n_per_class, len(idx))
        if take:
            rule[rng.choice(idx, size=take, replace=False)] = "original"
        if fill_up and take < n_per_class:
            rest = np.flatnonzero((y == c) & (rule == ""))
            rest = rest[np.argsort(-p_true[rest], kind="stable")][: n_per_class - take]
            rule[rest] = "filled up"
    return rows.assign(p_true=p_true, pred=pred, eligible=eligible, selected=rule != "",
                       rule=rule.astype(str))


def occlude_by_fold(
    selection: pandas.DataFrame,
    volumes: np.ndarray,
    model_for_fold: ModelForFold,
    patch: int | Sequence[int] = (2, 2, 2),
    stride: int | Sequence[int] = (2, 2, 2),
    fill: float = 0.0,
    batch_size: int = 64,
    *,
    n_threads: int | None = 1,
    device: str = "cpu",
    method: str = "auto",
    progress: bool = True,
) -> OcclusionResult:
    """Occlude each selected volume with its own fold's model (the one that never saw it).

    Parameters
    ----------
    selection : pandas.DataFrame
        One row per volume to occlude, with ``fold``, ``sample`` (row of ``volumes``) and
        ``y`` (the target class), e.g. the selected rows of :func:`select_confident`.
    volumes : numpy.ndarray, shape (n_samples, X, Y, Z)
        All prepared volumes (a memory map is fine); ``sample`` indexes them.
    model_for_fold : callable
        ``model_for_fold(fold)`` returns the fold's model or the path of its ``best.pt``
        (e.g. :meth:`emolib.decoding.DecodingResult.fold_model_path`).
    patch, stride, fill, batch_size, method, progress
        As in :func:`occlusion_map`.
    n_threads : int or None, default=1
        Torch threads while occluding (``None`` leaves the setting alone).
    device : str, default="cpu"
        Where a model loaded from a path is put.

    Returns
    -------
    OcclusionResult
        Maps, coarse drops, base probabilities and targets in the row order of ``selection``.
    """
    for col in ("fold", "sample", "y"):
        if col not in selection.columns:
            raise ValueError(f"selection needs a {col!r} column")
    if len(selection) == 0:
        raise ValueError("nothing to occlude: the selection is empty")
    folds = selection["fold"].astype(str).to_numpy()
    samples = selection["sample"].to_numpy(dtype=np.int64)
    targets = selection["y"].to_numpy(dtype=np.int64)
    parts: dict[str, tuple[np.ndarray, OcclusionResult]] = {}
    with torch_threads(n_threads):
        for fold in dict.fromkeys(folds):
            pos = np.flatnonzero(folds == fold)
            model = _load_model(model_for_fold(fold), device)
            x = np.asarray(volumes[np.sort(samples[pos])])  # memory maps read in file order
            order = np.argsort(np.argsort(samples[pos], kind="stable"), kind="stable")
            res = occlusion_map(model, x[order], targets[pos], patch, stride, fill,
                                batch_size, method=method, progress=progress)
            parts[fold] = (pos, res)
    first = next(iter(parts.values()))[1]
    n = len(selection)
    maps = np.empty((n, *first.maps.shape[1:]), dtype=np.float32)
    coarse = np.empty((n, *first.coarse.shape[1:]), dtype=np.float32)
    base = np.empty(n, dtype=np.float32)
    for pos, res in parts.values():
        maps[pos], coarse[pos], base[pos] = res.maps, res.coarse, res.base_prob
    return OcclusionResult(maps=maps, coarse=coarse, base_prob=base, targets=targets,
                           starts=first.starts, patch=first.patch, stride=first.stride,
                           fill=first.fill, method=first.method)


def class_map_images(
    class_maps: np.ndarray, classes: Sequence[str], affine: np.ndarray
) -> dict[str, nib.Nifti1Image]:
    """Wrap class-mean maps as NIfTI images in the data's space (same affine).

    Classes whose map is all NaN (no volume selected) are left out.

    Parameters
    ----------
    class_maps : numpy.ndarray, shape (n_classes, X, Y, Z)
        Output of :func:`class_mean_maps`.
    classes : sequence of str
        Class names.
    affine : numpy.ndarray, shape (4, 4)
        Affine of the data's voxel grid.

    Returns
    -------
    dict of str to nibabel.Nifti1Image
        Float32 images with millimetre units, one per class with a map.
    """
    if len(class_maps) != len(classes):
        raise ValueError(f"{len(class_maps)} maps but {len(classes)} classes")
    out = {}
    for c, m in zip(classes, class_maps, strict=True):
        if np.isnan(m).all():
            continue
        img = nib.Nifti1Image(np.nan_to_num(m).astype(np.float32), np.asarray(affine, float))
        img.header.set_xyzt_units("mm")
        img.header["descrip"] = f"occlusion drop p({c})"[:79].encode()
        out[c] = img
    return out


def save_class_maps(images: dict[str, nib.Nifti1Image], folder: str | os.PathLike,
                    prefix: str = "occlusion") -> dict[str, Path]:
    """Write class maps as ``<folder>/<prefix>_<CLASS>.nii.gz``; returns class -> path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for c, img in images.items():
        path = folder / f"{prefix}_{c}.nii.gz"
        nib.save(img, path)
        paths[c] = path
    return paths


def top_voxels(
    class_maps: np.ndarray,
    classes: Sequence[str],
    k: int = 500,
    mask: np.ndarray | None = None,
    affine: np.ndarray | None = None,
) -> pandas.DataFrame:
    """The ``k`` voxels with the largest drop of each class's map (inside ``mask``).

    Parameters
    ----------
    class_maps : numpy.ndarray, shape (n_classes, X, Y, Z)
        Class-mean maps; classes whose map is all NaN are skipped.
    classes : sequence of str
        Class names.
    k : int, default=500
        Voxels per class (the original's 500), at most the voxels in the mask.
    mask : numpy.ndarray of bool, optional
        Voxels allowed (default: all).
    affine : numpy.ndarray, optional
        When given, world coordinates ``x``, ``y``, ``z`` (mm) are added.

    Returns
    -------
    pandas.DataFrame
        ``class``, ``rank`` (0 = largest drop), voxel indices ``i``, ``j``, ``k``, ``drop``
        and, with an affine, ``x``, ``y``, ``z``.
    """
    if k < 1:
        raise ValueError("k must be >= 1")
    shape = class_maps.shape[1:]
    mask = np.ones(shape, bool) if mask is None else np.asarray(mask, bool)
    if mask.shape != shape:
        raise ValueError(f"mask has shape {mask.shape}, the maps {shape}")
    inside = np.flatnonzero(mask.reshape(-1))
    frames = []
    for c, m in zip(classes, class_maps, strict=True):
        if np.isnan(m).all():
            continue
        vals = m.reshape(-1)[inside]
        kk = min(k, len(vals))
        top = np.argsort(-vals, kind="stable")[:kk]
        ijk = np.stack(np.unravel_index(inside[top], shape), axis=1)
        df = pandas.DataFrame({"class": c, "rank": np.arange(kk), "i": ijk[:, 0], "j": ijk[:, 1],
                           "k": ijk[:, 2], "drop": vals[top]})
        if affine is not None:
            xyz = nib.affines.apply_affine(np.asarray(affine, float), ijk)
            df = df.assign(x=xyz[:, 0], y=xyz[:, 1], z=xyz[:, 2])
        frames.append(df)
    if not frames:
        raise ValueError("no class has a map")
    return pandas.concat(frames, ignore_index=True)


def localisation_matrix(
    class_maps: np.ndarray,
    classes: Sequence[str],
    regions: dict[str, np.ndarray],
    brain_mask: np.ndarray,
) -> pandas.DataFrame:
    """ROC AUC of every class map against every planted region, inside the brain.

    Entry ``(map c, region r)`` is the AUC of map ``c``'s values as a score for "the voxel
    is in region ``r``", over the voxels of ``brain_mask``: 1 when the region's voxels have the
    largest drops, 0.5 when the map does not single them out. A map that found its own
    class's region has a high diagonal and off-diagonal values near (or below) 0.5.

    Returns
    -------
    pandas.DataFrame
        Rows: classes with a map; columns: regions; NaN where a region has no voxel in the
        brain or covers all of it.
    """
    brain = np.asarray(brain_mask, bool)
    rows = {}
    for c, m in zip(classes, class_maps, strict=True):
        if np.isnan(m).all():
            continue
        vals = m[brain]
        row = {}
        for r, reg in regions.items():
            inside = np.asarray(reg, bool)[brain]
            row[r] = (float(roc_auc_score(inside, vals)) if 0 < inside.sum() < inside.size
                      else np.nan)
        rows[c] = row
    return pandas.DataFrame.from_dict(rows, orient="index").rename_axis(index="map",
                                                                    columns="region")


def localisation_scores(
    class_maps: np.ndarray,
    classes: Sequence[str],
    regions: dict[str, np.ndarray],
    brain_mask: np.ndarray,
    top_k: int = 500,
) -> pandas.DataFrame:
    """Does each class's occlusion map find the region planted for that class?

    Parameters
    ----------
    class_maps : numpy.ndarray, shape (n_classes, X, Y, Z)
        Class-mean maps (:func:`class_mean_maps`).
    classes : sequence of str
        Class names.
    regions : dict of str to numpy.ndarray
        Planted region mask of each class (:func:`emolib.synthetic.read_truth`).
    brain_mask : numpy.ndarray of bool
        Voxels scored.
    top_k : int, default=500
        Size of the top-voxel set whose precision is reported.

    Returns
    -------
    pandas.DataFrame
        One row per class: ``auc`` (map values vs the class's region inside the brain),
        ``precision_at_k`` (share of the ``k`` top voxels inside the region), ``chance``
        (the region's share of the brain, the precision of random voxels), ``k``,
        ``peak_in_region`` (the largest drop lies in the region), ``argmax_agreement``
        (share of the region's voxels whose largest class drop is this class's) and
        ``n_region`` (voxels of the region in the brain). NaN for classes without a map.
    """
    brain = np.asarray(brain_mask, bool)
    have = np.array([not np.isnan(m).all() for m in class_maps])
    stack = np.where(have[:, None], np.nan_to_num(class_maps.reshape(len(class_maps), -1)),
                     -np.inf)
    argmax = stack.argmax(axis=0).reshape(class_maps.shape[1:])
    n_brain = int(brain.sum())
    rows = []
    for ci, (c, m) in enumerate(zip(classes, class_maps, strict=True)):
        reg = np.asarray(regions[c], bool) & brain if c in regions else np.zeros_like(brain)
        row = {"class": c, "auc": np.nan, "precision_at_k": np.nan,
               "chance": reg.sum() / max(n_brain, 1), "k": min(top_k, n_brain),
               "peak_in_region": np.nan, "argmax_agreement": np.nan,
               "n_region": int(reg.sum())}
        if have[ci] and 0 < reg.sum() < n_brain:
            vals, inside = m[brain], reg[brain]
            top = np.argsort(-vals, kind="stable")[: row["k"]]
            row.update(auc=float(roc_auc_score(inside, vals)),
                       precision_at_k=float(inside[top].mean()),
                       peak_in_region=bool(inside[top[0]]),
                       argmax_agreement=float((argmax[reg] == ci).mean()))
        rows.append(row)
    return pandas.DataFrame(rows)


def analysis_mask(mask: np.ndarray, mean_image: nib.Nifti1Image | None = None) -> np.ndarray:
    """The brain voxels to analyse maps in.

    The data's own mask when it is one (01_dataprep with ``mask``), else an EPI mask
    computed from a mean image (:func:`nilearn.masking.compute_epi_mask`), else all voxels.
    """
    mask = np.asarray(mask, bool)
    if not mask.all() or mean_image is None:
        return mask
    from nilearn.masking import compute_epi_mask

    return np.asanyarray(compute_epi_mask(mean_image).dataobj).astype(bool)


__all__ += [
    "analysis_mask", "class_map_images", "localisation_matrix", "localisation_scores",
    "occlude_by_fold", "save_class_maps", "select_confident", "top_voxels", "torch_threads",
]


def label_voxels(voxels: pandas.DataFrame | np.ndarray, regions: dict[str, np.ndarray],
                 outside: str = "none") -> np.ndarray:
    """Name the planted region each voxel lies in (``outside`` when in none).

    Parameters
    ----------
    voxels : pandas.DataFrame or numpy.ndarray
        Voxel indices: columns ``i``, ``j``, ``k`` or an ``(n, 3)`` array.
    regions : dict of str to numpy.ndarray
        Region masks (:func:`emolib.synthetic.forrest.find_truth`); a voxel in several
        takes the first.
    outside : str, default="none"
        Name for voxels outside every region.

    Returns
    -------
    numpy.ndarray of str, shape (n,)
    """
    ijk = voxels[["i", "j", "k"]].to_numpy() if isinstance(voxels, pandas.DataFrame) else voxels
    ijk = np.asarray(ijk, dtype=np.int64)
    out = np.full(len(ijk), outside, dtype=object)
    for name, reg in reversed(list(regions.items())):
        out[np.asarray(reg, bool)[tuple(ijk.T)]] = name
    return out.astype(str)


__all__ += ["label_voxels"]
