"""Figures of the RSA chapters: ROI x layer heatmaps, system bars, hierarchy, radar, 3D surface,
Mantel null and group contrasts along the layers.

Every helper takes the tidy table of :func:`emolib.rsa.compare_table` (columns ``subject``,
``roi``, ``layer``, ``value``; optionally ``method``) or of
:meth:`emolib.rsa.BootstrapResult.to_frame` (adds ``ci_low``/``ci_high``), and returns a
matplotlib or plotly Figure without showing it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from emolib.io.bold5000 import ROI_AREAS, ROIS, SYSTEMS, roi_area, roi_system

__all__ = [
    "plot_group_contrast", "plot_hierarchy_alignment", "plot_joint_heatmap",
    "plot_mantel", "plot_radar", "plot_roi_layer_heatmaps", "plot_rsa_surface",
    "plot_system_bars",
]


def _ordered(values: Sequence, preferred: Sequence | None = None) -> list:
    """Unique values, in ``preferred`` order first, then in order of appearance."""
    seen = list(dict.fromkeys(values))
    if preferred is None:
        return seen
    return [v for v in preferred if v in seen] + [v for v in seen if v not in preferred]


def _select_method(table: pd.DataFrame, method: str | None) -> pd.DataFrame:
    if "method" not in table.columns:
        return table
    methods = list(dict.fromkeys(table["method"]))
    if method is None:
        if len(methods) > 1:
            raise ValueError(f"the table holds several methods {methods}; pass method=")
        return table
    out = table[table["method"] == method]
    if out.empty:
        raise ValueError(f"no rows with method {method!r} (have {methods})")
    return out


def _with_subject(table: pd.DataFrame) -> pd.DataFrame:
    if "subject" not in table.columns or table["subject"].isna().all():
        table = table.assign(subject="all")
    return table


def _system_table(
    table: pd.DataFrame, systems: Mapping[str, Sequence[str]]
) -> pd.DataFrame:
    """Average ROI rows into systems (rows already named by system are kept)."""
    t = table.assign(system=[roi_system(r, systems) for r in table["roi"]])
    t = t[t["system"].notna()]
    cols = [c for c in ("value", "ci_low", "ci_high") if c in t.columns]
    return t.groupby(["subject", "system", "layer"], sort=False, as_index=False)[cols].mean()


def plot_roi_layer_heatmaps(
    table: pd.DataFrame,
    *,
    subjects: Sequence[str] | None = None,
    rois: Sequence[str] | None = None,
    layers: Sequence[str] | None = None,
    method: str | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
    cmap: str = "viridis",
    annot: bool = True,
    title: str | None = None,
) -> Figure:
    """One ROI x layer heatmap per subject (seaborn), sharing one colour scale.

    Parameters
    ----------
    table : pandas.DataFrame
        Tidy comparison table (``subject``, ``roi``, ``layer``, ``value``).
    subjects, rois, layers : sequence of str, optional
        What to draw and in which order (default: all; ROIs in BOLD5000 order).
    method : str, optional
        Which method's rows, when the table holds several.
    vmin, vmax : float, optional
        Colour limits (default: the data's range).
    cmap : str, default="viridis"
        Colour map.
    annot : bool, default=True
        Write the values in the cells.
    title : str, optional
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure
        ``len(subjects)`` heatmap axes plus one colour-bar axes.
    """
    t = _with_subject(_select_method(table, method))
    subjects = list(subjects) if subjects is not None else _ordered(t["subject"])
    rois = list(rois) if rois is not None else _ordered(t["roi"], ROIS)
    layers = list(layers) if layers is not None else _ordered(t["layer"])
    t = t[t["subject"].isin(subjects)]
    vmin = float(t["value"].min()) if vmin is None else vmin
    vmax = float(t["value"].max()) if vmax is None else vmax
    n = len(subjects)
    fig, axes = plt.subplots(
        1, n + 1, figsize=(1.1 * len(layers) * n + 1.8, 0.38 * len(rois) + 1.6),
        gridspec_kw={"width_ratios": [1] * n + [0.06]}, layout="constrained",
    )
    cax = axes[-1]
    for k, subject in enumerate(subjects):
        piv = (
            t[t["subject"] == subject]
            .pivot_table(index="roi", columns="layer", values="value", aggfunc="mean")
            .reindex(index=rois, columns=layers)
        )
        sns.heatmap(
            piv, ax=axes[k], vmin=vmin, vmax=vmax, cmap=cmap, annot=annot, fmt=".2f",
            annot_kws={"fontsize": 7}, cbar=k == 0, cbar_ax=cax if k == 0 else None,
            cbar_kws={"label": "RDM similarity"},
        )
        axes[k].set_title(str(subject))
        axes[k].set_xlabel("layer")
        axes[k].set_ylabel("ROI" if k == 0 else "")
        if k > 0:
            axes[k].set_yticklabels([])
    if title:
        fig.suptitle(title)
    return fig


def plot_joint_heatmap(
    table: pd.DataFrame, *, subject: str = "joint", method: str | None = None, **kwargs
) -> Figure:
    """Heatmap of the joint comparison (subjects' mean RDM vectors, then compared).

    Parameters
    ----------
    table : pandas.DataFrame
        Comparison table of the joint RDMs (:func:`emolib.rsa.calc_joint_rdms`); rows whose
        ``subject`` is ``subject`` are drawn.
    subject : str, default="joint"
        Subject label of the joint rows.
    method : str, optional
        Which method's rows.
    **kwargs
        Passed to :func:`plot_roi_layer_heatmaps`.

    Returns
    -------
    matplotlib.figure.Figure
        One heatmap axes and one colour-bar axes.
    """
    t = _with_subject(_select_method(table, method))
    if subject in set(t["subject"]):
        t = t[t["subject"] == subject]
    elif t["subject"].nunique() == 1:
        subject = t["subject"].iloc[0]
    else:
        raise ValueError(f"no rows of subject {subject!r}; compute the joint table first")
    kwargs.setdefault("title", "Joint RSA (mean of the subjects' RDMs)")
    return plot_roi_layer_heatmaps(t, subjects=[subject], **kwargs)


def plot_system_bars(
    table: pd.DataFrame,
    *,
    noise_ceiling: pd.DataFrame | None = None,
    systems: Mapping[str, Sequence[str]] = SYSTEMS,
    subjects: Sequence[str] | None = None,
    layers: Sequence[str] | None = None,
    method: str | None = None,
    xlabel: str = "visual system",
) -> Figure:
    """Grouped bars by visual system (Early, Mid, High), one bar per layer, one panel per subject.

    Parameters
    ----------
    table : pandas.DataFrame
        Tidy table with ``roi`` either ROI names (averaged into systems) or system names;
        ``ci_low``/``ci_high`` columns give error bars. For exact system-level intervals,
        aggregate the bootstrap first (:meth:`emolib.rsa.BootstrapResult.aggregate` with
        :func:`emolib.bold5000.roi_system`) and pass its ``to_frame()``.
    noise_ceiling : pandas.DataFrame, optional
        Columns ``roi`` (ROI or system), ``lower``, ``upper`` (e.g.
        :func:`emolib.rsa.calc_noise_ceiling`): a grey band per system.
    systems : mapping, default=SYSTEMS
        System name to ROI areas.
    subjects, layers : sequence of str, optional
        What to draw, in order.
    method : str, optional
        Which method's rows.
    xlabel : str, default="visual system"
        Label of the x-axes (the groups need not be visual systems: any mapping of group
        name to ROI names works, e.g. planted regions and control parcels).

    Returns
    -------
    matplotlib.figure.Figure
        One axes per subject.
    """
    t = _system_table(_with_subject(_select_method(table, method)), systems)
    subjects = list(subjects) if subjects is not None else _ordered(t["subject"])
    layers = list(layers) if layers is not None else _ordered(t["layer"])
    names = [s for s in systems if s in set(t["system"])]
    colours = sns.color_palette("viridis", n_colors=len(layers))
    n = len(subjects)
    fig, axes = plt.subplots(
        1, n, figsize=(3.2 * n + 1.5, 3.4), sharey=True, squeeze=False, layout="constrained"
    )
    width = 0.8 / max(len(layers), 1)
    nc = None
    if noise_ceiling is not None:
        nc = noise_ceiling.assign(system=[roi_system(r, systems) for r in noise_ceiling["roi"]])
        nc = nc[nc["system"].notna()].groupby("system")[["lower", "upper"]].mean()
    for k, subject in enumerate(subjects):
        ax = axes[0, k]
        sub = t[t["subject"] == subject].set_index(["system", "layer"])
        for li, layer in enumerate(layers):
            x = np.arange(len(names)) - 0.4 + width * (li + 0.5)
            keys = [(s, layer) for s in names]
            vals = np.array([sub["value"].get(key, np.nan) for key in keys])
            yerr = None
            if {"ci_low", "ci_high"} <= set(sub.columns):
                lo = np.array([sub["ci_low"].get(key, np.nan) for key in keys])
                hi = np.array([sub["ci_high"].get(key, np.nan) for key in keys])
                yerr = np.clip(np.vstack([vals - lo, hi - vals]), 0, None)
            ax.bar(x, vals, width=width, color=colours[li], label=layer, yerr=yerr,
                   capsize=2, error_kw={"elinewidth": 0.8})
        if nc is not None:
            for si, s in enumerate(names):
                if s in nc.index:
                    ax.fill_between(
                        [si - 0.45, si + 0.45], nc.loc[s, "lower"], nc.loc[s, "upper"],
                        color="0.6", alpha=0.35, linewidth=0,
                        label="noise ceiling" if si == 0 else None, zorder=0,
                    )
        ax.axhline(0, color="0.3", linewidth=0.6)
        ax.set_xticks(np.arange(len(names)), names)
        ax.set_title(str(subject))
        ax.set_xlabel(xlabel)
    axes[0, 0].set_ylabel("RDM similarity")
    axes[0, -1].legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1, 1))
    return fig


def plot_hierarchy_alignment(
    table: pd.DataFrame,
    *,
    kind: str = "peak",
    systems: Mapping[str, Sequence[str]] = SYSTEMS,
    layers: Sequence[str] | None = None,
    method: str | None = None,
    truth: Mapping[str, str] | None = None,
    title: str | None = None,
) -> Figure:
    """Hierarchy alignment: which layer depth best matches each stage of visual cortex.

    Parameters
    ----------
    table : pandas.DataFrame
        Tidy comparison table.
    kind : {"peak", "profile"}, default="peak"
        ``"peak"``: the peak layer (depth 1..n) of every ROI and subject, against the ROI
        areas ordered from early to high (mean line through them). ``"profile"``: x = layer
        depth, y = similarity per system (mean line; subjects as points).
    systems : mapping, default=SYSTEMS
        System name to ROI areas.
    layers : sequence of str, optional
        Layer order (depth).
    method : str, optional
        Which method's rows.
    truth : mapping of str to str, optional
        Planted best layer per ROI (``truth.json``'s ``best_layer``), drawn as diamonds.
    title : str, optional
        Axes title (default: one that names the kind).

    Returns
    -------
    matplotlib.figure.Figure
        One axes.
    """
    t = _with_subject(_select_method(table, method))
    layers = list(layers) if layers is not None else _ordered(t["layer"])
    depth = {layer: i + 1 for i, layer in enumerate(layers)}
    fig, ax = plt.subplots(figsize=(5.5, 3.6), layout="constrained")
    if kind == "peak":
        areas = [a for a in ROI_AREAS if any(roi_area(r) == a for r in t["roi"])]
        areas += [a for a in _ordered(roi_area(r) for r in t["roi"]) if a not in areas]
        idx = t.groupby(["subject", "roi"], sort=False)["value"].idxmax()
        peaks = t.loc[idx, ["subject", "roi", "layer"]].copy()
        peaks["area"] = [roi_area(r) for r in peaks["roi"]]
        peaks["depth"] = peaks["layer"].map(depth)
        peaks["x"] = peaks["area"].map({a: i for i, a in enumerate(areas)})
        rng = np.random.default_rng(0)
        jitter = rng.uniform(-0.12, 0.12, len(peaks))
        ax.scatter(peaks["x"] + jitter, peaks["depth"], s=18, alpha=0.6, color="tab:blue",
                   label="ROI x subject")
        mean = peaks.groupby("x")["depth"].mean()
        ax.plot(mean.index, mean.to_numpy(), color="tab:blue", marker="o", label="mean")
        if truth is not None:
            tr = {roi_area(r): depth.get(v) for r, v in truth.items() if v is not None}
            xs = [i for i, a in enumerate(areas) if tr.get(a) is not None]
            ax.scatter(xs, [tr[areas[i]] for i in xs], marker="D", color="k", s=30,
                       label="planted", zorder=3)
        ax.set_xticks(range(len(areas)), areas)
        ax.set_yticks(list(depth.values()), list(depth))
        ax.set_xlabel("ROI (early to high-level)")
        ax.set_ylabel("peak layer")
        ax.set_title("Hierarchy alignment: peak layer per ROI")
    elif kind == "profile":
        s = _system_table(t, systems)
        s["depth"] = s["layer"].map(depth)
        colours = sns.color_palette("deep", n_colors=len(systems))
        for ci, name in enumerate(systems):
            sel = s[s["system"] == name]
            if sel.empty:
                continue
            ax.scatter(sel["depth"], sel["value"], color=colours[ci], s=12, alpha=0.5)
            mean = sel.groupby("depth")["value"].mean()
            ax.plot(mean.index, mean.to_numpy(), color=colours[ci], marker="o", label=name)
        ax.set_xticks(list(depth.values()), list(depth))
        ax.set_xlabel("layer depth")
        ax.set_ylabel("RDM similarity")
        ax.set_title("Hierarchy alignment: similarity per system")
    else:
        raise ValueError("kind must be 'peak' or 'profile'")
    if title is not None:
        ax.set_title(title)
    ax.legend(fontsize=7, frameon=False)
    return fig


def plot_radar(
    table: pd.DataFrame,
    *,
    systems: Mapping[str, Sequence[str]] = SYSTEMS,
    subjects: Sequence[str] | None = None,
    layers: Sequence[str] | None = None,
    method: str | None = None,
) -> Figure:
    """Radar charts (matplotlib polar axes): layers around the circle, one line per system.

    Parameters
    ----------
    table : pandas.DataFrame
        Tidy comparison table (ROIs are averaged into systems).
    systems : mapping, default=SYSTEMS
        System name to ROI areas.
    subjects, layers : sequence of str, optional
        What to draw, in order.
    method : str, optional
        Which method's rows.

    Returns
    -------
    matplotlib.figure.Figure
        One polar axes per subject.
    """
    t = _system_table(_with_subject(_select_method(table, method)), systems)
    subjects = list(subjects) if subjects is not None else _ordered(t["subject"])
    layers = list(layers) if layers is not None else _ordered(t["layer"])
    angles = np.linspace(0, 2 * np.pi, len(layers), endpoint=False)
    closed = np.concatenate([angles, angles[:1]])
    lo = min(0.0, float(t["value"].min()))
    hi = float(t["value"].max())
    colours = sns.color_palette("deep", n_colors=len(systems))
    n = len(subjects)
    fig, axes = plt.subplots(
        1, n, figsize=(3.3 * n + 1.2, 3.6), subplot_kw={"projection": "polar"},
        squeeze=False, layout="constrained",
    )
    for k, subject in enumerate(subjects):
        ax = axes[0, k]
        sub = t[t["subject"] == subject]
        for ci, name in enumerate(systems):
            sel = sub[sub["system"] == name].set_index("layer")["value"]
            if sel.empty:
                continue
            vals = sel.reindex(layers).to_numpy()
            vals = np.concatenate([vals, vals[:1]])
            ax.plot(closed, vals, color=colours[ci], label=name)
            ax.fill(closed, vals, color=colours[ci], alpha=0.15)
        ax.set_xticks(angles, layers, fontsize=8)
        ax.set_ylim(lo, hi + 0.05 * (hi - lo + 1e-12))
        ax.yaxis.set_major_locator(MaxNLocator(3))
        ax.tick_params(axis="y", labelsize=6)
        ax.set_rlabel_position(100)
        ax.set_title(str(subject), pad=14)
    axes[0, -1].legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.05, 1))
    return fig


def plot_rsa_surface(
    table: pd.DataFrame,
    *,
    groups: str = "system",
    subject: str | None = None,
    systems: Mapping[str, Sequence[str]] = SYSTEMS,
    layers: Sequence[str] | None = None,
    method: str | None = None,
) -> go.Figure:
    """3D RSA surface (plotly ``go.Surface``): ROI group x layer, height = similarity.

    Parameters
    ----------
    table : pandas.DataFrame
        Tidy comparison table.
    groups : {"system", "roi"}, default="system"
        Rows of the surface: systems (ROIs averaged) or the ROIs themselves.
    subject : str, optional
        One subject's rows (default: the mean over subjects).
    systems : mapping, default=SYSTEMS
        System name to ROI areas.
    layers : sequence of str, optional
        Layer order.
    method : str, optional
        Which method's rows.

    Returns
    -------
    plotly.graph_objects.Figure
        One ``Surface`` trace.
    """
    t = _with_subject(_select_method(table, method))
    if subject is not None:
        t = t[t["subject"] == subject]
    layers = list(layers) if layers is not None else _ordered(t["layer"])
    if groups == "system":
        s = _system_table(t, systems)
        rows = [name for name in systems if name in set(s["system"])]
        z = s.groupby(["system", "layer"])["value"].mean().unstack().reindex(
            index=rows, columns=layers
        )
    elif groups == "roi":
        rows = _ordered(t["roi"], ROIS)
        z = t.groupby(["roi", "layer"])["value"].mean().unstack().reindex(
            index=rows, columns=layers
        )
    else:
        raise ValueError("groups must be 'system' or 'roi'")
    fig = go.Figure(
        go.Surface(
            x=np.arange(len(layers)), y=np.arange(len(rows)), z=z.to_numpy(),
            colorscale="Viridis", colorbar={"title": "similarity"},
            hovertemplate="layer %{x}<br>group %{y}<br>%{z:.3f}<extra></extra>",
        )
    )
    fig.update_layout(
        title=f"RSA surface ({'mean of subjects' if subject is None else subject})",
        scene={
            "xaxis": {"title": "layer", "tickvals": list(range(len(layers))), "ticktext": layers},
            "yaxis": {"title": groups, "tickvals": list(range(len(rows))), "ticktext": rows},
            "zaxis": {"title": "similarity"},
        },
        margin={"l": 0, "r": 0, "t": 40, "b": 0},
    )
    return fig


def plot_mantel(result, *, title: str | None = None, xlabel: str = "RDM similarity") -> Figure:
    """Histogram of a Mantel test's permutation null with the observed similarity.

    Parameters
    ----------
    result : emolib.rsa.MantelResult
        From :func:`emolib.rsa.calc_mantel`.
    title : str, optional
        Axes title (default: names the test and the number of permutations).
    xlabel : str, default="RDM similarity"
        Label of the x-axis.

    Returns
    -------
    matplotlib.figure.Figure
        One axes: the null (the identity permutation included when exact) and a line at the
        observed value, labelled with the p-value.
    """
    null = np.asarray(result.null_distribution)
    fig, ax = plt.subplots(figsize=(6, 3.2), layout="constrained")
    ax.hist(null, bins=min(30, max(5, len(null) // 4)), color="#bbbbbb", edgecolor="white")
    ax.axvline(result.statistic, color="#d62728", lw=2,
               label=f"observed {result.statistic:.3f}, p = {result.p_value:.3g}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("permutations")
    ax.legend(frameon=False, fontsize=8)
    what = "all" if result.exact else "random"
    ax.set_title(title or f"Mantel test ({what} {len(null)} permutations, {result.method})")
    return fig


def plot_group_contrast(
    table: pd.DataFrame,
    *,
    layers: Sequence[str] | None = None,
    subjects: Sequence[str] | None = None,
    title: str | None = None,
    ylabel: str | None = None,
) -> Figure:
    """A difference of similarities along the layers, one line per subject, with intervals.

    Parameters
    ----------
    table : pandas.DataFrame
        From :func:`emolib.rsa.calc_group_contrast`: ``layer``, ``diff``, ``ci_low``,
        ``ci_high``, optionally ``subject``, ``a``, ``b``, ``significant``.
    layers, subjects : sequence of str, optional
        What to draw, in order.
    title, ylabel : str, optional
        Title and y-label (default: from ``a`` and ``b``).

    Returns
    -------
    matplotlib.figure.Figure
        One axes; filled markers are FDR-significant differences.
    """
    t = _with_subject(table)
    layers = list(layers) if layers is not None else _ordered(t["layer"])
    subjects = list(subjects) if subjects is not None else _ordered(t["subject"])
    x = np.arange(len(layers))
    fig, ax = plt.subplots(figsize=(6, 3.4), layout="constrained")
    colours = sns.color_palette("deep", n_colors=len(subjects))
    width = 0.5 / max(len(subjects), 1)
    for k, subject in enumerate(subjects):
        sub = t[t["subject"] == subject].set_index("layer").reindex(layers)
        xs = x + (k - (len(subjects) - 1) / 2) * width
        err = np.clip(np.vstack([sub["diff"] - sub["ci_low"], sub["ci_high"] - sub["diff"]]),
                      0, None)
        ax.errorbar(xs, sub["diff"], yerr=err, color=colours[k], marker="o", capsize=2,
                    lw=1.5 if subject == "joint" else 0.8, label=str(subject),
                    markerfacecolor="white")
        if "significant" in sub.columns:
            sig = sub["significant"].fillna(False).to_numpy(dtype=bool)
            ax.scatter(xs[sig], sub["diff"].to_numpy()[sig], color=colours[k], zorder=3, s=22)
    ax.axhline(0, color="0.3", lw=0.7)
    ax.set_xticks(x, layers)
    ax.set_xlabel("layer")
    a = t["a"].iloc[0] if "a" in t.columns else "a"
    b = t["b"].iloc[0] if "b" in t.columns else "b"
    ax.set_ylabel(ylabel or f"similarity: {a} minus {b}")
    ax.set_title(title or f"{a} against {b} (filled: FDR-significant)")
    ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1, 1))
    return fig
