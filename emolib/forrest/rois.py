"""Regions of interest on the data grid: planted regions, parcellations, user atlases.

Chapter 04 compares the CNN's layers with brain regions. Which regions depends on the data:

- **Generated data** carry their truth beside the BIDS tree (``truth/generation.json``,
  :func:`emolib.synthetic.read_truth`): one planted region per class, and the brain mask.
  :func:`make_rois` returns the planted regions plus a control parcellation of the rest of
  the brain (k spatially compact parcels, :func:`parcellate_mask`), so that one can ask
  whether the planted regions relate to the network more than arbitrary brain parcels do.
- **Real data** have no truth: a labels image on the data grid (an atlas, e.g. resampled
  Harvard-Oxford) is read with :func:`load_atlas`; without one, the data mask is
  parcellated.

Every ROI is a boolean array of the data grid's shape, named; :class:`RoiSet` holds them with
a table (kind, voxel count, planted class) in a fixed order.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from emolib.errors import InputDataError

#: ROI kinds of :class:`RoiSet`.
KINDS = ("planted", "parcel", "atlas")


@dataclass
class RoiSet:
    """Named ROI masks on the data grid.

    Attributes
    ----------
    masks : dict of str to numpy.ndarray
        ROI name to boolean mask (the data grid's shape), in display order.
    table : pandas.DataFrame
        One row per ROI: ``roi``, ``kind`` (``planted``, ``parcel`` or ``atlas``),
        ``n_voxels``, ``label`` (the planted class, else missing).
    source : str
        ``"generated"`` (planted regions and parcels), ``"atlas"`` or ``"parcellation"``.
    """

    masks: dict[str, np.ndarray]
    table: pd.DataFrame
    source: str

    @property
    def names(self) -> list[str]:
        """ROI names in display order."""
        return list(self.masks)

    def kinds(self) -> dict[str, str]:
        """ROI name to kind."""
        return dict(zip(self.table["roi"], self.table["kind"], strict=True))

    def to_image(self, affine: np.ndarray) -> nib.Nifti1Image:
        """A labels image (1..n in display order, 0 elsewhere), e.g. for nilearn's ``plot_roi``.

        Where ROIs overlap, the later one is drawn.
        """
        first = next(iter(self.masks.values()))
        labels = np.zeros(first.shape, dtype=np.int16)
        for k, m in enumerate(self.masks.values(), start=1):
            labels[m] = k
        return nib.Nifti1Image(labels, np.asarray(affine, dtype=float))

    def groups(self) -> dict[str, tuple[str, ...]]:
        """Kind to the names of its ROIs (for grouped figures and group contrasts)."""
        return {k: tuple(self.table.loc[self.table["kind"] == k, "roi"])
                for k in KINDS if (self.table["kind"] == k).any()}


def parcellate_mask(
    mask: np.ndarray,
    n_parcels: int,
    *,
    voxel_size: tuple[float, float, float] | np.ndarray = (1.0, 1.0, 1.0),
    seed: int = 0,
) -> np.ndarray:
    """Split a mask into spatially compact parcels (k-means on voxel coordinates).

    Parameters
    ----------
    mask : numpy.ndarray
        Boolean 3D mask.
    n_parcels : int
        Number of parcels (at most the number of voxels).
    voxel_size : sequence of 3 floats, default=(1, 1, 1)
        Voxel size in mm, so that parcels are compact in space rather than in voxel units.
    seed : int, default=0
        Seed of the k-means initialisation.

    Returns
    -------
    numpy.ndarray
        int16 labels of the mask's shape: 0 outside, 1..n_parcels inside, numbered from the
        lowest to the highest first coordinate of the parcel centres (left to right on a RAS
        grid), so that the numbering does not depend on k-means' internal order.
    """
    from sklearn.cluster import KMeans

    mask = np.asarray(mask, dtype=bool)
    coords = np.argwhere(mask)
    if not 1 <= n_parcels <= len(coords):
        raise ValueError(f"n_parcels must be in 1..{len(coords)} (voxels in the mask)")
    xyz = coords * np.asarray(voxel_size, dtype=float)
    km = KMeans(n_clusters=n_parcels, n_init=4, random_state=seed).fit(xyz)
    order = np.lexsort(km.cluster_centers_.T[::-1])  # by x, then y, then z
    rank = np.empty(n_parcels, dtype=np.int16)
    rank[order] = np.arange(1, n_parcels + 1, dtype=np.int16)
    labels = np.zeros(mask.shape, dtype=np.int16)
    labels[tuple(coords.T)] = rank[km.labels_]
    return labels


def masks_from_labels(
    labels: np.ndarray,
    names: dict[int, str] | None = None,
    *,
    prefix: str = "parcel",
    min_voxels: int = 1,
) -> dict[str, np.ndarray]:
    """One boolean mask per non-zero value of a labels image.

    Parameters
    ----------
    labels : numpy.ndarray
        Integer labels, 0 = background.
    names : mapping of int to str, optional
        Label value to ROI name; default ``"<prefix> <value>"`` (zero-padded).
    prefix : str, default="parcel"
        Name prefix for labels without a name.
    min_voxels : int, default=1
        Labels with fewer voxels are left out.

    Returns
    -------
    dict of str to numpy.ndarray
        In increasing label order.
    """
    labels = np.asarray(labels)
    values = [int(v) for v in np.unique(labels) if v != 0]
    width = len(str(max(values))) if values else 1
    out = {}
    for v in values:
        m = labels == v
        if m.sum() < min_voxels:
            continue
        name = (names or {}).get(v, f"{prefix} {v:0{width}d}")
        out[name] = m
    return out


def _read_label_names(path: Path) -> dict[int, str]:
    """Label value to name, from a TSV/CSV with columns index and name (FSL/BIDS style)."""
    sep = "\t" if path.suffix in (".tsv", ".txt") else ","
    table = pd.read_csv(path, sep=sep)
    cols = {c.lower(): c for c in table.columns}
    index_col = cols.get("index") or cols.get("label") or table.columns[0]
    name_col = cols.get("name") or table.columns[1]
    return {int(i): str(n) for i, n in zip(table[index_col], table[name_col], strict=True)}


def load_atlas(
    path: str | os.PathLike,
    *,
    shape: tuple[int, int, int],
    affine: np.ndarray,
    names_file: str | os.PathLike | None = None,
    min_voxels: int = 1,
    within: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Read a labels image (an atlas) as ROI masks on the data grid.

    Parameters
    ----------
    path : str or path-like
        3D NIfTI of integer labels (0 = background).
    shape, affine : tuple and numpy.ndarray
        The data grid. An atlas on another grid is resampled to it with nearest-neighbour
        interpolation (:func:`nilearn.image.resample_img`), which keeps labels intact.
    names_file : str or path-like, optional
        TSV/CSV with columns ``index`` and ``name``; default: ``<path stem>.tsv`` beside the
        image when it exists, else ``"label <value>"``.
    min_voxels : int, default=1
        Labels with fewer voxels on the data grid (after ``within``) are left out.
    within : numpy.ndarray, optional
        Boolean mask (e.g. the brain) that every ROI is intersected with.

    Returns
    -------
    dict of str to numpy.ndarray

    Raises
    ------
    emolib.errors.InputDataError
        If the file is missing, not 3D, or holds no label on the data grid.
    """
    path = Path(path)
    if not path.is_file():
        raise InputDataError(path, "atlas file does not exist")
    img = nib.load(path)
    if len(img.shape) != 3:
        raise InputDataError(path, f"an atlas must be a 3D labels image, not {img.shape}")
    if tuple(img.shape) != tuple(shape) or not np.allclose(img.affine, affine, atol=1e-3):
        from nilearn.image import resample_img

        img = resample_img(img, target_affine=affine, target_shape=tuple(shape),
                           interpolation="nearest", force_resample=True, copy_header=True)
    labels = np.rint(np.asanyarray(img.dataobj)).astype(np.int64)
    if within is not None:
        labels = np.where(np.asarray(within, dtype=bool), labels, 0)
    if names_file is None:
        stem = path.name.split(".")[0]
        guess = path.with_name(stem + ".tsv")
        names_file = guess if guess.is_file() else None
    names = _read_label_names(Path(names_file)) if names_file is not None else None
    masks = masks_from_labels(labels, names, prefix="label", min_voxels=min_voxels)
    if not masks:
        raise InputDataError(path, "the atlas has no labelled voxel on the data grid")
    return masks


def make_rois(
    mask: np.ndarray,
    affine: np.ndarray,
    *,
    truth: dict | None = None,
    atlas: str | os.PathLike | None = None,
    atlas_names: str | os.PathLike | None = None,
    n_parcels: int = 8,
    min_voxels: int = 5,
    seed: int = 0,
) -> RoiSet:
    """The ROIs of chapter 04 for one dataset.

    Parameters
    ----------
    mask : numpy.ndarray
        Boolean mask of the data (``PreparedData.mask``).
    affine : numpy.ndarray
        Affine of the data grid.
    truth : dict, optional
        Truth of a generated dataset (:func:`find_truth`): its planted regions become ROIs
        (``"region <CLASS>"``, kind ``planted``), and the brain mask minus the planted
        regions is parcellated into ``n_parcels`` control parcels.
    atlas : str or path-like, optional
        Labels image for real data (see :func:`load_atlas`); takes precedence over the
        parcellation (planted regions are still added when there is a truth).
    atlas_names : str or path-like, optional
        Names of the atlas labels.
    n_parcels : int, default=8
        Parcels of the (brain) mask when no atlas is given; 0 for none.
    min_voxels : int, default=5
        Smaller ROIs are left out (a correlation over fewer voxels is meaningless).
    seed : int, default=0
        Seed of the parcellation.

    Returns
    -------
    RoiSet
        Planted regions first (class order), then parcels or atlas labels.
    """
    mask = np.asarray(mask, dtype=bool)
    voxel_size = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))
    masks: dict[str, np.ndarray] = {}
    rows = []
    brain = mask
    if truth is not None:
        brain = np.asarray(truth["brain_mask"], dtype=bool) & mask
        for c in truth["classes"]:
            region = np.asarray(truth["regions"][c], dtype=bool) & mask
            if region.sum() >= min_voxels:
                masks[f"region {c}"] = region
                rows.append({"roi": f"region {c}", "kind": "planted", "label": c})
    planted_any = np.zeros_like(brain)
    for m in masks.values():
        planted_any |= m
    if atlas is not None:
        extra = load_atlas(atlas, shape=mask.shape, affine=affine, names_file=atlas_names,
                           min_voxels=min_voxels, within=brain)
        kind, source = "atlas", "atlas"
    elif n_parcels > 0:
        labels = parcellate_mask(brain & ~planted_any, n_parcels, voxel_size=voxel_size,
                                 seed=seed)
        extra = masks_from_labels(labels, min_voxels=min_voxels)
        kind, source = "parcel", "generated" if truth is not None else "parcellation"
    else:
        extra, kind, source = {}, "parcel", "generated" if truth is not None else "parcellation"
    for name, m in extra.items():
        if name in masks:
            raise ValueError(f"ROI name {name!r} is used twice")
        masks[name] = m
        rows.append({"roi": name, "kind": kind, "label": None})
    if not masks:
        raise ValueError("no ROI: give an atlas, a truth, or n_parcels > 0")
    table = pd.DataFrame(rows)
    table["n_voxels"] = [int(masks[r].sum()) for r in table["roi"]]
    return RoiSet(masks, table[["roi", "kind", "n_voxels", "label"]], source)


__all__ = ["KINDS", "RoiSet", "load_atlas", "make_rois", "masks_from_labels",
           "parcellate_mask"]
