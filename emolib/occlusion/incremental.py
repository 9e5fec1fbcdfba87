"""The incremental occlusion engine, exact for :class:`emolib.models.EmotionCNN`.

In eval mode the network is a chain of local operators up to the global average pool. Batch
norm is folded into the convolutions, and the unoccluded activations of every layer are
computed once per volume. For a window, only the box of each layer's activations that the
patch can reach is recomputed (about 3 x 3 x 3 positions in the deep layers), batched over
windows: the input of each 3x3x3 convolution is gathered from the cached activations (kept
with their zero padding) with the recomputed box of the layer below spliced in. The
projection of the last block and the pool are linear, so the new pooled vector is the cached
one plus the change of the last depthwise output, summed over its box, projected and divided
by the number of positions. The result equals the plain forward pass up to float32 rounding
(about 1e-7 in probabilities). This is incremental CNN inference for occlusion (Nakandala et
al., 2019, "Incremental and approximate inference for faster occlusion-based deep CNN
explanations"), without their approximations.
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
from emolib.occlusion.grid import Triple, target_prob

__all__ = [
    "IncrementalOcclusion", "supports_incremental",
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

    True for an :class:`emolib.models.cnn.EmotionCNN` whose ``forward`` is not overridden and
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


class IncrementalOcclusion:
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
        base_prob = target_prob(F.linear(pooled_base, fc_w, fc_b), target)

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
            prob = target_prob(F.linear(pooled, fc_w, fc_b), target)
            drops[first:last] = base_prob.double() - prob.double()
            bar.update(nb)
        return drops.cpu().numpy(), float(base_prob[0])
