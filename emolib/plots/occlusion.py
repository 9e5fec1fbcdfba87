"""Figures of the occlusion chapters: brain maps, top voxels, localisation, UMAP embeddings,
and when in a window of volumes the networks look (temporal profiles)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import nibabel as nib
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import seaborn as sns
from matplotlib.figure import Figure
from scipy.linalg import orthogonal_procrustes

from emolib.plots.labels import class_palette

__all__ = [
    "plot_class_maps", "plot_embedding", "plot_embedding_seeds", "plot_localisation",
    "plot_temporal_profiles", "plot_top_voxels",
]


def _as_image(mask, like: nib.Nifti1Image) -> nib.Nifti1Image:
    if isinstance(mask, nib.spatialimages.SpatialImage):
        return mask
    return nib.Nifti1Image(np.asarray(mask).astype(np.int8), like.affine)


def _peak_mm(img: nib.Nifti1Image) -> tuple[float, float, float]:
    data = np.asanyarray(img.dataobj)
    ijk = np.unravel_index(int(np.nanargmax(data)), data.shape)
    return tuple(float(v) for v in nib.affines.apply_affine(img.affine, ijk))


def plot_class_maps(
    images: dict[str, nib.Nifti1Image],
    bg_img: nib.Nifti1Image | None = None,
    regions: dict[str, object] | None = None,
    kind: str = "stat",
    threshold: float | None = None,
    title: str | None = None,
) -> Figure:
    """Class-mean occlusion maps with nilearn, one row per class, on a common colour scale.

    Parameters
    ----------
    images : dict of str to nibabel.Nifti1Image
        Class -> map (:func:`emolib.occlusion.class_map_images`).
    bg_img : nibabel.Nifti1Image, optional
        Background for ``kind="stat"`` (e.g. a mean EPI of the data); none by default.
    regions : dict of str to image or boolean array, optional
        Planted region of each class, drawn as a green contour (``kind="stat"`` only).
    kind : {"stat", "glass"}, default="stat"
        :func:`nilearn.plotting.plot_stat_map` cut through each map's peak, or
        :func:`nilearn.plotting.plot_glass_brain` (maximum projections, signed).
    threshold : float, optional
        Hide values with an absolute value below it (default: a tenth of the largest
        absolute value for ``"stat"``, so that the background shows, a quarter for
        ``"glass"``).
    title : str, optional
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from nilearn import plotting

    if kind not in ("stat", "glass"):
        raise ValueError(f"kind must be 'stat' or 'glass', got {kind!r}")
    if not images:
        raise ValueError("no map to plot")
    vmax = max(float(np.nanmax(np.abs(np.asanyarray(img.dataobj)))) for img in images.values())
    vmax = vmax if vmax > 0 else 1.0
    n = len(images)
    fig, axes = plt.subplots(n, 1, figsize=(9, 2.3 * n), squeeze=False)
    for ax, (c, img) in zip(axes[:, 0], images.items(), strict=True):
        if kind == "stat":
            display = plotting.plot_stat_map(
                img, bg_img=bg_img, axes=ax, cut_coords=_peak_mm(img), title=c,
                threshold=0.1 * vmax if threshold is None else threshold, vmin=-vmax,
                vmax=vmax, cmap="RdBu_r", symmetric_cbar=True, draw_cross=False,
                annotate=True, black_bg=False, colorbar=True,
                resampling_interpolation="nearest", cbar_tick_format="%.2g")
            if regions is not None and c in regions:
                display.add_contours(_as_image(regions[c], img), levels=[0.5],
                                     colors="limegreen", linewidths=1.2)
        else:
            display = plotting.plot_glass_brain(
                img, axes=ax, display_mode="lyrz", plot_abs=False, title=c,
                threshold=0.25 * vmax if threshold is None else threshold,
                vmin=-vmax, vmax=vmax, cmap="RdBu_r", symmetric_cbar=True, colorbar=True,
                resampling_interpolation="nearest", cbar_tick_format="%.2g")
    if title:  # just above the drawn slices (nilearn leaves the axes' top rows empty)
        top = max(a.get_position().y1 for a in fig.axes if a not in axes[:, 0])
        fig.suptitle(title, y=min(0.995, top + 0.3 / fig.get_figheight()))
    return fig


def _outline_points(mask: np.ndarray, affine: np.ndarray, max_points: int = 1500
                    ) -> np.ndarray:
    from scipy.ndimage import binary_erosion

    mask = np.asarray(mask, bool)
    edge = np.argwhere(mask & ~binary_erosion(mask))
    if len(edge) > max_points:
        edge = edge[np.linspace(0, len(edge) - 1, max_points).astype(int)]
    return nib.affines.apply_affine(np.asarray(affine, float), edge)


def plot_top_voxels(
    table: pd.DataFrame,
    classes: Sequence[str],
    brain_mask: np.ndarray | None = None,
    affine: np.ndarray | None = None,
    regions: dict[str, np.ndarray] | None = None,
    title: str = "Top voxels of each class's occlusion map",
) -> go.Figure:
    """Interactive 3-D view of each class's top voxels (world coordinates, mm).

    Parameters
    ----------
    table : pandas.DataFrame
        :func:`emolib.occlusion.top_voxels` with world coordinates (``x``, ``y``, ``z``).
    classes : sequence of str
        All class names (fixes the colours).
    brain_mask : numpy.ndarray, optional
        Its outline is drawn as faint grey points (needs ``affine``).
    affine : numpy.ndarray, optional
        Affine of the grid, for ``brain_mask`` and ``regions``.
    regions : dict of str to numpy.ndarray, optional
        Planted regions; each one's centre is drawn as a diamond of its class's colour.
    title : str
        Figure title.

    Returns
    -------
    plotly.graph_objects.Figure
    """
    palette = class_palette(list(classes))
    fig = go.Figure()
    if brain_mask is not None and affine is not None:
        pts = _outline_points(brain_mask, affine)
        fig.add_trace(go.Scatter3d(x=pts[:, 0], y=pts[:, 1], z=pts[:, 2], mode="markers",
                                   marker={"size": 1.5, "color": "lightgrey"},
                                   name="brain outline", hoverinfo="skip"))
    for c in classes:
        t = table[table["class"] == c]
        if t.empty:
            continue
        fig.add_trace(go.Scatter3d(
            x=t["x"], y=t["y"], z=t["z"], mode="markers", name=c, legendgroup=c,
            marker={"size": 4, "color": palette[c], "opacity": 0.8},
            customdata=np.stack([t["rank"], t["drop"]], axis=1),
            hovertemplate=f"{c}<br>rank %{{customdata[0]}}<br>drop %{{customdata[1]:.3f}}"
                          "<br>(%{x:.0f}, %{y:.0f}, %{z:.0f}) mm<extra></extra>"))
    if regions is not None and affine is not None:
        for c, reg in regions.items():
            if c not in palette or not np.asarray(reg).any():
                continue
            centre = nib.affines.apply_affine(np.asarray(affine, float),
                                              np.argwhere(reg).mean(axis=0))
            fig.add_trace(go.Scatter3d(
                x=[centre[0]], y=[centre[1]], z=[centre[2]], mode="markers",
                name=f"planted {c}", legendgroup=c,
                marker={"size": 9, "symbol": "diamond", "color": palette[c],
                        "line": {"color": "black", "width": 2}}))
    fig.update_layout(title=title, height=560, margin={"l": 0, "r": 0, "t": 50, "b": 0},
                      scene={"xaxis_title": "x (mm)", "yaxis_title": "y (mm)",
                             "zaxis_title": "z (mm)", "aspectmode": "data"})
    return fig


def plot_localisation(matrix: pd.DataFrame, title: str = "Occlusion map vs planted region "
                      "(ROC AUC inside the brain)") -> Figure:
    """Heatmap of :func:`emolib.occlusion.localisation_matrix`: maps x planted regions."""
    fig, ax = plt.subplots(figsize=(1.1 * matrix.shape[1] + 2.5, 0.7 * matrix.shape[0] + 1.5))
    sns.heatmap(matrix.astype(float), annot=True, fmt=".2f", vmin=0, vmax=1, center=0.5,
                cmap="RdBu_r", square=True, cbar_kws={"label": "AUC"}, ax=ax)
    ax.set_xlabel("planted region")
    ax.set_ylabel("occlusion map of class")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_embedding(
    embedding: np.ndarray,
    labels: Sequence[str],
    classes: Sequence[str] | None = None,
    title: str = "UMAP",
    hover: pd.DataFrame | None = None,
    legend_title: str = "class",
) -> go.Figure:
    """Interactive scatter of a 2-D embedding, one colour per class.

    Parameters
    ----------
    embedding : numpy.ndarray, shape (n, 2)
        Embedded points.
    labels : sequence of str
        Class of each point (the colour).
    classes : sequence of str, optional
        All classes (fixes colours and legend order); default: the labels present.
    title : str
        Figure title.
    hover : pandas.DataFrame, optional
        Columns shown when hovering over a point (one row per point).
    legend_title : str
        Title of the legend.

    Returns
    -------
    plotly.graph_objects.Figure
    """
    embedding = np.asarray(embedding)
    labels = np.asarray(labels).astype(str)
    if len(labels) != len(embedding):
        raise ValueError(f"{len(embedding)} points but {len(labels)} labels")
    classes = list(classes) if classes is not None else sorted(set(labels))
    palette = class_palette(classes)
    fig = go.Figure()
    for c in classes:
        sel = labels == c
        if not sel.any():
            continue
        text = None
        if hover is not None:
            h = hover.iloc[np.flatnonzero(sel)]
            text = ["<br>".join(f"{k}: {v}" for k, v in row.items())
                    for row in h.to_dict("records")]
        fig.add_trace(go.Scattergl(
            x=embedding[sel, 0], y=embedding[sel, 1], mode="markers", name=c, text=text,
            marker={"size": 5, "color": palette[c], "opacity": 0.75},
            hovertemplate=(f"<b>{c}</b><br>%{{text}}<extra></extra>" if text is not None
                           else f"<b>{c}</b><extra></extra>")))
    fig.update_layout(title=title, height=480, legend_title_text=legend_title,
                      xaxis={"title": "UMAP 1", "showticklabels": False},
                      yaxis={"title": "UMAP 2", "showticklabels": False,
                             "scaleanchor": "x", "scaleratio": 1})
    return fig


def _align(ref: np.ndarray, emb: np.ndarray) -> np.ndarray:
    a = (ref - ref.mean(0)) / np.linalg.norm(ref - ref.mean(0))
    b = (emb - emb.mean(0)) / np.linalg.norm(emb - emb.mean(0))
    rot, _ = orthogonal_procrustes(b, a)
    return b @ rot


def plot_embedding_seeds(
    embeddings: dict[int, np.ndarray],
    labels: Sequence[str],
    classes: Sequence[str] | None = None,
    title: str = "The same UMAP with different seeds",
) -> Figure:
    """Small multiples of one embedding fitted with several seeds.

    Each is centred, scaled and rotated/reflected onto the first seed's (orthogonal
    Procrustes), so that what differs between the panels is what the seed changed.

    Returns
    -------
    matplotlib.figure.Figure
    """
    labels = np.asarray(labels).astype(str)
    classes = list(classes) if classes is not None else sorted(set(labels))
    palette = class_palette(classes)
    seeds = list(embeddings)
    ref = np.asarray(embeddings[seeds[0]], float)
    fig, axes = plt.subplots(1, len(seeds), figsize=(3.3 * len(seeds), 3.4), squeeze=False)
    for ax, s in zip(axes[0], seeds, strict=True):
        e = _align(ref, np.asarray(embeddings[s], float))
        for c in classes:
            sel = labels == c
            if sel.any():
                ax.scatter(e[sel, 0], e[sel, 1], s=5, color=palette[c], alpha=0.7,
                           label=c, linewidths=0)
        ax.set_title(f"seed {s}")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_aspect("equal", adjustable="datalim")
    handles, names = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=min(len(names), 6), frameon=False,
               markerscale=3, bbox_to_anchor=(0.5, -0.06))
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_temporal_profiles(offsets: Sequence[int], profiles: dict[str, np.ndarray],
                           planted: np.ndarray | None = None, tr: float = 2.0,
                           title: str = "When in the window the networks look") -> Figure:
    """Temporal importance profiles of window networks, each scaled to its peak.

    Parameters
    ----------
    offsets : sequence of int
        Volume offsets of the window relative to the labelled volume.
    profiles : dict of str to numpy.ndarray
        Per network, a ``(T,)`` profile (e.g. the class mean of
        :func:`emolib.occlusion.temporal_profile`).
    planted : numpy.ndarray, optional
        ``(T,)`` planted contrast at the same offsets
        (:func:`emolib.synthetic.planted_profile`, class mean): drawn dashed.
    tr : float, default=2.0
        Seconds between volumes (the top axis).
    """
    offsets = np.asarray(offsets)
    fig, ax = plt.subplots(figsize=(6.5, 3.4), layout="constrained")
    colours = sns.color_palette("Set2", max(len(profiles), 1)).as_hex()
    curves = [(name, prof, dict(color=c))
              for (name, prof), c in zip(profiles.items(), colours, strict=True)]
    if planted is not None:
        curves.insert(0, ("planted response", planted, dict(color="black", ls="--")))
    for name, prof, style in curves:
        prof = np.asarray(prof, dtype=float)
        peak = np.nanmax(np.abs(prof)) if np.isfinite(prof).any() else 0.0
        scaled = prof / peak if peak > 0 else prof
        ax.plot(offsets, scaled, marker="o", label=name, **style)
        if peak > 0:  # the peak (of either sign), where the curve reaches +-1
            at = int(np.nanargmax(np.abs(scaled)))
            ax.plot(offsets[at], scaled[at], marker="v" if scaled[at] > 0 else "^", ms=9,
                    color=style["color"], ls="none")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xticks(offsets)
    ax.set_xlabel("volume offset from the labelled volume")
    ax.set_ylabel("importance (scaled to its peak)")
    top = ax.secondary_xaxis("top", functions=(lambda v: v * tr, lambda s: s / tr))
    top.set_xlabel("seconds")
    ax.legend(frameon=False, fontsize=8)
    ax.set_title(title)
    return fig
