"""One loop over cross-validation folds: every held-out row processed by its own fold's model.

Occlusion maps, pooled features and network-layer RDMs of held-out volumes all need the same
thing: for each test fold, the network trained without it, run on that fold's volumes only.
:func:`iter_folds` does that once for all of them: it loads each fold's model once (a path to a
checkpoint or a model), reads the fold's volumes in file order (memory maps stay sequential),
and yields them with the rows they belong to, so each caller only says what to compute.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

__all__ = ["FoldBatch", "ModelForFold", "ModelSource", "iter_folds", "load_model",
           "torch_threads"]

ModelSource = nn.Module | str | os.PathLike
"""A model, or the path of a checkpoint written by :func:`emolib.models.train_model`."""

ModelForFold = Callable[[str], ModelSource]
"""``model_for_fold(fold)`` returns the fold's model or the path of its checkpoint."""


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


def load_model(source: ModelSource, device: str = "cpu") -> nn.Module:
    """``source`` itself if it is a model, else the checkpoint it names, loaded on ``device``
    (:func:`emolib.models.load_trained`)."""
    if isinstance(source, nn.Module):
        return source
    from emolib.models.train import load_trained

    return load_trained(source, device=device)


@dataclass(frozen=True)
class FoldBatch:
    """The held-out rows of one fold (and one group, with ``group_by``) and the fold's model.

    Attributes
    ----------
    group : object
        Value of the ``group_by`` column for these rows (``None`` without ``group_by``).
    fold : str
        The test fold.
    model : torch.nn.Module
        The fold's network (trained without the fold).
    positions : numpy.ndarray of int
        Positions (0-based, in ``rows``) of these rows, in ascending ``sample`` order.
    volumes : numpy.ndarray
        ``volumes[rows["sample"][positions]]``, read in file order.
    """

    group: object
    fold: str
    model: nn.Module
    positions: np.ndarray
    volumes: np.ndarray


def iter_folds(
    rows: pd.DataFrame,
    volumes: np.ndarray,
    model_for_fold: ModelForFold | Mapping[str, ModelSource],
    *,
    group_by: str | None = None,
    n_threads: int | None = None,
    device: str = "cpu",
) -> Iterator[FoldBatch]:
    """Yield each fold's held-out volumes with the fold's model, one fold at a time.

    Parameters
    ----------
    rows : pandas.DataFrame
        One row per held-out volume with ``fold`` and ``sample`` (row of ``volumes``).
    volumes : numpy.ndarray, shape (n_samples, ...)
        All prepared volumes (a memory map is fine); only the rows' samples are read.
    model_for_fold : callable or mapping
        ``model_for_fold(fold)`` (or ``model_for_fold[fold]``): the fold's model or the path
        of its checkpoint (e.g. :meth:`emolib.decoding.DecodingResult.fold_model_path`). Each
        fold's model is obtained once, however many groups use it.
    group_by : str, optional
        A column of ``rows`` (e.g. ``"subject"``): batches are then per group and fold, groups
        in order of first appearance, folds in order of first appearance within a group.
    n_threads : int, optional
        Torch threads while the batches are used (``None`` leaves the setting alone).
    device : str, default="cpu"
        Where a model loaded from a path is put.

    Yields
    ------
    FoldBatch
        Without ``group_by``, folds in order of first appearance in ``rows``.
    """
    for col in ("fold", "sample", *((group_by,) if group_by else ())):
        if col not in rows.columns:
            raise ValueError(f"rows need a {col!r} column")
    getter = model_for_fold.__getitem__ if isinstance(model_for_fold, Mapping) else model_for_fold
    folds = rows["fold"].astype(str).to_numpy()
    samples = rows["sample"].to_numpy(dtype=np.int64)
    groups = rows[group_by].to_numpy() if group_by else np.full(len(rows), None, dtype=object)
    models: dict[str, nn.Module] = {}
    with torch_threads(n_threads):
        for group in pd.unique(groups) if group_by else [None]:
            in_group = np.flatnonzero(groups == group) if group_by else np.arange(len(rows))
            for fold in dict.fromkeys(folds[in_group]):
                pos = in_group[folds[in_group] == fold]
                pos = pos[np.argsort(samples[pos], kind="stable")]
                if fold not in models:
                    models[fold] = load_model(getter(fold), device)
                yield FoldBatch(group, fold, models[fold], pos,
                                np.asarray(volumes[samples[pos]]))
