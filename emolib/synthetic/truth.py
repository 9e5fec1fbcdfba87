"""Reading the planted truth written beside a generated StudyForrest dataset
(:func:`emolib.synthetic.generate_studyforrest`): its parameters, classes, region masks on the
template grid and on every subject's own grid, the scene signal, and the planted responses
at any volume (:func:`planted_responses`) and around labelled moments
(:func:`planted_profile`: when a window's volumes carry the label)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from emolib.forrest.labels import consensus_labels
from emolib.forrest.timing import RunTiming
from emolib.io.annotations import read_observers
from emolib.synthetic.forrest import class_responses

__all__ = ["find_truth", "planted_profile", "planted_responses", "read_truth"]


def read_truth(out_dir: str | os.PathLike) -> dict:
    """Read the truth written beside a generated dataset: parameters and region masks.

    Returns
    -------
    dict
        The contents of ``truth/generation.json`` plus ``timing`` (:class:`RunTiming`),
        ``scenes`` (onset and duration of each scene of the scene signal) and
        ``template_scene_envelope`` (:func:`scene_envelope`) when the dataset has them,
        ``template_regions`` and ``template_brain_mask`` (boolean arrays on the template grid
        the brain was planted in), ``by_subject`` (subject -> ``affine``, ``brain_mask``,
        ``regions`` in that subject's own grid, that of its runs 1-4) and ``regions`` and
        ``brain_mask`` in voxel space: where a region (the brain) lies in *any* subject's
        grid. That union is what a group map of unaligned native-space data, averaged voxel
        by voxel over subjects as the original did, can find.
    """
    out_dir = Path(out_dir)
    truth = json.loads((out_dir / "truth" / "generation.json").read_text())

    def _mask(path: Path) -> np.ndarray:
        return np.asanyarray(nib.load(path).dataobj).astype(bool)

    truth["template_brain_mask"] = _mask(out_dir / "truth" / "brain_mask.nii.gz")
    truth["template_regions"] = {c: _mask(out_dir / "truth" / f"region-{c}_mask.nii.gz")
                                 for c in truth["classes"]}
    if (out_dir / "truth" / "scenes.tsv").is_file():
        truth["scenes"] = pd.read_csv(out_dir / "truth" / "scenes.tsv", sep="\t")
        truth["template_scene_envelope"] = np.asanyarray(
            nib.load(out_dir / "truth" / "scene_envelope.nii.gz").dataobj).astype(float)
    truth["by_subject"] = {}
    for sub in truth["subjects"]:
        folder = out_dir / "truth" / f"sub-{sub}"
        if folder.is_dir():
            img = nib.load(folder / "brain_mask.nii.gz")
            truth["by_subject"][sub] = {
                "affine": img.affine, "brain_mask": np.asanyarray(img.dataobj).astype(bool),
                "regions": {c: _mask(folder / f"region-{c}_mask.nii.gz")
                            for c in truth["classes"]},
            }
    subs = list(truth["by_subject"].values())
    if subs:
        truth["brain_mask"] = np.logical_or.reduce([s["brain_mask"] for s in subs])
        truth["regions"] = {c: np.logical_or.reduce([s["regions"][c] for s in subs])
                            for c in truth["classes"]}
    else:
        truth["brain_mask"] = truth["template_brain_mask"]
        truth["regions"] = truth["template_regions"]
    tm = truth["parameters"]["timing"]
    truth["timing"] = RunTiming(tuple(tm["starts"]), tuple(tm["n_volumes"]), tm["tr"])
    return truth


def find_truth(bids_dir: str | os.PathLike | None, shape=None) -> dict | None:
    """The truth of the generated dataset a BIDS tree belongs to, or ``None`` for real data.

    Parameters
    ----------
    bids_dir : str or path-like, optional
        The BIDS folder the data were prepared from (``prepared.manifest["parameters"]
        ["bids_dir"]``); a generated dataset keeps ``truth/generation.json`` in its parent.
    shape : sequence of int, optional
        The data's grid; a truth on another grid raises ``ValueError``.

    Returns
    -------
    dict or None
        :func:`read_truth` of the dataset, ``None`` when there is no truth.
    """
    if not bids_dir:
        return None
    folder = Path(bids_dir).parent
    if not (folder / "truth" / "generation.json").is_file():
        return None
    truth = read_truth(folder)
    if shape is not None and tuple(truth["brain_mask"].shape) != tuple(shape):
        raise ValueError(f"the truth in {folder} has grid {truth['brain_mask'].shape}, the "
                         f"data {tuple(shape)}")
    return truth


def planted_responses(truth: dict, table: pd.DataFrame) -> np.ndarray:
    """The planted response of every class at each volume of ``table``.

    Parameters
    ----------
    truth : dict
        :func:`read_truth` of the dataset.
    table : pandas.DataFrame
        Volumes with ``run`` (1-based) and ``volume`` (0-based), e.g.
        :attr:`emolib.forrest.PreparedData.samples`.

    Returns
    -------
    numpy.ndarray
        ``(len(table), n_classes)``: the HRF-convolved response of each class the generator
        planted at that volume (the same in every subject, before ``effect_size``), in the
        order of ``truth["classes"]``; zeros for a null dataset.
    """
    params = truth["parameters"]
    classes = list(truth["classes"])
    out = np.zeros((len(table), len(classes)))
    if params.get("null"):
        return out
    pattern = (params.get("annotation_pattern", "av1o*.csv") if params.get("annotations_dir")
               else "av1o*.csv")  # generated annotations are audio-visual
    labels = consensus_labels(read_observers(truth["annotations"], pattern), tr=2.0,
                              mode=params.get("label_mode", "seed"))
    runs = class_responses(labels, classes, truth["timing"])
    run = table["run"].to_numpy(int)
    vol = table["volume"].to_numpy(int)
    for r, resp in enumerate(runs, start=1):
        here = run == r
        if np.any(vol[here] < 0) or np.any(vol[here] >= resp.shape[1]):
            raise ValueError(f"volumes outside run {r} of the truth's timing "
                             f"({resp.shape[1]} volumes)")
        out[here] = resp[:, vol[here]].T
    return out


def planted_profile(truth: dict, table: pd.DataFrame, rows: np.ndarray, y: np.ndarray,
                    classes) -> np.ndarray:
    """Per class, how much more of its own planted response than of the other classes' each
    volume of its windows holds: the contrast a classifier of the windows can read.

    Parameters
    ----------
    truth : dict
        :func:`read_truth` of the dataset.
    table : pandas.DataFrame
        The prepared sample table the window rows index (``run``, ``volume``).
    rows : numpy.ndarray
        ``(n_windows, T)`` rows of ``table`` (:attr:`emolib.forrest.WindowedSamples.rows`).
    y : numpy.ndarray
        Class index of each window, into ``classes``.
    classes : sequence of str
        The decoded classes (a subset of the truth's, in the decoder's order).

    Returns
    -------
    numpy.ndarray
        ``(n_classes, T)``: for class ``c`` at offset ``t``, the mean over windows of class
        ``c`` of its response minus the mean response of the other decoded classes at the
        window's ``t``-th volume (NaN for a class without windows).
    """
    order = [list(truth["classes"]).index(c) for c in classes]
    resp = planted_responses(truth, table)[:, order]  # (n_table, K)
    rows, y = np.asarray(rows), np.asarray(y)
    k = len(order)
    out = np.full((k, rows.shape[1]), np.nan)
    for c in range(k):
        w = resp[rows[y == c]]  # (n_c, T, K)
        if len(w) and k > 1:
            other = (w.sum(axis=2) - w[:, :, c]) / (k - 1)
            out[c] = (w[:, :, c] - other).mean(axis=0)
        elif len(w):
            out[c] = w[:, :, c].mean(axis=0)
    return out
