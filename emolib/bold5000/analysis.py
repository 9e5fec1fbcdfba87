"""Reading the ResNet-50 x BOLD5000 comparison: the data summary, the best layer of every ROI,
and whether a planted layer/ROI hierarchy is recovered (generated data).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from emolib.io.bold5000 import ROIS, Bold5000RDMs
from emolib.rsa import PATTERN_KEY

__all__ = [
    "check_recovery", "find_best_layers", "summarize_bold5000",
]


def summarize_bold5000(data: Bold5000RDMs, pattern_key: str = PATTERN_KEY) -> pd.DataFrame:
    """One row per file: what it holds, its images, and whether its order is the layers'.

    Parameters
    ----------
    data : Bold5000RDMs
        From :func:`load_bold5000` (or :func:`obtain_bold5000`'s ``data``).
    pattern_key : str, default="id"
        Pattern descriptor of the image ids.

    Returns
    -------
    pandas.DataFrame
        Index ``file``; columns ``holds`` (layers or the subject), ``rdms`` (their names),
        ``images``, ``first image``, ``same images as layers`` and ``same order as layers``.
    """
    layer_ids = list(data.layers.pattern_descriptors[pattern_key])
    rows = []
    for key, rdms in [("layers", data.layers), *data.rois.items()]:
        ids = list(rdms.pattern_descriptors[pattern_key])
        names = rdms.rdm_descriptors["layer" if key == "layers" else "roi"]
        rows.append({
            "file": data.files[key].name if key in data.files else key,
            "holds": "ResNet-50 layers" if key == "layers" else key,
            "rdms": ", ".join(map(str, names)),
            "images": len(ids),
            "first image": ids[0],
            "same images as layers": set(ids) == set(layer_ids),
            "same order as layers": ids == layer_ids,
        })
    return pd.DataFrame(rows).set_index("file")


def find_best_layers(
    table: pd.DataFrame,
    *,
    method: str | None = None,
    pair_tests: pd.DataFrame | None = None,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """The layer most similar to each ROI (per subject), its runner-up and the margin.

    Parameters
    ----------
    table : pandas.DataFrame
        Tidy comparison table (``subject``, ``roi``, ``layer``, ``value``; optionally
        ``method``), e.g. from :func:`emolib.rsa.compare_table`.
    method : str, optional
        Which method's rows, when the table holds several.
    pair_tests : pandas.DataFrame, optional
        From :func:`emolib.rsa.calc_pair_tests`; adds ``q_vs_runner_up`` (FDR-corrected p of
        best vs runner-up) and ``clear`` (``q_vs_runner_up < alpha``).
    alpha : float, default=0.05
        Level of ``clear``.

    Returns
    -------
    pandas.DataFrame
        One row per subject and ROI: ``subject``, ``roi``, ``best_layer``, ``value``,
        ``runner_up``, ``margin`` (best minus runner-up).
    """
    t = table
    if "method" in t.columns:
        methods = list(dict.fromkeys(t["method"]))
        if method is None and len(methods) > 1:
            raise ValueError(f"the table holds several methods {methods}; pass method=")
        if method is not None:
            t = t[t["method"] == method]
    if "subject" not in t.columns:
        t = t.assign(subject="all")
    rows = []
    for (subject, roi), g in t.groupby(["subject", "roi"], sort=False):
        g = g.sort_values("value", ascending=False)
        second = g.iloc[1] if len(g) > 1 else None
        rows.append({
            "subject": subject, "roi": roi, "best_layer": g["layer"].iloc[0],
            "value": float(g["value"].iloc[0]),
            "runner_up": None if second is None else second["layer"],
            "margin": np.nan if second is None else float(g["value"].iloc[0] - second["value"]),
        })
    best = pd.DataFrame(rows)
    if pair_tests is not None:
        pt = pair_tests.set_index(["subject", "roi", "layer_a", "layer_b"])["q"]
        q = []
        for r in best.itertuples():
            key_ab = (r.subject, r.roi, r.best_layer, r.runner_up)
            key_ba = (r.subject, r.roi, r.runner_up, r.best_layer)
            q.append(pt.get(key_ab, pt.get(key_ba, np.nan)))
        best["q_vs_runner_up"] = q
        best["clear"] = best["q_vs_runner_up"] < alpha
    return best


def check_recovery(
    best: pd.DataFrame, planted: Mapping[str, str | None], rois: Sequence[str] = ROIS
) -> pd.DataFrame:
    """Planted against recovered best layer per ROI.

    Parameters
    ----------
    best : pandas.DataFrame
        From :func:`find_best_layers` (one or several subjects, e.g. also ``"joint"``).
    planted : mapping of str to str or None
        Planted best layer per ROI (``truth.json``'s ``best_layer``; None on null data).
    rois : sequence of str, default=ROIS
        Row order (ROIs not in ``best`` are left out).

    Returns
    -------
    pandas.DataFrame
        Index ``roi``; columns ``planted``, one column per subject holding the recovered
        layer, and ``matches``: how many of the subjects' columns equal the planted layer.
    """
    wide = best.pivot(index="roi", columns="subject", values="best_layer")
    subjects = list(dict.fromkeys(best["subject"]))
    order = [r for r in rois if r in wide.index] + [r for r in wide.index if r not in rois]
    wide = wide.reindex(index=order, columns=subjects)
    wide.columns.name = None
    out = pd.DataFrame({"planted": [planted.get(r) for r in wide.index]}, index=wide.index)
    out = out.join(wide)
    out["matches"] = (wide.eq(out["planted"], axis=0)).sum(axis=1).astype(int)
    return out
