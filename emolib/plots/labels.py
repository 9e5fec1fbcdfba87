"""Figures of the data-preparation chapter: labels over the movie, class counts, data views."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import seaborn as sns
from matplotlib.figure import Figure

from emolib.forrest.timing import RunTiming

__all__ = [
    "class_palette", "plot_class_counts", "plot_label_status", "plot_label_timeline",
    "plot_labels_by_run", "plot_mean_epis",
]

_STATUS_ORDER = ("kept", "ambiguous", "no majority", "unannotated")


def class_palette(classes: list[str]) -> dict[str, str]:
    """A fixed colour per class (seaborn's ``tab10`` in sorted class order)."""
    colours = sns.color_palette("tab10", n_colors=max(len(classes), 1)).as_hex()
    return {c: colours[i % len(colours)] for i, c in enumerate(sorted(classes))}


def plot_label_timeline(
    labels: pd.DataFrame, classes: list[str], timing: RunTiming | None = None,
    title: str = "Consensus labels over the movie",
) -> go.Figure:
    """Interactive timeline: one row per class, a mark per kept 2-s step; runs shaded.

    Parameters
    ----------
    labels : pandas.DataFrame
        Output of :func:`emolib.forrest.labels.consensus_labels`.
    classes : list of str
        Classes to draw (others are drawn in one grey "other" row).
    timing : RunTiming, optional
        When given, each run's movie segment is shaded and the overlaps marked.
    """
    kept = labels[labels["label"].notna()]
    pal = class_palette(classes)
    fig = go.Figure()
    rows = [*sorted(classes), "other"]
    for c in rows:
        sel = kept[kept["label"].isin(classes) == (c != "other")]
        if c != "other":
            sel = sel[sel["label"] == c]
        if sel.empty:
            continue
        fig.add_trace(go.Scattergl(
            x=sel["onset"] / 60.0, y=[c] * len(sel), mode="markers", name=c,
            marker={"symbol": "line-ns-open", "size": 14, "color": pal.get(c, "#999999")},
            customdata=np.stack([sel["label"].astype(str), sel["n_agree"]], axis=1),
            hovertemplate="%{x:.2f} min<br>%{customdata[0]}<br>%{customdata[1]} observers"
                          "<extra></extra>",
        ))
    if timing is not None:
        for r, (s, n) in enumerate(zip(timing.starts, timing.n_volumes, strict=True), start=1):
            fig.add_vrect(x0=s / 60, x1=(s + timing.tr * n) / 60, opacity=0.06 + 0.06 * (r % 2),
                          fillcolor="steelblue", line_width=0, layer="below",
                          annotation_text=f"run {r}", annotation_position="top left",
                          annotation_font_size=10)
        for _, r2, _sec in timing.overlaps():
            fig.add_vline(x=timing.starts[r2 - 1] / 60, line_dash="dot", line_color="grey",
                          line_width=1)
    fig.update_layout(title=title, xaxis_title="movie time (min)", yaxis_title="",
                      height=360, margin={"l": 110, "r": 20, "t": 60, "b": 50},
                      legend={"orientation": "h", "y": -0.25}, showlegend=False)
    fig.update_yaxes(categoryorder="array", categoryarray=rows[::-1])
    return fig


def plot_class_counts(
    tables: dict[str, pd.DataFrame], min_count: int | None = None, top: int = 12,
) -> go.Figure:
    """Grouped bars of kept steps per label, one group per labelling mode.

    Parameters
    ----------
    tables : dict of str to pandas.DataFrame
        Mode name -> consensus label table.
    min_count : int, optional
        Draw the class-selection threshold as a line.
    top : int, default=12
        Show the ``top`` most frequent labels (over all modes).
    """
    counts = pd.DataFrame({m: t["label"].dropna().value_counts() for m, t in tables.items()})
    counts = counts.fillna(0).astype(int)
    order = counts.sum(axis=1).sort_values(ascending=False).index[:top]
    fig = go.Figure()
    for m in counts.columns:
        fig.add_trace(go.Bar(x=list(order), y=counts.loc[order, m], name=f"{m} mode",
                             hovertemplate="%{x}: %{y} steps<extra>" + m + "</extra>"))
    if min_count is not None:
        fig.add_hline(y=min_count, line_dash="dash", line_color="black",
                      annotation_text=f"selection threshold ({min_count})")
    fig.update_layout(barmode="group", title="Kept 2-s steps per label", yaxis_title="steps",
                      height=400, margin={"l": 60, "r": 20, "t": 60, "b": 110})
    return fig


def plot_label_status(tables: dict[str, pd.DataFrame]) -> Figure:
    """Stacked bars: how many grid steps each mode kept, and why the others were dropped."""
    counts = pd.DataFrame({m: t["status"].value_counts() for m, t in tables.items()})
    counts = counts.reindex([s for s in _STATUS_ORDER if s in counts.index]).fillna(0)
    fig, ax = plt.subplots(figsize=(6, 3.2), layout="constrained")
    left = np.zeros(counts.shape[1])
    colours = dict(zip(_STATUS_ORDER, ["#2a9d8f", "#e9c46a", "#f4a261", "#cccccc"],
                       strict=True))
    for status, row in counts.iterrows():
        ax.barh(counts.columns, row.to_numpy(), left=left, color=colours[status], label=status)
        left += row.to_numpy()
    ax.set_xlabel("2-s steps of the movie")
    ax.legend(ncols=4, loc="upper center", bbox_to_anchor=(0.5, -0.3), frameon=False)
    ax.set_title("What each labelling mode keeps and drops")
    return fig


def plot_labels_by_run(samples: pd.DataFrame, title: str | None = None) -> Figure:
    """Heatmap of selected volumes per class and run (one subject's worth: they are equal)."""
    sel = samples[samples["selected"]]
    first = sel["subject"].iloc[0] if len(sel) else None
    sub = sel[sel["subject"] == first]
    table = pd.crosstab(sub["label"], sub["run"]).sort_index()
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(table) + 1.6), layout="constrained")
    sns.heatmap(table, annot=True, fmt="d", cmap="Blues", cbar=False, ax=ax)
    ax.set_xlabel("run")
    ax.set_ylabel("")
    ax.set_title(title or f"Selected volumes per class and run (sub-{first}; "
                          "every subject has the same)")
    return fig


def plot_mean_epis(images: dict[str, object], cut_coords=None) -> Figure:
    """Mean EPI image of each subject with :func:`nilearn.plotting.plot_epi`."""
    from nilearn import plotting

    n = len(images)
    fig, axes = plt.subplots(n, 1, figsize=(8, 2.4 * n), squeeze=False)
    for ax, (sub, img) in zip(axes[:, 0], images.items(), strict=True):
        plotting.plot_epi(img, axes=ax, title=f"sub-{sub} mean EPI", display_mode="ortho",
                          cut_coords=cut_coords, draw_cross=False, annotate=False)
    return fig
