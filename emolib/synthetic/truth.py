"""Reading the planted truth written beside a generated StudyForrest dataset
(:func:`emolib.synthetic.generate_studyforrest`): its parameters, classes, region masks on the
template grid and on every subject's own grid, and the scene signal."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from emolib.forrest.timing import RunTiming

__all__ = ["find_truth", "read_truth"]


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
