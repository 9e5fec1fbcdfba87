"""The incremental occlusion engine, exact for :class:`emolib.models.EmotionCNN`.

In eval mode the network is a chain of local operators up to the global average pool. Batch
norm is folded into the convolutions, and the unoccluded activations of every layer are
computed once per volume. For a window, only the box of each layer's activations that the
patch can reach is recomputed (2 or 3 positions per axis in the deep layers; the windows
are grouped by these sizes and each group is computed with its own), batched over windows:
the input of each 3x3x3 convolution is gathered from the cached activations (kept with
their zero padding) with the recomputed box of the layer below spliced in. The
projection of the last block and the pool are linear, so the new pooled vector is the cached
one plus the change of the last depthwise output, summed over its box, projected and divided
by the number of positions. The result equals the plain forward pass up to float32 rounding
(about 1e-7 in probabilities). This is incremental CNN inference for occlusion (Nakandala et
al., 2019, "Incremental and approximate inference for faster occlusion-based deep CNN
explanations"), without their approximations.

The engine reads the weights and never runs the model's modules, so it is exact only for the
network it reimplements: :func:`why_not_incremental` (and :func:`supports_incremental`)
refuse other layer types or settings, replaced ``forward`` methods, forward hooks and
modules in training mode, and the batched engine is used for those instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from emolib.models.cnn import EmotionCNN, SeparableBlock3d
from emolib.occlusion.grid import Triple, merge_classes, target_prob

__all__ = [
    "IncrementalOcclusion", "supports_incremental", "why_not_incremental",
]


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


#: Methods through which a module is run. The incremental engine calls none of them, so
#: none may be replaced on an instance (nor, for the network, on its class).
_CALL_METHODS = ("forward", "__call__", "_call_impl", "_wrapped_call_impl")


class _Unsupported(Exception):
    """Why the incremental engine cannot compute a model exactly (the message)."""


def _require(ok: bool, reason: str) -> None:
    if not ok:
        raise _Unsupported(reason)


def _require_type(module: nn.Module, cls: type, where: str) -> None:
    """``module`` must be exactly a ``cls``: a subclass may compute something else."""
    _require(type(module) is cls,
             f"{where} is a {type(module).__name__}, not a torch {cls.__name__}")  # fmt: skip


def _children(
    seq: nn.Module, where: str, cls: type, kinds: Sequence[type]
) -> list[tuple[str, nn.Module]]:
    """The children of a container of type ``cls``, which must be ``kinds`` in this order."""
    _require_type(seq, cls, where)
    named = [(f"{where}.{name}", m) for name, m in seq.named_children()]
    _require(len(named) == len(kinds),
             f"{where} holds {[type(m).__name__ for _, m in named]}, not "
             f"{[k.__name__ for k in kinds]}")  # fmt: skip
    for (name, m), kind in zip(named, kinds, strict=True):
        _require_type(m, kind, name)
    return named


def _check_conv(
    conv: nn.Module,
    where: str,
    in_channels: int,
    groups: int,
    *,
    k: int | None = None,
    stride: int | None = None,
    padding: int | None = None,
    out_channels: int | None = None,
) -> None:
    """A plain Conv3d: zero padding, cubic kernel, stride and padding, no dilation."""
    _require_type(conv, nn.Conv3d, where)
    ks, st, pd, dl = conv.kernel_size, conv.stride, conv.padding, conv.dilation
    _require(conv.padding_mode == "zeros" and not isinstance(pd, str),
             f"{where} pads with {pd!r} ({conv.padding_mode}), not a number of zeros")  # fmt: skip
    _require(len(set(ks)) == len(set(st)) == len(set(pd)) == 1,
             f"{where} has kernel {ks}, stride {st}, padding {pd}: not cubic")  # fmt: skip
    _require(set(dl) == {1}, f"{where} is dilated ({dl})")
    for name, value, want in (("kernel", ks[0], k), ("stride", st[0], stride),
                              ("padding", pd[0], padding), ("groups", conv.groups, groups),
                              ("in_channels", conv.in_channels, in_channels),
                              ("out_channels", conv.out_channels, out_channels)):  # fmt: skip
        _require(want is None or value == want, f"{where} has {name} {value}, not {want}")


def _check_bn(bn: nn.Module, where: str, channels: int) -> None:
    """A BatchNorm3d with running statistics (what eval mode uses, folded into the conv)."""
    _require_type(bn, nn.BatchNorm3d, where)
    _require(bn.track_running_stats and bn.running_mean is not None
             and bn.running_var is not None,
             f"{where} keeps no running statistics (it normalises with batch statistics)")
    _require(bn.num_features == channels,
             f"{where} has {bn.num_features} features, not {channels}")  # fmt: skip


def _check_relu6(act: nn.Module, where: str) -> None:
    _require_type(act, nn.ReLU6, where)
    _require((act.min_val, act.max_val) == (0.0, 6.0),
             f"{where} clamps to [{act.min_val}, {act.max_val}], not [0, 6]")  # fmt: skip


def _check_structure(model: EmotionCNN) -> None:
    """The layers, in the order and with the settings that the incremental code computes."""
    cls = type(model)
    for name in ("features", *_CALL_METHODS):
        _require(getattr(cls, name, None) is getattr(EmotionCNN, name, None),
                 f"{cls.__name__} overrides EmotionCNN.{name}")  # fmt: skip
    (wc, conv), (wb, bn), (wa, act) = _children(
        model.conv1, "model.conv1", nn.Sequential, (nn.Conv3d, nn.BatchNorm3d, nn.ReLU6)
    )
    _check_conv(conv, wc, model.in_channels, 1, stride=1)
    _check_bn(bn, wb, conv.out_channels)
    _check_relu6(act, wa)
    c = conv.out_channels
    block_kinds = (nn.Conv3d, nn.BatchNorm3d, nn.ReLU6) * 2 + (nn.Conv3d, nn.BatchNorm3d)
    for name in ("block1", "block2", "block3", "block4"):
        mods = _children(getattr(model, name), f"model.{name}", SeparableBlock3d, block_kinds)
        (we, ex), (web, exbn), (wea, exact), (wd, dw), (wdb, dwbn), (wda, dwact) = mods[:6]
        (wp, pj), (wpb, pjbn) = mods[6:]
        h = ex.out_channels
        _check_conv(ex, we, c, 1, k=1, stride=1, padding=0)
        _check_bn(exbn, web, h)
        _check_relu6(exact, wea)
        _check_conv(dw, wd, h, h, out_channels=h)
        _check_bn(dwbn, wdb, h)
        _check_relu6(dwact, wda)
        _check_conv(pj, wp, h, 1, k=1, stride=1, padding=0)
        _check_bn(pjbn, wpb, pj.out_channels)
        c = pj.out_channels
    (wg, pool), (wf, flat) = _children(
        model.pool, "model.pool", nn.Sequential, (nn.AdaptiveAvgPool3d, nn.Flatten)
    )
    size = tuple(np.broadcast_to(np.asarray(pool.output_size, dtype=object), 3))
    _require(size == (1, 1, 1), f"{wg} pools to {pool.output_size}, not 1")
    _require((flat.start_dim, flat.end_dim) in ((1, -1), (1, 4)),
             f"{wf} flattens dimensions {flat.start_dim}..{flat.end_dim}, not 1..-1")
    _require(type(model.dropout) in (nn.Dropout, nn.Identity),
             f"model.dropout is a {type(model.dropout).__name__}, not a torch Dropout "
             "(the identity in eval mode)")
    _require_type(model.fc, nn.Linear, "model.fc")
    _require(model.fc.in_features == c,
             f"model.fc takes {model.fc.in_features} features, not {c}")  # fmt: skip


def _check_state(model: EmotionCNN) -> None:
    """No replaced forward, no forward hooks, every module in eval mode."""
    glob = torch.nn.modules.module
    for kind in ("forward_pre", "forward"):
        _require(not getattr(glob, f"_global_{kind}_hooks", None),
                 f"a global {kind.replace('_', ' ')} hook is registered "
                 f"(torch.nn.modules.module.register_module_{kind}_hook)")  # fmt: skip
    training = []
    for name, m in model.named_modules():
        where = f"model.{name}" if name else "model"
        for attr in (*_CALL_METHODS, "features"):
            _require(attr not in vars(m), f"{where} has its own {attr}, set on the instance")
        _require(not m._forward_pre_hooks, f"a forward pre hook is registered on {where}")
        _require(not m._forward_hooks, f"a forward hook is registered on {where}")
        if m.training:
            training.append(where)
    _require(not training,
             f"in training mode: {', '.join(training[:2])}{', ...' if len(training) > 2 else ''}"
             f" ({len(training)} of the modules; batch norm would use batch statistics and"
             " dropout would be random, the engine computes eval mode)")  # fmt: skip


def why_not_incremental(model: nn.Module) -> str | None:
    """Say why the incremental engine cannot compute ``model`` exactly.

    The incremental engine never runs the model's modules: it reads their weights and
    computes the eval-mode forward pass of the original :class:`emolib.models.cnn.EmotionCNN`
    itself. Anything that makes the model compute something else is refused: another class,
    or a subclass overriding ``forward``, ``features`` or the call machinery; a layer of
    another type (a subclass included), order or setting (kernel, stride, padding, groups,
    dilation, channels, padding mode, batch norm without running statistics, pooling to
    other than one voxel, a read-out other than ``nn.Linear``, a dropout other than
    ``nn.Dropout`` or ``nn.Identity``); a ``forward`` set on a module instance; a forward
    hook or forward pre hook on any module or registered globally; a module in training
    mode.

    Parameters
    ----------
    model : torch.nn.Module
        The network, as it would be run.

    Returns
    -------
    str or None
        The first reason found, or None when the incremental engine equals ``model``'s
        forward pass (up to float32 rounding).

    See Also
    --------
    supports_incremental : The same as a bool.
    """
    if not isinstance(model, EmotionCNN):
        return f"the model is a {type(model).__name__}, not an emolib.models.cnn.EmotionCNN"
    try:
        _check_structure(model)
        _check_state(model)
    except _Unsupported as e:
        return str(e)
    except (AttributeError, TypeError, ValueError) as e:  # layers missing or odd attributes
        return f"the model's layers do not have the EmotionCNN's structure ({e})"
    return None


def supports_incremental(model: nn.Module) -> bool:
    """Tell whether the incremental occlusion engine computes ``model`` exactly.

    True for an :class:`emolib.models.cnn.EmotionCNN` of the original structure, without
    hooks or replaced ``forward`` methods, with every module in eval mode
    (:func:`occlusion_map <emolib.occlusion.engine.occlusion_map>` puts the model in eval
    mode before it asks). :func:`why_not_incremental` says why not.

    Parameters
    ----------
    model : torch.nn.Module
        The network.

    Returns
    -------
    bool
    """
    return why_not_incremental(model) is None


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


class IncrementalOcclusion:
    """Incremental occlusion for an EmotionCNN (see the module docstring).

    Raises :class:`ValueError` for a model that :func:`why_not_incremental` refuses (the
    model must be in eval mode already).
    """

    def __init__(self, model: EmotionCNN):
        reason = why_not_incremental(model)
        if reason is not None:
            raise ValueError(f"the incremental engine cannot compute this model: {reason}")
        self.model = model
        p = next(model.parameters())
        dev, dt = p.device, p.dtype
        self.device, self.dtype = dev, dt

        def cast(t: torch.Tensor) -> torch.Tensor:
            return t.to(device=dev, dtype=dt).contiguous()

        conv, bn, _ = model.conv1
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

    def _geoms(self, shape: Triple) -> tuple[list[tuple[int, int, int]], list[Triple]]:
        """(kernel, stride, padding) of every conv (stem, then depthwise) and map sizes."""
        geoms = [(self.k0, 1, self.pd0)] + [(ly.k, ly.st, ly.pd) for ly in self.layers]
        sizes = [shape]
        for k, st, pd in geoms:
            sizes.append(tuple(_conv_out(n, k, st, pd) for n in sizes[-1]))
        return geoms, sizes

    @staticmethod
    def _changed(
        lo: np.ndarray, hi: np.ndarray, geoms: list, sizes: list, d: int
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per conv, the changed output range ``[a, b]`` (inclusive) of each window on axis d."""
        a, b = lo.astype(np.int64), hi.astype(np.int64) - 1
        out = []
        for layer, (k, st, pd) in enumerate(geoms, start=1):
            n_out = sizes[layer][d]
            a = np.maximum(-((-(a + pd - k + 1)) // st), 0)  # ceil division
            b = np.minimum((b + pd) // st, n_out - 1)
            out.append((a, b))
        return out

    def plan(
        self, shape: Triple, bounds: list[tuple[np.ndarray, np.ndarray]], batch_size: int = 64
    ) -> dict:
        """The windows in groups of equal box sizes, with the boxes and halos of each group.

        The box that a window changes in a layer is 2 or 3 positions wide per axis in the
        deep layers, depending on where the window lies against the strides. A single box
        size for all windows (the widest) would do about twice the arithmetic needed, so
        the windows of each axis are put in classes by their widths in every layer, and
        every product of classes is one group, computed with its own (exact) box sizes.
        Classes of fewer than about ``batch_size ** (1/3)`` windows are merged (into the
        class that costs least to widen), so that groups are not so small that the work
        per batch, not the arithmetic, sets the time.
        The grid is separable, so a group is itself a grid: the product of its classes'
        windows. Returns ``{"grid", "groups": [(flat window indices, group plan)],
        "widest"}``, ``widest`` the plan of the whole grid (the sizes of the work buffers).
        """
        geoms, sizes = self._geoms(shape)
        # relative arithmetic per position of each layer's box (its conv, the expansion
        # feeding the next and the projection): what a wider box costs
        cost = [self.w0[0].numel() * self.w0.shape[0]]
        for ly in self.layers:
            cin, hid = ly.we.shape
            cost[-1] += cin * hid
            cost.append(hid * ly.k**3 + hid * ly.wp.shape[1])
        cost = np.asarray(cost, dtype=np.float64)
        per_axis = max(1, round(batch_size ** (1 / 3)))
        classes = []
        for d in range(3):
            widths = np.stack([b - a + 1 for a, b in self._changed(*bounds[d], geoms, sizes, d)])
            keys, inverse = np.unique(widths.T, axis=0, return_inverse=True)
            members = [np.flatnonzero(inverse.reshape(-1) == c) for c in range(len(keys))]
            classes.append(merge_classes(list(keys), members, cost, per_axis))
        grid = tuple(len(lo) for lo, _ in bounds)
        groups = []
        for cx in classes[0]:
            for cy in classes[1]:
                for cz in classes[2]:
                    sel = (cx[:, None, None] * grid[1] + cy[None, :, None]) * grid[2]
                    sel = (sel + cz[None, None, :]).reshape(-1)
                    sub = [(lo[c], hi[c]) for (lo, hi), c in zip(bounds, (cx, cy, cz), strict=True)]
                    groups.append((torch.as_tensor(sel, device=self.device),
                                   self._box_plan(shape, sub)))  # fmt: skip
        return {"grid": grid, "groups": groups, "widest": self._box_plan(shape, bounds)}

    def _box_plan(self, shape: Triple, bounds: list[tuple[np.ndarray, np.ndarray]]) -> dict:
        """Boxes and halos of every layer for every window, per axis (the grid is separable).

        Layer 0 is the input, layer 1 the stem output, layer ``l + 1`` the output of block
        ``l``. For each conv (stem and depthwise) and window, the recomputed output box is
        ``[lo, lo + m)`` (``m`` the same for all the windows given, a group's; the box kept
        inside the map) and its
        halo is the input range ``stride * lo - pad + [0, stride * (m - 1) + k)``.
        """
        dev = self.device
        geoms, sizes = self._geoms(shape)
        box_lo: list[list[np.ndarray]] = [[] for _ in sizes]
        box_m: list[list[int]] = [[] for _ in sizes]
        for d in range(3):
            for layer, (a, b) in enumerate(self._changed(*bounds[d], geoms, sizes, d), start=1):
                n_out = sizes[layer][d]
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
        grid = tuple(len(lo) for lo, _ in bounds)
        return {"sizes": sizes, "m": box_m, "halos": halos, "last": last, "geoms": geoms,
                "grid": grid}  # fmt: skip

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
        plan: dict,
        fill: float,
        batch_size: int,
        bar: tqdm,
    ) -> tuple[np.ndarray, float]:
        """Drops of one volume ``x`` (1, C, X, Y, Z), flat over the window grid (C order)."""
        state = self._volume_state(x, target, plan["widest"], fill, batch_size)
        drops = torch.empty(int(np.prod(plan["grid"])), dtype=torch.float64, device=self.device)
        for sel, sub in plan["groups"]:
            drops[sel] = self._group_drops(state, sub, batch_size, bar)
        return drops.cpu().numpy(), float(state["base_prob"][0])

    def _volume_state(
        self, x: torch.Tensor, target: int, widest: dict, fill: float, batch_size: int
    ) -> dict:
        """Unoccluded activations of one volume and work buffers sized for any group."""
        sizes, box_m, geoms = widest["sizes"], widest["m"], widest["geoms"]
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
        pooled_base = h.mean(0, keepdim=True)  # (1, Cout)
        base_prob = target_prob(F.linear(pooled_base, self.model.fc.weight, self.model.fc.bias),
                                target)  # fmt: skip

        def halo_len(layer: int) -> int:
            k, st, _ = geoms[layer]
            return int(np.prod([st * (m - 1) + k for m in box_m[layer + 1]]))

        new = bufs[0].new_empty
        ws_halo = [new(batch_size * halo_len(i), bufs[i].shape[1]) for i in range(len(bufs))]
        ws_h = [None] + [new(batch_size * int(np.prod(box_m[i + 2])), ly.wp.shape[1])
                         for i, ly in enumerate(self.layers)]  # fmt: skip
        return {"bufs": bufs, "new_at": new_at, "padded": padded, "last_rows": dw_rows,
                "pooled_base": pooled_base, "base_prob": base_prob, "target": target,
                "ws_halo": ws_halo, "ws_h": ws_h, "c_in": c_in}  # fmt: skip

    def _group_drops(self, state: dict, plan: dict, batch_size: int, bar: tqdm) -> torch.Tensor:
        """Drops of the windows of one group (its plan), flat in C order over its grid."""
        bufs, new_at, padded = state["bufs"], state["new_at"], state["padded"]
        ws_halo, ws_h, c_in = state["ws_halo"], state["ws_h"], state["c_in"]
        last_rows, pooled_base = state["last_rows"], state["pooled_base"]
        sizes, box_m, halos = plan["sizes"], plan["m"], plan["halos"]
        n_last = last_rows.shape[0]
        fc_w, fc_b = self.model.fc.weight, self.model.fc.bias

        def conv_relu6(halo: torch.Tensor, w: torch.Tensor, b: torch.Tensor, st: int, g: int):
            """Conv (no padding) + ReLU6 of a channels-last batch of halos, as rows."""
            out = F.conv3d(halo.permute(0, 4, 1, 2, 3), w, b, stride=st, groups=g)
            return out.permute(0, 2, 3, 4, 1).reshape(-1, w.shape[0]).clamp_(0, 6)

        grid = plan["grid"]
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
            prob = target_prob(F.linear(pooled, fc_w, fc_b), state["target"])
            drops[first:last] = state["base_prob"].double() - prob.double()
            bar.update(nb)
        return drops
