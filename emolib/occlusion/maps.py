"""From occlusion of held-out volumes to class maps and their reading.

:func:`select_confident` picks the held-out volumes to explain (the original's rule),
:func:`occlude_by_fold` occludes each with its own fold's network
(:func:`emolib.models.iter_folds`), :func:`class_map_images` / :func:`save_class_maps` write
the class-mean maps as NIfTI in the data's space, :func:`top_voxels` lists each map's largest
drops, :func:`voxel_drop_vectors` gives each voxel's vector of class drops (for UMAP), and
where regions are known (a planted truth, an atlas) :func:`localisation_scores` and
:func:`localisation_matrix` score the maps against them and :func:`label_voxels` names them.
Tables in, tables and arrays out: nothing here reads the study's files.
"""

from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas
from sklearn.metrics import roc_auc_score
from tqdm.auto import tqdm

from emolib.manifest import fingerprint, sha256_bytes
from emolib.models.folds import ModelForFold, iter_folds
from emolib.models.identity import model_digest
from emolib.occlusion.engine import OcclusionResult, occlusion_map
from emolib.occlusion.grid import as_triple

__all__ = [
    "analysis_mask", "class_map_images", "label_voxels", "localisation_matrix",
    "localisation_scores", "occlude_by_fold", "save_class_maps", "select_confident",
    "top_voxels", "voxel_drop_vectors",
]


def select_confident(
    predictions: pandas.DataFrame,
    classes: Sequence[str],
    min_prob: float = 0.75,
    n_per_class: int = 10,
    seed: int = 0,
    correct_only: bool = True,
    model: str = "cnn",
    fill_up: bool = False,
) -> pandas.DataFrame:
    """Mark the held-out volumes to occlude, as the original did.

    A held-out prediction is *eligible* when the model got it right (``correct_only``) with a
    true-class probability of at least ``min_prob``; of each class's eligible volumes,
    ``n_per_class`` are drawn at random (seeded), or all of them when there are fewer. With
    ``fill_up``, a class with fewer eligible volumes is filled up to ``n_per_class`` with its
    other held-out volumes of highest true-class probability (flagged in ``rule``), so that a
    network that is rarely confident still gets maps, to be read with that in mind.

    Parameters
    ----------
    predictions : pandas.DataFrame
        Held-out predictions (:attr:`emolib.decoding.DecodingResult.predictions`): columns
        ``fold``, ``sample``, ``y``, ``model`` and ``p_<class>``.
    classes : sequence of str
        Class names, in the order ``y`` indexes them.
    min_prob : float, default=0.75
        Smallest true-class probability (the original's 0.75).
    n_per_class : int, default=10
        Volumes drawn per class (the original's 10).
    seed : int, default=0
        Seed of the draw.
    correct_only : bool, default=True
        Require the predicted class (the argmax) to be the true one.
    model : str, default="cnn"
        Which model's predictions to use.
    fill_up : bool, default=False
        Fill classes with too few eligible volumes up with their most confident others.

    Returns
    -------
    pandas.DataFrame
        The rows of ``model`` with ``p_true`` (true-class probability), ``pred`` (predicted
        class index), ``eligible``, ``selected`` and ``rule`` (``"original"`` for volumes
        drawn by the rule, ``"filled up"``, or ``""`` when not selected) added; index reset.
    """
    if n_per_class < 0:
        raise ValueError("n_per_class must be >= 0")
    rows = predictions[predictions["model"] == model].reset_index(drop=True)
    if rows.empty:
        raise ValueError(f"no predictions of model {model!r}")
    cols = [f"p_{c}" for c in classes]
    missing = [c for c in cols if c not in rows.columns]
    if missing:
        raise ValueError(f"predictions lack the columns {missing}")
    probs = rows[cols].to_numpy(dtype=np.float64)
    y = rows["y"].to_numpy(dtype=np.int64)
    p_true = probs[np.arange(len(y)), y]
    pred = probs.argmax(axis=1)
    eligible = p_true >= min_prob
    if correct_only:
        eligible &= pred == y
    rng = np.random.default_rng(seed)
    rule = np.full(len(rows), "", dtype=object)
    for c in range(len(classes)):
        idx = np.flatnonzero(eligible & (y == c))
        take = min(n_per_class, len(idx))
        if take:
            rule[rng.choice(idx, size=take, replace=False)] = "original"
        if fill_up and take < n_per_class:
            rest = np.flatnonzero((y == c) & (rule == ""))
            rest = rest[np.argsort(-p_true[rest], kind="stable")][: n_per_class - take]
            rule[rest] = "filled up"
    return rows.assign(p_true=p_true, pred=pred, eligible=eligible, selected=rule != "",
                       rule=rule.astype(str))


def occlude_by_fold(
    selection: pandas.DataFrame,
    volumes: np.ndarray,
    model_for_fold: ModelForFold,
    patch: int | Sequence[int] = (2, 2, 2),
    stride: int | Sequence[int] = (2, 2, 2),
    fill: float = 0.0,
    batch_size: int = 64,
    *,
    n_threads: int | None = 1,
    device: str = "cpu",
    method: str = "auto",
    progress: bool = True,
    store_dir: str | os.PathLike | None = None,
    part_size: int = 16,
) -> OcclusionResult:
    """Occlude each selected volume with its own fold's model (the one that never saw it).

    The volumes of each fold are occluded ``part_size`` at a time. With ``store_dir`` every
    finished part is saved there at once (one ``.npz`` per part, written atomically), keyed
    by what made it: the model's weights (:func:`emolib.models.model_digest`), the bytes of
    its volumes, their targets and the occlusion parameters. A later call reuses each part
    whose key is unchanged, recomputes the others, and removes parts that no longer belong
    to the job: an interrupted call continues where it stopped, and a changed model or
    selection never returns old maps. ``OcclusionResult.reuse`` says what happened to each
    part. A part read back is the part computed before, bit for bit; the key holds the
    model's device type, not the number of threads (which may change the last digits).

    Parameters
    ----------
    selection : pandas.DataFrame
        One row per volume to occlude, with ``fold``, ``sample`` (row of ``volumes``) and
        ``y`` (the target class), e.g. the selected rows of :func:`select_confident`.
    volumes : numpy.ndarray, shape (n_samples, X, Y, Z)
        All prepared volumes (a memory map is fine); ``sample`` indexes them.
    model_for_fold : callable
        ``model_for_fold(fold)`` returns the fold's model or the path of its ``best.pt``
        (e.g. :meth:`emolib.decoding.DecodingResult.fold_model_path`).
    patch, stride, fill, batch_size, method
        As in :func:`occlusion_map`.
    n_threads : int or None, default=1
        Torch threads while occluding (``None`` leaves the setting alone).
    device : str, default="cpu"
        Where a model loaded from a path is put.
    progress : bool, default=True
        A progress bar over the volumes.
    store_dir : str or path-like, optional
        Folder of the saved parts (created; this function owns its ``*.npz`` files).
    part_size : int, default=16
        Volumes per part.

    Returns
    -------
    OcclusionResult
        Maps, coarse drops, base probabilities and targets in the row order of ``selection``.
    """
    for col in ("fold", "sample", "y"):
        if col not in selection.columns:
            raise ValueError(f"selection needs a {col!r} column")
    if len(selection) == 0:
        raise ValueError("nothing to occlude: the selection is empty")
    if int(part_size) < 1:
        raise ValueError(f"part_size must be a positive number of volumes, got {part_size!r}")
    store = None if store_dir is None else Path(store_dir)
    if store is not None:
        store.mkdir(parents=True, exist_ok=True)
        for leftover in store.glob("*.npz.tmp"):  # what a killed call was writing
            leftover.unlink()
    targets = selection["y"].to_numpy(dtype=np.int64)
    job = {"format": _STORE_FORMAT, "patch": as_triple(patch, "patch"),
           "stride": as_triple(stride, "stride"), "fill": float(fill),
           "batch_size": int(batch_size), "method": method}
    n = len(selection)
    maps = coarse = None
    base = np.empty(n, dtype=np.float32)
    rows, kept, first = [], set(), None
    bar = tqdm(total=n, desc="occluding", unit="volume", disable=not progress)
    for batch in iter_folds(selection, volumes, model_for_fold, n_threads=n_threads,
                            device=device):
        if store is not None:
            digest = model_digest(batch.model)
            device_type = next(batch.model.parameters()).device.type
            stem = re.sub(r"[^A-Za-z0-9_.-]", "_", batch.fold)
            stem += f"-{sha256_bytes(batch.fold.encode())[:8]}"  # distinct after the cleaning
        for k, a in enumerate(range(0, len(batch.positions), int(part_size))):
            pos = batch.positions[a:a + int(part_size)]
            vols = np.ascontiguousarray(batch.volumes[a:a + int(part_size)])
            res, status = None, "new"
            if store is not None:
                path = store / f"{stem}-{k:04d}.npz"
                key = fingerprint({**job, "model": digest, "device": device_type,
                                   "targets": targets[pos],
                                   "volumes": sha256_bytes(vols.tobytes()),
                                   "shape": vols.shape, "dtype": str(vols.dtype)})
                res = _read_part(path, key, patch, stride, fill)
                status = "reuse" if res is not None else ("stale" if path.exists() else "new")
                kept.add(path.name)
            if res is None:
                res = occlusion_map(batch.model, vols, targets[pos], patch, stride, fill,
                                    batch_size, method=method, progress=False)
                if store is not None:
                    _write_part(path, key, res)
            if maps is None:
                maps = np.empty((n, *res.maps.shape[1:]), dtype=np.float32)
                coarse = np.empty((n, *res.coarse.shape[1:]), dtype=np.float32)
                first = res
            maps[pos], coarse[pos], base[pos] = res.maps, res.coarse, res.base_prob
            rows.append({"fold": batch.fold, "part": k, "volumes": len(pos), "status": status})
            bar.update(len(pos))
    bar.close()
    if store is not None:  # parts of an earlier job that are not part of this one
        for old in store.glob("*.npz"):
            if old.name not in kept:
                old.unlink()
    return OcclusionResult(maps=maps, coarse=coarse, base_prob=base, targets=targets,
                           starts=first.starts, patch=first.patch, stride=first.stride,
                           fill=first.fill, method=first.method,
                           reuse=pandas.DataFrame(rows) if store is not None else None)


#: Format of the parts :func:`occlude_by_fold` stores (a change makes every part stale).
_STORE_FORMAT = 1


def _write_part(path: Path, key: str, res: OcclusionResult) -> None:
    """Save one part atomically: written beside, flushed, then renamed into place."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        np.savez(fh, key=np.array(key), maps=res.maps, coarse=res.coarse,
                 base_prob=res.base_prob, method=np.array(res.method),
                 **{f"starts_{i}": s for i, s in enumerate(res.starts)})
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _read_part(path: Path, key: str, patch, stride, fill: float) -> OcclusionResult | None:
    """The stored part at ``path`` if it was made for ``key``, else None."""
    try:
        with np.load(path, allow_pickle=False) as f:
            if str(f["key"]) != key:
                return None
            return OcclusionResult(
                maps=f["maps"], coarse=f["coarse"], base_prob=f["base_prob"],
                targets=np.empty(0, np.int64), starts=tuple(f[f"starts_{i}"] for i in range(3)),
                patch=as_triple(patch, "patch"), stride=as_triple(stride, "stride"),
                fill=float(fill), method=str(f["method"]))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None


def class_map_images(
    class_maps: np.ndarray, classes: Sequence[str], affine: np.ndarray
) -> dict[str, nib.Nifti1Image]:
    """Wrap class-mean maps as NIfTI images in the data's space (same affine).

    Classes whose map is all NaN (no volume selected) are left out.

    Parameters
    ----------
    class_maps : numpy.ndarray, shape (n_classes, X, Y, Z)
        Output of :func:`class_mean_maps`.
    classes : sequence of str
        Class names.
    affine : numpy.ndarray, shape (4, 4)
        Affine of the data's voxel grid.

    Returns
    -------
    dict of str to nibabel.Nifti1Image
        Float32 images with millimetre units, one per class with a map.
    """
    if len(class_maps) != len(classes):
        raise ValueError(f"{len(class_maps)} maps but {len(classes)} classes")
    out = {}
    for c, m in zip(classes, class_maps, strict=True):
        if np.isnan(m).all():
            continue
        img = nib.Nifti1Image(np.nan_to_num(m).astype(np.float32), np.asarray(affine, float))
        img.header.set_xyzt_units("mm")
        img.header["descrip"] = f"occlusion drop p({c})"[:79].encode()
        out[c] = img
    return out


def save_class_maps(images: dict[str, nib.Nifti1Image], folder: str | os.PathLike,
                    prefix: str = "occlusion") -> dict[str, Path]:
    """Write class maps as ``<folder>/<prefix>_<CLASS>.nii.gz``; returns class -> path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for c, img in images.items():
        path = folder / f"{prefix}_{c}.nii.gz"
        nib.save(img, path)
        paths[c] = path
    return paths


def top_voxels(
    class_maps: np.ndarray,
    classes: Sequence[str],
    k: int = 500,
    mask: np.ndarray | None = None,
    affine: np.ndarray | None = None,
) -> pandas.DataFrame:
    """The ``k`` voxels with the largest drop of each class's map (inside ``mask``).

    Parameters
    ----------
    class_maps : numpy.ndarray, shape (n_classes, X, Y, Z)
        Class-mean maps; classes whose map is all NaN are skipped.
    classes : sequence of str
        Class names.
    k : int, default=500
        Voxels per class (the original's 500), at most the voxels in the mask.
    mask : numpy.ndarray of bool, optional
        Voxels allowed (default: all).
    affine : numpy.ndarray, optional
        When given, world coordinates ``x``, ``y``, ``z`` (mm) are added.

    Returns
    -------
    pandas.DataFrame
        ``class``, ``rank`` (0 = largest drop), voxel indices ``i``, ``j``, ``k``, ``drop``
        and, with an affine, ``x``, ``y``, ``z``.
    """
    if k < 1:
        raise ValueError("k must be >= 1")
    shape = class_maps.shape[1:]
    mask = np.ones(shape, bool) if mask is None else np.asarray(mask, bool)
    if mask.shape != shape:
        raise ValueError(f"mask has shape {mask.shape}, the maps {shape}")
    inside = np.flatnonzero(mask.reshape(-1))
    frames = []
    for c, m in zip(classes, class_maps, strict=True):
        if np.isnan(m).all():
            continue
        vals = m.reshape(-1)[inside]
        kk = min(k, len(vals))
        top = np.argsort(-vals, kind="stable")[:kk]
        ijk = np.stack(np.unravel_index(inside[top], shape), axis=1)
        df = pandas.DataFrame({"class": c, "rank": np.arange(kk), "i": ijk[:, 0], "j": ijk[:, 1],
                           "k": ijk[:, 2], "drop": vals[top]})
        if affine is not None:
            xyz = nib.affines.apply_affine(np.asarray(affine, float), ijk)
            df = df.assign(x=xyz[:, 0], y=xyz[:, 1], z=xyz[:, 2])
        frames.append(df)
    if not frames:
        raise ValueError("no class has a map")
    return pandas.concat(frames, ignore_index=True)


def localisation_matrix(
    class_maps: np.ndarray,
    classes: Sequence[str],
    regions: dict[str, np.ndarray],
    brain_mask: np.ndarray,
) -> pandas.DataFrame:
    """ROC AUC of every class map against every planted region, inside the brain.

    Entry ``(map c, region r)`` is the AUC of map ``c``'s values as a score for "the voxel
    is in region ``r``", over the voxels of ``brain_mask``: 1 when the region's voxels have the
    largest drops, 0.5 when the map does not single them out. A map that found its own
    class's region has a high diagonal and off-diagonal values near (or below) 0.5.

    Returns
    -------
    pandas.DataFrame
        Rows: classes with a map; columns: regions; NaN where a region has no voxel in the
        brain or covers all of it.
    """
    brain = np.asarray(brain_mask, bool)
    rows = {}
    for c, m in zip(classes, class_maps, strict=True):
        if np.isnan(m).all():
            continue
        vals = m[brain]
        row = {}
        for r, reg in regions.items():
            inside = np.asarray(reg, bool)[brain]
            row[r] = (float(roc_auc_score(inside, vals)) if 0 < inside.sum() < inside.size
                      else np.nan)
        rows[c] = row
    return pandas.DataFrame.from_dict(rows, orient="index").rename_axis(index="map",
                                                                    columns="region")


def localisation_scores(
    class_maps: np.ndarray,
    classes: Sequence[str],
    regions: dict[str, np.ndarray],
    brain_mask: np.ndarray,
    top_k: int = 500,
) -> pandas.DataFrame:
    """Does each class's occlusion map find the region planted for that class?

    Parameters
    ----------
    class_maps : numpy.ndarray, shape (n_classes, X, Y, Z)
        Class-mean maps (:func:`class_mean_maps`).
    classes : sequence of str
        Class names.
    regions : dict of str to numpy.ndarray
        Planted region mask of each class (:func:`emolib.synthetic.read_truth`).
    brain_mask : numpy.ndarray of bool
        Voxels scored.
    top_k : int, default=500
        Size of the top-voxel set whose precision is reported.

    Returns
    -------
    pandas.DataFrame
        One row per class: ``auc`` (map values vs the class's region inside the brain),
        ``precision_at_k`` (share of the ``k`` top voxels inside the region), ``chance``
        (the region's share of the brain, the precision of random voxels), ``k``,
        ``peak_in_region`` (the largest drop lies in the region), ``argmax_agreement``
        (share of the region's voxels whose largest class drop is this class's) and
        ``n_region`` (voxels of the region in the brain). NaN for classes without a map.
    """
    brain = np.asarray(brain_mask, bool)
    have = np.array([not np.isnan(m).all() for m in class_maps])
    stack = np.where(have[:, None], np.nan_to_num(class_maps.reshape(len(class_maps), -1)),
                     -np.inf)
    argmax = stack.argmax(axis=0).reshape(class_maps.shape[1:])
    n_brain = int(brain.sum())
    rows = []
    for ci, (c, m) in enumerate(zip(classes, class_maps, strict=True)):
        reg = np.asarray(regions[c], bool) & brain if c in regions else np.zeros_like(brain)
        row = {"class": c, "auc": np.nan, "precision_at_k": np.nan,
               "chance": reg.sum() / max(n_brain, 1), "k": min(top_k, n_brain),
               "peak_in_region": np.nan, "argmax_agreement": np.nan,
               "n_region": int(reg.sum())}
        if have[ci] and 0 < reg.sum() < n_brain:
            vals, inside = m[brain], reg[brain]
            top = np.argsort(-vals, kind="stable")[: row["k"]]
            row.update(auc=float(roc_auc_score(inside, vals)),
                       precision_at_k=float(inside[top].mean()),
                       peak_in_region=bool(inside[top[0]]),
                       argmax_agreement=float((argmax[reg] == ci).mean()))
        rows.append(row)
    return pandas.DataFrame(rows)


def analysis_mask(mask: np.ndarray, mean_image: nib.Nifti1Image | None = None) -> np.ndarray:
    """The brain voxels to analyse maps in.

    The data's own mask when it is one (01_dataprep with ``mask``), else an EPI mask
    computed from a mean image (:func:`nilearn.masking.compute_epi_mask`), else all voxels.
    """
    mask = np.asarray(mask, bool)
    if not mask.all() or mean_image is None:
        return mask
    from nilearn.masking import compute_epi_mask

    return np.asanyarray(compute_epi_mask(mean_image).dataobj).astype(bool)


def label_voxels(voxels: pandas.DataFrame | np.ndarray, regions: dict[str, np.ndarray],
                 outside: str = "none") -> np.ndarray:
    """Name the planted region each voxel lies in (``outside`` when in none).

    Parameters
    ----------
    voxels : pandas.DataFrame or numpy.ndarray
        Voxel indices: columns ``i``, ``j``, ``k`` or an ``(n, 3)`` array.
    regions : dict of str to numpy.ndarray
        Region masks (:func:`emolib.synthetic.forrest.find_truth`); a voxel in several
        takes the first.
    outside : str, default="none"
        Name for voxels outside every region.

    Returns
    -------
    numpy.ndarray of str, shape (n,)
    """
    ijk = voxels[["i", "j", "k"]].to_numpy() if isinstance(voxels, pandas.DataFrame) else voxels
    ijk = np.asarray(ijk, dtype=np.int64)
    out = np.full(len(ijk), outside, dtype=object)
    for name, reg in reversed(list(regions.items())):
        out[np.asarray(reg, bool)[tuple(ijk.T)]] = name
    return out.astype(str)


def voxel_drop_vectors(
    class_maps: np.ndarray,
    classes: Sequence[str],
    mask: np.ndarray,
    max_voxels: int | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, pandas.DataFrame]:
    """Each voxel's vector of class-mean drops (the original's per-voxel 5-vectors).

    Parameters
    ----------
    class_maps : numpy.ndarray, shape (n_classes, X, Y, Z)
        Class-mean occlusion maps; classes whose map is all NaN are left out.
    classes : sequence of str
        Class names.
    mask : numpy.ndarray of bool
        Voxels to take.
    max_voxels : int, optional
        Take a seeded random sample of at most this many voxels (full-size grids).
    seed : int, default=0
        Seed of that sample.

    Returns
    -------
    vectors : numpy.ndarray, shape (n_voxels, n_classes_with_maps)
    voxels : pandas.DataFrame
        ``i``, ``j``, ``k`` of each voxel and ``argmax`` (the class with the largest drop).
    """
    mask = np.asarray(mask, bool)
    have = [ci for ci, m in enumerate(class_maps) if not np.isnan(m).all()]
    if not have:
        raise ValueError("no class has a map")
    ijk = np.argwhere(mask)
    if max_voxels is not None and len(ijk) > max_voxels:
        keep = np.sort(np.random.default_rng(seed).choice(len(ijk), max_voxels,
                                                          replace=False))
        ijk = ijk[keep]
    vectors = np.stack([class_maps[ci][tuple(ijk.T)] for ci in have], axis=1)
    names = np.asarray([classes[ci] for ci in have])
    voxels = pandas.DataFrame({"i": ijk[:, 0], "j": ijk[:, 1], "k": ijk[:, 2],
                           "argmax": names[vectors.argmax(axis=1)]})
    return vectors.astype(np.float32), voxels
