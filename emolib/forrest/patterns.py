"""RSA patterns of the StudyForrest decoding: held-out volumes grouped into patterns with ids
shared across subjects, and their ROI and network-layer RDMs.

Held-out volumes are grouped into patterns (:func:`define_patterns`: class means, or label x
movie-time moments), averaged (:func:`emolib.rsa.average_patterns`) and centred within folds
(:func:`emolib.rsa.center_patterns`) per subject for the ROIs (:func:`calc_brain_rdms`) and,
through each volume's own fold model, for the layers (:func:`calc_network_rdms`). Pairs of
patterns from different folds (different networks) can be blanked
(:func:`emolib.rsa.restrict_pairs`). Neighbouring moments are dependent (labels come in
episodes, BOLD and network outputs drift), so :func:`define_patterns` can put them into
blocks of movie time (``group_s``), which the RDMs carry as the pattern descriptor ``group``
(:func:`add_pattern_groups`) for ``emolib.rsa.bootstrap_compare(..., pattern_groups="group")``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import DTypeLike
from rsatoolbox.rdm import RDMs

from emolib.rsa.patterns import average_patterns, center_patterns, group_indicator, restrict_pairs
from emolib.rsa.rdms import calc_joint_rdms, calc_rdms_from_patterns, calc_roi_rdms

__all__ = [
    "PATTERN_KINDS", "add_pattern_groups", "average_over_blocks", "calc_brain_rdms",
    "calc_network_rdms", "define_patterns",
]

#: Pattern kinds of :func:`define_patterns`.
PATTERN_KINDS = ("class", "moment")


def define_patterns(
    predictions: pd.DataFrame,
    *,
    kind: str = "moment",
    moment_s: float = 10.0,
    within_fold: bool = True,
    pool_subjects: bool = False,
    common: bool = True,
    model: str | None = "cnn",
    group_s: float | None = None,
) -> pd.DataFrame:
    """Group held-out samples into RSA patterns, each with an id shared across subjects.

    Parameters
    ----------
    predictions : pandas.DataFrame
        Held-out predictions of :func:`emolib.decoding.run_decoding` (columns ``fold``,
        ``sample``, ``subject``, ``movie_time``, ``label``; ``model`` when ``model`` is
        given).
    kind : {"class", "moment"}, default="moment"
        ``"class"``: one pattern per class (the original analysis: 5 class means).
        ``"moment"``: one pattern per label and bin of ``moment_s`` seconds of movie time,
        the mean of the volumes acquired then; the same movie moment has the same id in
        every subject.
    moment_s : float, default=10.0
        Width of the movie-time bins of ``"moment"`` patterns (2 s: single volumes).
    within_fold : bool, default=True
        Patterns never mix test folds (the fold is part of the id, and ``block`` names the
        fold). Each fold has its own network, whose units need not match another fold's, so
        pairs of patterns from two folds are not comparable for the network
        (:func:`emolib.rsa.restrict_pairs` blanks them).
    pool_subjects : bool, default=False
        Average over all subjects together (subject ``"all"``), as the original analysis.
    common : bool, default=True
        Keep only ids that every subject has (needed for joint RDMs and noise ceilings).
    model : str, optional
        Keep the rows of this model (predictions hold one row per sample and model).
    group_s : float, optional
        Add a column ``group``: the contiguous block of ``group_s`` seconds of movie time
        (``[k group_s, (k + 1) group_s)``), within the pattern's ``block`` (fold), that holds
        the start of the pattern's moment bin (``"<block> @<start>s"``). A group is a function
        of the id, so every volume of a moment, in every subject, is in the same group. The
        resampling unit of a block bootstrap (:func:`add_pattern_groups`). Class patterns are
        not moments: each is its own group.

    Returns
    -------
    pandas.DataFrame
        One row per held-out sample: ``sample`` (row of the prepared volumes), ``subject``,
        ``fold``, ``label``, ``movie_time``, ``id``, ``block`` (and ``group`` with
        ``group_s``); sorted by subject, block, time and label, so that every subject lists
        its ids in the same order.
    """
    if kind not in PATTERN_KINDS:
        raise ValueError(f"kind must be one of {PATTERN_KINDS}, not {kind!r}")
    rows = predictions
    if model is not None and "model" in rows.columns:
        rows = rows[rows["model"] == model]
    out = rows[["sample", "subject", "fold", "label", "movie_time"]].copy()
    out["subject"] = "all" if pool_subjects else out["subject"].astype(str)
    out["block"] = out["fold"].astype(str) if within_fold else "all"
    if kind == "class":
        out["time"] = 0.0
        out["id"] = out["label"].astype(str)
    else:
        if moment_s <= 0:
            raise ValueError("moment_s must be positive")
        out["time"] = np.floor(out["movie_time"] / moment_s) * moment_s
        out["id"] = out["label"].astype(str) + " @" + out["time"].map("{:05.0f}s".format)
    if within_fold:
        out["id"] = out["block"] + " " + out["id"]
    if group_s is not None:
        if not group_s > 0:
            raise ValueError("group_s must be positive")
        if kind == "class":
            out["group"] = out["id"]
        else:
            start = np.floor(out["time"] / group_s + 1e-9) * group_s
            out["group"] = out["block"] + " @" + start.map("{:05.0f}s".format)
    if common:
        n_subjects = out["subject"].nunique()
        keep = out.groupby("id")["subject"].nunique() == n_subjects
        out = out[out["id"].isin(keep.index[keep])]
    if out.empty:
        raise ValueError("no pattern is left (no held-out sample, or no id shared by all "
                         "subjects)")
    out = out.sort_values(["subject", "block", "time", "label", "sample"], kind="stable")
    return out.drop(columns="time").reset_index(drop=True)


def _with_blocks(rdms: RDMs, patterns: pd.DataFrame, within_blocks: bool) -> RDMs:
    ids = np.asarray(rdms.pattern_descriptors["id"])
    rdms.pattern_descriptors["block"] = _blocks_of(ids, patterns).tolist()
    if "group" in patterns.columns:
        rdms.pattern_descriptors["group"] = _groups_of(ids, patterns, "group").tolist()
    return restrict_pairs(rdms) if within_blocks else rdms


def _groups_of(ids: np.ndarray, rows: pd.DataFrame, column: str) -> np.ndarray:
    pairs = rows[["id", column]].drop_duplicates()
    if pairs["id"].duplicated().any():
        bad = pairs.loc[pairs["id"].duplicated(), "id"].iloc[0]
        raise ValueError(f"pattern {bad!r} falls in more than one {column!r}")
    group_of = dict(zip(pairs["id"], pairs[column], strict=True))
    missing = [i for i in ids.tolist() if i not in group_of]
    if missing:
        raise ValueError(f"{len(missing)} pattern ids have no {column!r} in the patterns "
                         f"table, e.g. {missing[:3]}")
    return np.array([group_of[i] for i in ids.tolist()])


def add_pattern_groups(rdms: RDMs, patterns: pd.DataFrame, key: str = "group") -> RDMs:
    """Return a copy of the RDMs with each pattern's group as the pattern descriptor ``key``.

    :func:`calc_brain_rdms` and :func:`calc_network_rdms` add it themselves when the
    patterns table has the column; this is for RDMs built from them that lost it (e.g. the
    joint RDMs of :func:`emolib.rsa.calc_joint_rdms`, which keep only the ids).

    Parameters
    ----------
    rdms : rsatoolbox.rdm.RDMs
        RDMs whose pattern descriptor ``id`` holds ids of ``patterns``.
    patterns : pandas.DataFrame
        From :func:`define_patterns` with ``group_s`` (columns ``id`` and ``key``).
    key : str, default="group"
        Column of ``patterns`` and name of the new pattern descriptor.

    Returns
    -------
    rsatoolbox.rdm.RDMs
        A copy with ``pattern_descriptors[key]``, ready for
        ``emolib.rsa.bootstrap_compare(..., pattern_groups=key)``.

    Raises
    ------
    ValueError
        If ``patterns`` has no column ``key``, an id falls in two groups or has none.
    """
    if key not in patterns.columns:
        raise ValueError(f"the patterns have no column {key!r} (define_patterns(..., "
                         f"group_s=...) adds 'group')")
    out = rdms.copy()
    ids = np.asarray(out.pattern_descriptors["id"])
    out.pattern_descriptors[key] = _groups_of(ids, patterns, key).tolist()
    return out


def calc_brain_rdms(
    volumes: np.ndarray,
    patterns: pd.DataFrame,
    masks: Mapping[str, Any],
    *,
    center: bool = True,
    within_blocks: bool = True,
    method: str = "correlation",
    dtype: DTypeLike = np.float64,
) -> list[RDMs]:
    """ROI RDMs of held-out volumes, one RDMs object per subject.

    Parameters
    ----------
    volumes : numpy.ndarray, shape (n_samples, X, Y, Z)
        The prepared volumes (may be a memory map; only the patterns' rows are read).
    patterns : pandas.DataFrame
        From :func:`define_patterns`.
    masks : mapping of str to array or Niimg-like
        ROI masks on the volumes' grid (see :func:`emolib.rsa.calc_roi_rdms`).
    center : bool, default=True
        Centre every voxel across the subject's patterns of each block
        (:func:`emolib.rsa.center_patterns`).
    within_blocks : bool, default=True
        Blank pairs across blocks (:func:`emolib.rsa.restrict_pairs`).
    method : str, default="correlation"
        Dissimilarity (see :func:`emolib.rsa.calc_rdms_from_patterns`).
    dtype : dtype, default=float64
        dtype of the dissimilarities.

    Returns
    -------
    list of rsatoolbox.rdm.RDMs
        Per subject (order of ``patterns``): one RDM per ROI (``roi``), descriptor
        ``subject``, pattern descriptors ``id`` and ``block`` (and ``group`` when
        ``patterns`` has that column).
    """
    out = []
    for subject, rows in patterns.groupby("subject", sort=False):
        ids, means = average_patterns(volumes[rows["sample"].to_numpy()], rows["id"])
        if center:
            means = center_patterns(means, _blocks_of(ids, rows))
        rdms = calc_roi_rdms(means, masks, ids, method=method,
                             rdm_descriptors={"subject": subject}, dtype=dtype)
        out.append(_with_blocks(rdms, rows, within_blocks))
    return out


def _blocks_of(ids: np.ndarray, rows: pd.DataFrame) -> np.ndarray:
    block_of = dict(zip(rows["id"], rows["block"], strict=False))
    return np.array([block_of[i] for i in ids.tolist()])


def calc_network_rdms(
    volumes: np.ndarray,
    patterns: pd.DataFrame,
    models: Mapping[str, Any] | Callable[[str], Any],
    layers: Sequence[str],
    *,
    center: bool = True,
    within_blocks: bool = True,
    reduce: str | int = "flatten",
    batch_size: int = 32,
    device: str | None = None,
    method: str = "correlation",
    dtype: DTypeLike = np.float64,
) -> list[RDMs]:
    """Layer RDMs of a network run on held-out volumes, each volume by its own fold's model.

    For every subject and test fold, the fold's network (trained without that fold) is run
    on the subject's held-out volumes of the fold (:func:`emolib.models.extract_activations`); the
    activations are averaged into the patterns of :func:`define_patterns`.

    Parameters
    ----------
    volumes : numpy.ndarray, shape (n_samples, X, Y, Z)
        The prepared volumes.
    patterns : pandas.DataFrame
        From :func:`define_patterns`.
    models : mapping or callable
        Fold name to torch model, or a function returning it (e.g.
        ``lambda fold: load_trained(result.fold_model_path(fold))``); each fold's model is
        obtained once.
    layers : sequence of str
        Module names (e.g. ``conv1``, ``block1`` .. ``block4``, ``pool``).
    center, within_blocks, method, dtype
        See :func:`calc_brain_rdms`.
    reduce, batch_size, device
        See :func:`emolib.models.extract_activations`.

    Returns
    -------
    list of rsatoolbox.rdm.RDMs
        Per subject (order of ``patterns``): one RDM per layer (``layer``), descriptor
        ``subject``, pattern descriptors ``id`` and ``block`` (and ``group`` when
        ``patterns`` has that column).
    """
    # torch only where it is used: importing this module (and emolib.synthetic) stays light
    from emolib.models.features import extract_activations
    from emolib.models.folds import iter_folds

    by_subject = dict(tuple(patterns.groupby("subject", sort=False)))
    ids = {s: pd.unique(rows["id"].to_numpy()) for s, rows in by_subject.items()}
    sums: dict = {s: {} for s in by_subject}
    counts = {s: np.zeros(len(ids[s])) for s in by_subject}
    all_ids = patterns["id"].to_numpy()
    # one batch per subject and fold, each fold's model obtained once (emolib.models.iter_folds)
    for batch in iter_folds(patterns, volumes, models, group_by="subject",
                            device=device or "cpu"):
        s = batch.group
        x = batch.volumes.astype(np.float32, copy=False)[:, None]
        acts = extract_activations(batch.model, x, layers, batch_size=batch_size,
                                   reduce=reduce, device=device)
        code = pd.Index(ids[s]).get_indexer(all_ids[batch.positions])
        indicator = group_indicator(code, len(ids[s]))
        counts[s] += indicator.sum(axis=1)
        for name, a in acts.items():
            part_sum = indicator @ a
            sums[s][name] = part_sum if name not in sums[s] else sums[s][name] + part_sum
    out = []
    for subject, rows in by_subject.items():
        blocks = _blocks_of(ids[subject], rows)
        means = {}
        for name, total in sums[subject].items():
            m = (total / counts[subject][:, None]).astype(np.float32)
            means[name] = center_patterns(m, blocks) if center else m
        rdms = calc_rdms_from_patterns(means, ids[subject], method=method, descriptor="layer",
                                       rdm_descriptors={"subject": subject}, dtype=dtype)
        out.append(_with_blocks(rdms, rows, within_blocks))
    return out


def average_over_blocks(rdms: RDMs, *, by: str, name: str = "all") -> RDMs:
    """One RDM per ``by`` (layer or ROI): the mean over folds of each fold's own RDM.

    Each test fold has its own network, whose units do not correspond to another fold's, so
    class means of features must never mix folds. What can be compared across networks is
    their RDMs: each fold's RDM of its own patterns (``block`` = fold; ids ``"<fold> <id>"``
    as :func:`define_patterns` writes them with ``within_fold=True``) is taken, the fold
    prefix dropped, and the RDM vectors of the folds averaged, aligned by id. Ids missing
    from a fold (a class absent from its held-out run) are left out of every fold.

    Parameters
    ----------
    rdms : rsatoolbox.rdm.RDMs
        One subject's RDMs from :func:`calc_brain_rdms` or :func:`calc_network_rdms` with
        ``within_blocks=False`` (pattern descriptors ``id`` and ``block``).
    by : str
        Rdm descriptor of the RDMs averaged separately (``"layer"`` or ``"roi"``).
    name : str, default="all"
        ``subject`` descriptor of the result.

    Returns
    -------
    rsatoolbox.rdm.RDMs
        Ids without the fold prefix, in the first fold's order.
    """
    blocks = np.asarray(rdms.pattern_descriptors["block"])
    parts = []
    for block in pd.unique(blocks):
        part = rdms.subset_pattern("block", block)
        prefix = f"{block} "
        part.pattern_descriptors["id"] = [
            i[len(prefix):] if str(i).startswith(prefix) else i
            for i in part.pattern_descriptors["id"]]
        parts.append(part)
    common = set.intersection(*(set(p.pattern_descriptors["id"]) for p in parts))
    if len(common) < 2:
        raise ValueError("fewer than two patterns are common to every fold")
    first = [i for i in parts[0].pattern_descriptors["id"] if i in common]
    parts = [p.subset_pattern("id", first) for p in parts]
    for k, part in enumerate(parts):
        part.rdm_descriptors["subject"] = [f"fold{k}"] * part.n_rdm
    return calc_joint_rdms(parts, by=by, joint_name=name)
