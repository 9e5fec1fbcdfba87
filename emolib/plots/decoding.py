"""Figures of the decoding chapter: learning curves, ROC curves, confusion, null, leakage,
calibration."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import seaborn as sns
from matplotlib.figure import Figure
from plotly.subplots import make_subplots
from sklearn.metrics import roc_auc_score, roc_curve

from emolib.plots.labels import class_palette

__all__ = [
    "plot_calibration", "plot_confusion", "plot_leakage", "plot_learning_curves", "plot_null",
    "plot_roc_by_fold",
]


def plot_learning_curves(history: pd.DataFrame) -> go.Figure:
    """Training and validation accuracy and loss per epoch, one line per fold."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("accuracy", "cross-entropy loss"))
    folds = list(dict.fromkeys(history["fold"]))
    colours = sns.color_palette("tab10", n_colors=max(len(folds), 1)).as_hex()
    for i, f in enumerate(folds):
        h = history[history["fold"] == f]
        c = colours[i % len(colours)]
        for col, (metric, dash) in enumerate([("acc", None), ("loss", None)], start=1):
            fig.add_trace(go.Scatter(x=h["epoch"], y=h[f"train_{metric}"], name=f"{f} train",
                                     legendgroup=f, showlegend=col == 1,
                                     line={"color": c, "dash": "dot"}), row=1, col=col)
            fig.add_trace(go.Scatter(x=h["epoch"], y=h[f"val_{metric}"], name=f"{f} validation",
                                     legendgroup=f, showlegend=col == 1,
                                     line={"color": c, "dash": dash}), row=1, col=col)
    fig.update_xaxes(title_text="epoch")
    fig.update_layout(height=380, title="Learning curves (dotted: training, solid: inner "
                                        "validation)", margin={"t": 80})
    return fig


def plot_roc_by_fold(predictions: pd.DataFrame, classes: list[str], model: str = "cnn"
                     ) -> go.Figure:
    """One-vs-rest ROC curves of each class: a thin line per fold, AUC averaged over folds."""
    rows = predictions[predictions["model"] == model]
    n = len(classes)
    pal = class_palette(classes)
    fig = make_subplots(rows=1, cols=n, subplot_titles=classes, shared_yaxes=True)
    for k, c in enumerate(classes):
        aucs = []
        for f, grp in rows.groupby("fold", sort=False):
            pos = grp["y"].to_numpy() == k
            if not 0 < pos.sum() < len(pos):
                continue
            score = grp[f"p_{c}"].to_numpy()
            fpr, tpr, _ = roc_curve(pos, score)
            aucs.append(roc_auc_score(pos, score))
            fig.add_trace(go.Scatter(x=fpr, y=tpr, mode="lines", line={"color": pal[c],
                                                                        "width": 1.5},
                                     opacity=0.7, name=f"{c} {f}", showlegend=False,
                                     hovertemplate=f"{f}: AUC {aucs[-1]:.2f}<extra></extra>"),
                          row=1, col=k + 1)
        fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", showlegend=False,
                                 line={"color": "grey", "dash": "dash", "width": 1}),
                      row=1, col=k + 1)
        if aucs:
            fig.layout.annotations[k].text = f"{c}<br>AUC {np.mean(aucs):.2f}"
    fig.update_xaxes(title_text="false positive rate", range=[0, 1])
    fig.update_yaxes(title_text="true positive rate", range=[0, 1], col=1)
    fig.update_layout(height=330, margin={"t": 70},
                      title=f"ROC per class ({model}; one line per test fold)")
    return fig


def plot_confusion(confusion: pd.DataFrame, title: str = "Confusion matrix") -> Figure:
    """Row-normalised confusion matrix (rows: true class) with counts annotated."""
    counts = confusion.to_numpy()
    norm = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(5.5, 4.5), layout="constrained")
    sns.heatmap(norm, annot=counts, fmt="d", cmap="Blues", vmin=0, vmax=1, ax=ax,
                xticklabels=confusion.columns, yticklabels=confusion.index,
                cbar_kws={"label": "fraction of the true class"})
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    return fig


def plot_null(null: np.ndarray, observed: float, p_value: float,
              title: str = "Permutation null of the macro AUC") -> Figure:
    """Histogram of the null distribution with the observed score."""
    fig, ax = plt.subplots(figsize=(6, 3.2), layout="constrained")
    ax.hist(null, bins=30, color="#bbbbbb", edgecolor="white")
    ax.axvline(observed, color="#d62728", lw=2, label=f"observed {observed:.3f}, p = {p_value:.3g}")
    ax.axvline(0.5, color="black", lw=1, ls="--", label="0.5")
    ax.set_xlabel("macro AUC (fold-averaged) with labels shifted along movie time")
    ax.set_ylabel("permutations")
    ax.legend(frameon=False)
    ax.set_title(title)
    return fig


def plot_leakage(table: pd.DataFrame, original: tuple[float, float] | None = (0.86, 0.94),
                 title: str = "The same data, split two ways") -> Figure:
    """Macro AUC with CI by split and model, beside the original's reported range.

    ``table`` has columns ``split``, ``model``, ``estimate``, ``low``, ``high`` (``split``
    names the groups of bars: splits, or e.g. the samples a model reads).
    """
    fig, ax = plt.subplots(figsize=(7, 3.6), layout="constrained")
    splits = list(dict.fromkeys(table["split"]))
    models = list(dict.fromkeys(table["model"]))
    width = 0.8 / len(models)
    colours = dict(zip(models, sns.color_palette("Set2", len(models)).as_hex(), strict=True))
    for j, m in enumerate(models):
        sub = table[table["model"] == m].set_index("split").reindex(splits)
        x = np.arange(len(splits)) + (j - (len(models) - 1) / 2) * width
        err = np.vstack([sub["estimate"] - sub["low"], sub["high"] - sub["estimate"]])
        ax.bar(x, sub["estimate"], width, yerr=err, capsize=3, label=m, color=colours[m])
    if original is not None:
        ax.axhspan(*original, color="#d62728", alpha=0.15,
                   label=f"original (random split) {original[0]:.2f}-{original[1]:.2f}")
    ax.axhline(0.5, color="black", lw=1, ls="--")
    ax.set_xticks(np.arange(len(splits)), splits)
    ax.set_ylim(0.3, 1.0)
    ax.set_ylabel("macro AUC (95% CI)")
    ax.legend(frameon=False, ncols=2, fontsize=8, loc="lower right")
    ax.set_title(title)
    return fig


def plot_calibration(size: pd.DataFrame, coverage: pd.DataFrame, level: float = 0.95
                     ) -> Figure:
    """The promises of the statistics, measured: size of the null test and interval coverage.

    ``size`` has columns ``label``, ``alpha``, ``size``, ``low``, ``high`` (one row per test
    and alpha, e.g. from :func:`emolib.decoding.calibration.size_table`); ``coverage`` has
    ``label``, ``coverage``, ``low``, ``high`` (one row per interval method). Each point is a
    measured rate with its exact binomial interval; the dashed lines are the promises (alpha,
    ``level``).
    """
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), layout="constrained")
    ax = axes[0]
    alphas = sorted(size["alpha"].unique())
    labels = list(dict.fromkeys(size["label"]))
    for j, lab in enumerate(labels):
        sub = size[size["label"] == lab].set_index("alpha").reindex(alphas)
        x = np.arange(len(alphas)) + (j - (len(labels) - 1) / 2) * 0.2
        ax.errorbar(x, sub["size"], yerr=[sub["size"] - sub["low"], sub["high"] - sub["size"]],
                    fmt="o", capsize=3, label=lab)
    for i, a in enumerate(alphas):
        ax.hlines(a, i - 0.4, i + 0.4, color="black", ls="--", lw=1)
    ax.set_xticks(np.arange(len(alphas)), [f"alpha {a:g}" for a in alphas])
    ax.set_ylabel("rejections under the null")
    ax.set_title("Size of the permutation test")
    ax.legend(frameon=False, fontsize=8)
    ax = axes[1]
    labs = list(coverage["label"])
    y = np.arange(len(labs))
    ax.errorbar(coverage["coverage"], y,
                xerr=[coverage["coverage"] - coverage["low"],
                      coverage["high"] - coverage["coverage"]], fmt="o", capsize=3)
    ax.axvline(level, color="black", ls="--", lw=1)
    ax.set_yticks(y, labs, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"share of {level:.0%} intervals containing the truth")
    ax.set_title("Coverage of the intervals")
    return fig
