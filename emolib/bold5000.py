"""BOLD5000 RDM files: read, validate and write them; ResNet-50 layer RDMs from images.

The study compares ResNet-50 layers (``conv1``, ``layer1`` .. ``layer4``) with 10 ROIs
(LH/RH x EarlyVis, LOC, OPA, PPA, RSC) of BOLD5000 subjects CSI1-3, patterns being images
aligned by image id. Two on-disk layouts of RDM ``.h5`` files are read and written:

``"rsatoolbox"``
    rsatoolbox's own hdf5 layout (:meth:`rsatoolbox.rdm.RDMs.save` with
    ``file_type="hdf5"``, read back by :func:`rsatoolbox.rdm.load_rdm`): a
    ``dissimilarities`` dataset (n_rdm, n(n-1)/2) and groups ``rdm_descriptors`` (e.g.
    ``roi``, ``subject``) and ``pattern_descriptors`` (the ids under ``pattern_key``).
``"plain"``
    One dataset per ROI or layer at the root, each either square (n, n) or condensed
    (n(n-1)/2,) (upper triangle, row-major), plus a dataset of image ids (``image_ids``).
    Root attributes: ``subject`` (e.g. ``"CSI1"``), ``descriptor`` (``"roi"`` or ``"layer"``:
    what the dataset names are) and optionally ``dissimilarity_measure``.

Every reader raises :class:`emolib.errors.InputDataError` naming the file and the problem:
not HDF5, missing ids, a size that is not n(n-1)/2 or not square, NaNs, duplicated ids.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
from numpy.typing import DTypeLike
from rsatoolbox.rdm import RDMs, load_rdm

from emolib.errors import InputDataError
from emolib.rsa import PATTERN_KEY, _condense_square, calc_rdms_from_model

#: BOLD5000 subjects used by the study (CSI4 has too few sessions and is excluded).
SUBJECTS = ("CSI1", "CSI2", "CSI3")
#: ROI areas, ordered from early to high-level visual cortex.
ROI_AREAS = ("EarlyVis", "LOC", "OPA", "PPA", "RSC")
HEMISPHERES = ("LH", "RH")
#: The 10 ROIs, named as in BOLD5000's ROI files.
ROIS = tuple(h + a for h in HEMISPHERES for a in ROI_AREAS)
#: ResNet-50 stages compared with the ROIs (torchvision node names).
LAYERS = ("conv1", "layer1", "layer2", "layer3", "layer4")
#: Visual systems of the grouped figures.
SYSTEMS: dict[str, tuple[str, ...]] = {
    "Early": ("EarlyVis",),
    "Mid": ("LOC", "OPA"),
    "High": ("PPA", "RSC"),
}
#: Name of the ids dataset of the plain layout.
IDS_DATASET = "image_ids"
LAYOUTS = ("rsatoolbox", "plain")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
#: ImageNet normalisation of torchvision's ResNet-50 weights.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def roi_area(roi: str) -> str:
    """Return the area of a ROI name without its hemisphere (``"LHPPA"`` -> ``"PPA"``)."""
    for h in HEMISPHERES:
        if roi.startswith(h) and roi[len(h):] in ROI_AREAS:
            return roi[len(h):]
    return roi


def roi_system(roi: str, systems: Mapping[str, Sequence[str]] = SYSTEMS) -> str | None:
    """Return the system (``Early``/``Mid``/``High``) of a ROI or area, or None if none."""
    area = roi_area(roi)
    for name, areas in systems.items():
        if area in areas or roi == name:
            return name
    return None


# --------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------


def _open_h5(path: Path) -> h5py.File:
    if not path.is_file():
        raise InputDataError(path, "file does not exist")
    if not h5py.is_hdf5(path):
        raise InputDataError(path, "not an HDF5 file")
    try:
        return h5py.File(path, "r")
    except OSError as exc:  # pragma: no cover - corrupt HDF5 signature
        raise InputDataError(path, f"cannot open as HDF5: {exc}") from exc


def detect_layout(path: str | os.PathLike, ids_dataset: str = IDS_DATASET) -> str:
    """Return the layout (``"rsatoolbox"`` or ``"plain"``) of an RDM ``.h5`` file.

    Parameters
    ----------
    path : str or path-like
        The file.
    ids_dataset : str, default="image_ids"
        Name of the ids dataset of the plain layout.

    Raises
    ------
    InputDataError
        If the file is not HDF5 or matches neither layout.
    """
    path = Path(path)
    with _open_h5(path) as f:
        if "dissimilarities" in f and "pattern_descriptors" in f:
            return "rsatoolbox"
        if ids_dataset in f:
            return "plain"
        datasets = [k for k in f if isinstance(f[k], h5py.Dataset)]
    if datasets:
        raise InputDataError(
            path, f"missing the dataset of image ids {ids_dataset!r} (found {datasets[:10]})"
        )
    raise InputDataError(path, "neither rsatoolbox's RDM layout nor a plain RDM layout")


def _decode_ids(values: np.ndarray) -> list[str]:
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in np.ravel(values)]


def _check_ids(path: Path, ids: list[str], where: str) -> None:
    values, counts = np.unique(np.asarray(ids), return_counts=True)
    if (counts > 1).any():
        dup = values[counts > 1]
        raise InputDataError(
            path, f"{where}: {len(dup)} duplicated image ids, e.g. {list(dup[:5])}"
        )


def _check_finite(path: Path, name: str, v: np.ndarray) -> None:
    if np.issubdtype(v.dtype, np.floating) and not np.isfinite(v).all():
        bad = int((~np.isfinite(v)).sum())
        raise InputDataError(path, f"RDM {name!r} has {bad} NaN or infinite dissimilarities")


def _condensed_length_problem(length: int, n: int) -> str | None:
    want = n * (n - 1) // 2
    if length != want:
        return f"condensed length {length} is not n(n-1)/2 = {want} for {n} image ids"
    return None


def _read_plain(
    path: Path, pattern_key: str, ids_dataset: str, descriptor: str | None, dtype: Any
) -> RDMs:
    with _open_h5(path) as f:
        if ids_dataset not in f or not isinstance(f[ids_dataset], h5py.Dataset):
            raise InputDataError(path, f"missing the dataset of image ids {ids_dataset!r}")
        raw_ids = f[ids_dataset][()]
        if np.ndim(raw_ids) != 1:
            raise InputDataError(path, f"{ids_dataset!r} must be 1D, has shape {np.shape(raw_ids)}")
        ids = _decode_ids(raw_ids)
        _check_ids(path, ids, ids_dataset)
        n = len(ids)
        names = [k for k in f if k != ids_dataset and isinstance(f[k], h5py.Dataset)]
        if not names:
            raise InputDataError(path, "no RDM datasets besides the image ids")
        attrs = dict(f.attrs)
        vectors = []
        for name in names:
            ds = f[name]
            if not np.issubdtype(ds.dtype, np.number):
                raise InputDataError(path, f"dataset {name!r} is not numeric ({ds.dtype})")
            out_dtype = np.dtype(dtype) if dtype is not None else (
                ds.dtype if np.issubdtype(ds.dtype, np.floating) else np.dtype(np.float64)
            )
            if ds.ndim == 1:
                problem = _condensed_length_problem(ds.shape[0], n)
                if problem:
                    raise InputDataError(path, f"RDM {name!r}: {problem}")
                v = np.asarray(ds[()], dtype=out_dtype)
            elif ds.ndim == 2:
                if ds.shape[0] != ds.shape[1]:
                    raise InputDataError(path, f"RDM {name!r} is not square: shape {ds.shape}")
                if ds.shape[0] != n:
                    raise InputDataError(
                        path, f"RDM {name!r} is {ds.shape[0]} x {ds.shape[1]} but there are "
                        f"{n} image ids"
                    )
                m = ds[()]
                _check_finite(path, name, m)
                if not np.allclose(m, m.T, rtol=1e-5, atol=1e-6):
                    raise InputDataError(path, f"RDM {name!r} is not symmetric")
                v = _condense_square(m, out_dtype)
                del m
            else:
                raise InputDataError(
                    path, f"RDM {name!r} must be square (n, n) or condensed, has shape {ds.shape}"
                )
            _check_finite(path, name, v)
            vectors.append(v)
    desc = descriptor or _attr_str(attrs.get("descriptor")) or "roi"
    rdm_descriptors: dict[str, list] = {desc: names}
    subject = _attr_str(attrs.get("subject"))
    if subject:
        rdm_descriptors["subject"] = [subject] * len(names)
    return RDMs(
        np.stack(vectors),
        dissimilarity_measure=_attr_str(attrs.get("dissimilarity_measure")) or None,
        rdm_descriptors=rdm_descriptors,
        pattern_descriptors={pattern_key: ids},
    )


def _attr_str(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return str(value)


def _read_rsatoolbox(path: Path, pattern_key: str, dtype: Any) -> RDMs:
    with _open_h5(path) as f:
        if "dissimilarities" not in f or not isinstance(f["dissimilarities"], h5py.Dataset):
            raise InputDataError(
                path, "missing the 'dissimilarities' dataset of rsatoolbox's layout"
            )
        pd_group = f.get("pattern_descriptors")
        if not isinstance(pd_group, h5py.Group) or pattern_key not in pd_group:
            have = list(pd_group) if isinstance(pd_group, h5py.Group) else []
            raise InputDataError(
                path, f"missing the image ids: no pattern descriptor {pattern_key!r} "
                f"(pattern descriptors: {have})"
            )
        ids = _decode_ids(pd_group[pattern_key][()])
        shape = f["dissimilarities"].shape
        if len(shape) != 2:
            raise InputDataError(
                path, f"'dissimilarities' must be 2D (n_rdm, n(n-1)/2), has shape {shape}"
            )
        problem = _condensed_length_problem(shape[1], len(ids))
        if problem:
            raise InputDataError(path, problem)
        _check_ids(path, ids, f"pattern descriptor {pattern_key!r}")
    try:
        rdms = load_rdm(str(path), file_type="hdf5")
    except Exception as exc:  # rsatoolbox raises assorted errors on odd content
        raise InputDataError(path, f"rsatoolbox cannot read it: {exc}") from exc
    if dtype is not None:
        rdms.dissimilarities = np.asarray(rdms.dissimilarities, dtype=dtype)
    for k in range(rdms.n_rdm):
        _check_finite(path, f"#{k}", rdms.dissimilarities[k])
    rdms.pattern_descriptors[pattern_key] = ids
    for key, values in list(rdms.rdm_descriptors.items()):
        rdms.rdm_descriptors[key] = np.asarray(values).tolist()
    return rdms


def load_rdms(
    path: str | os.PathLike,
    *,
    layout: str = "auto",
    pattern_key: str = PATTERN_KEY,
    ids_dataset: str = IDS_DATASET,
    descriptor: str | None = None,
    dtype: DTypeLike | None = None,
) -> RDMs:
    """Read an RDM ``.h5`` file (rsatoolbox's layout or the plain layout) and validate it.

    Parameters
    ----------
    path : str or path-like
        The file.
    layout : {"auto", "rsatoolbox", "plain"}, default="auto"
        File layout; ``"auto"`` detects it (see :func:`detect_layout`).
    pattern_key : str, default="id"
        Pattern descriptor holding the image ids (read from, and written to, the RDMs).
    ids_dataset : str, default="image_ids"
        Ids dataset of the plain layout.
    descriptor : str, optional
        Plain layout: rdm descriptor for the dataset names (default: the file's
        ``descriptor`` attribute, else ``"roi"``).
    dtype : dtype, optional
        dtype of the dissimilarities (default: the file's floating dtype).

    Returns
    -------
    rsatoolbox.rdm.RDMs
        With ``pattern_descriptors[pattern_key]`` the image ids (str) in the file's order.

    Raises
    ------
    InputDataError
        Not HDF5, ids missing or duplicated, sizes not n(n-1)/2 or not square, NaNs.
    """
    path = Path(path)
    if layout == "auto":
        layout = detect_layout(path, ids_dataset)
    if layout == "plain":
        return _read_plain(path, pattern_key, ids_dataset, descriptor, dtype)
    if layout == "rsatoolbox":
        return _read_rsatoolbox(path, pattern_key, dtype)
    raise ValueError(f"layout must be 'auto' or one of {LAYOUTS}, not {layout!r}")


# --------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------


def _single_value(rdms: RDMs, key: str) -> str | None:
    if key in rdms.rdm_descriptors:
        values = {str(v) for v in rdms.rdm_descriptors[key]}
        if len(values) > 1:
            raise ValueError(f"the plain layout holds one {key} per file, got {sorted(values)}")
        return values.pop() if values else None
    if key in rdms.descriptors:
        return str(rdms.descriptors[key])
    return None


def save_rdms(
    rdms: RDMs,
    path: str | os.PathLike,
    *,
    layout: str = "rsatoolbox",
    pattern_key: str = PATTERN_KEY,
    ids_dataset: str = IDS_DATASET,
    descriptor: str | None = None,
    condensed: bool = True,
    overwrite: bool = False,
) -> Path:
    """Write RDMs to an ``.h5`` file in rsatoolbox's layout or the plain layout.

    Parameters
    ----------
    rdms : rsatoolbox.rdm.RDMs
        RDMs with ids in ``pattern_descriptors[pattern_key]``.
    path : str or path-like
        Output file.
    layout : {"rsatoolbox", "plain"}, default="rsatoolbox"
        ``"rsatoolbox"`` calls ``rdms.save(path, file_type="hdf5")``.
    pattern_key : str, default="id"
        Pattern descriptor holding the ids.
    ids_dataset : str, default="image_ids"
        Plain layout: name of the ids dataset.
    descriptor : str, optional
        Plain layout: rdm descriptor naming the datasets (default ``roi`` if present, else
        ``layer``).
    condensed : bool, default=True
        Plain layout: write condensed vectors (else square matrices).
    overwrite : bool, default=False
        Replace an existing file.

    Returns
    -------
    pathlib.Path
        The written file.
    """
    path = Path(path)
    if path.exists():
        if not overwrite:
            raise FileExistsError(f"{path} exists (pass overwrite=True)")
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    if pattern_key not in rdms.pattern_descriptors:
        raise ValueError(f"RDMs have no pattern descriptor {pattern_key!r} with the ids")
    if layout == "rsatoolbox":
        rdms.save(str(path), file_type="hdf5")
        return path
    if layout != "plain":
        raise ValueError(f"layout must be one of {LAYOUTS}, not {layout!r}")
    if descriptor is None:
        descriptor = next((k for k in ("roi", "layer") if k in rdms.rdm_descriptors), None)
        if descriptor is None:
            raise ValueError("pass descriptor= naming the rdm descriptor with dataset names")
    names = [str(v) for v in rdms.rdm_descriptors[descriptor]]
    if len(set(names)) != len(names) or any(n == ids_dataset or "/" in n for n in names):
        raise ValueError(f"dataset names must be unique and valid: {names}")
    ids = [str(v) for v in rdms.pattern_descriptors[pattern_key]]
    with h5py.File(path, "w", track_order=True) as f:
        f.attrs["descriptor"] = descriptor
        subject = _single_value(rdms, "subject")
        if subject is not None:
            f.attrs["subject"] = subject
        if rdms.dissimilarity_measure is not None:
            f.attrs["dissimilarity_measure"] = str(rdms.dissimilarity_measure)
        f.create_dataset(ids_dataset, data=np.array(ids, dtype=h5py.string_dtype()))
        for k, name in enumerate(names):
            v = rdms.dissimilarities[k]
            if condensed:
                f.create_dataset(name, data=v)
            else:
                n, pos = rdms.n_cond, 0
                m = np.zeros((n, n), dtype=v.dtype)
                for i in range(n - 1):
                    m[i, i + 1 :] = m[i + 1 :, i] = v[pos : pos + n - 1 - i]
                    pos += n - 1 - i
                f.create_dataset(name, data=m)
                del m
    return path


# --------------------------------------------------------------------------------------
# a folder of BOLD5000 files
# --------------------------------------------------------------------------------------


@dataclass
class Bold5000RDMs:
    """The RDMs of one BOLD5000 folder.

    Attributes
    ----------
    layers : rsatoolbox.rdm.RDMs
        Layer RDMs (``rdm_descriptors["layer"]``).
    rois : dict of str to rsatoolbox.rdm.RDMs
        ROI RDMs per subject (``rdm_descriptors["roi"]`` and ``["subject"]``), each in its
        file's own pattern order.
    files : dict of str to pathlib.Path
        The file each came from (``"layers"`` and subject names).
    """

    layers: RDMs
    rois: dict[str, RDMs]
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def subjects(self) -> list[str]:
        """Subjects, in file-name order."""
        return list(self.rois)


def load_bold5000(
    folder: str | os.PathLike,
    *,
    pattern_key: str = PATTERN_KEY,
    ids_dataset: str = IDS_DATASET,
    dtype: DTypeLike | None = None,
) -> Bold5000RDMs:
    """Read every RDM ``.h5`` file of a folder: one file of layer RDMs, one per subject of ROIs.

    A file is a layer file when its RDMs carry a ``layer`` descriptor, and a subject's ROI
    file when they carry ``roi`` (the subject from the ``subject`` descriptor/attribute,
    else the file name's stem).

    Parameters
    ----------
    folder : str or path-like
        Folder with ``*.h5`` files in either layout.
    pattern_key, ids_dataset, dtype
        See :func:`load_rdms`.

    Returns
    -------
    Bold5000RDMs
    """
    folder = Path(folder)
    files = sorted(folder.glob("*.h5"))
    if not files:
        raise InputDataError(folder, "no .h5 RDM files")
    layers = None
    rois: dict[str, RDMs] = {}
    where: dict[str, Path] = {}
    for p in files:
        rdms = load_rdms(p, pattern_key=pattern_key, ids_dataset=ids_dataset, dtype=dtype)
        if "layer" in rdms.rdm_descriptors:
            if layers is not None:
                raise InputDataError(p, f"a second file of layer RDMs (first: {where['layers']})")
            layers, where["layers"] = rdms, p
        elif "roi" in rdms.rdm_descriptors:
            subject = _single_value(rdms, "subject") or p.stem
            if subject in rois:
                raise InputDataError(p, f"a second ROI file of subject {subject}")
            if "subject" not in rdms.rdm_descriptors:
                rdms.rdm_descriptors["subject"] = [subject] * rdms.n_rdm
            rois[subject], where[subject] = rdms, p
        else:
            raise InputDataError(p, "RDMs carry neither a 'layer' nor a 'roi' descriptor")
    if layers is None:
        raise InputDataError(folder, "no file of layer RDMs")
    if not rois:
        raise InputDataError(folder, "no file of ROI RDMs")
    return Bold5000RDMs(layers, rois, where)


# --------------------------------------------------------------------------------------
# ResNet-50 layer RDMs from images
# --------------------------------------------------------------------------------------


def load_resnet50(weights: Any = None, *, seed: int = 0) -> Any:
    """Build torchvision's ResNet-50, never downloading anything.

    Parameters
    ----------
    weights : None, str or path-like
        ``None``: random initialisation (seeded by ``seed``). A path to a local state dict
        (``.pth``). A torchvision weights name (``"IMAGENET1K_V1"``, ``"IMAGENET1K_V2"``,
        ``"DEFAULT"``): loaded from the torch hub cache if the file is there, else
        :class:`FileNotFoundError`.
    seed : int, default=0
        Seed of the random initialisation.

    Returns
    -------
    torch.nn.Module
        The model in eval mode.
    """
    import torch
    from torchvision.models import ResNet50_Weights, resnet50

    if weights is None:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = resnet50(weights=None)
        return model.eval()
    model = resnet50(weights=None)
    if isinstance(weights, str) and not Path(weights).exists():
        try:
            w = ResNet50_Weights.DEFAULT if weights == "DEFAULT" else ResNet50_Weights[weights]
        except KeyError as exc:
            raise FileNotFoundError(
                f"no weights file or torchvision weights named {weights!r}"
            ) from exc
        cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(w.url)
        if not cached.is_file():
            raise FileNotFoundError(
                f"{cached} is not in the torch hub cache; this project never downloads "
                "weights: pass a local file path or weights=None"
            )
        weights = cached
    state = torch.load(Path(weights), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    model.load_state_dict(state)
    return model.eval()


def make_image_transform(image_size: int = 224) -> Any:
    """torchvision transform of ResNet-50: resize, centre crop, tensor, ImageNet normalisation."""
    from torchvision import transforms

    return transforms.Compose(
        [
            transforms.Resize(int(round(image_size * 256 / 224))),
            transforms.CenterCrop(image_size),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def list_images(image_dir: str | os.PathLike) -> list[Path]:
    """Image files of a folder (``.jpg``, ``.jpeg``, ``.png``, ``.bmp``), sorted by name."""
    image_dir = Path(image_dir)
    if not image_dir.is_dir():
        raise InputDataError(image_dir, "image folder does not exist")
    files = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise InputDataError(image_dir, f"no images ({', '.join(IMAGE_EXTENSIONS)})")
    return files


def calc_resnet50_rdms(
    image_dir: str | os.PathLike,
    *,
    weights: Any = None,
    layers: Sequence[str] = LAYERS,
    image_size: int = 224,
    batch_size: int = 16,
    reduce: str | int = "flatten",
    method: str = "correlation",
    pattern_key: str = PATTERN_KEY,
    device: str | None = None,
    seed: int = 0,
    dtype: DTypeLike = np.float64,
) -> RDMs:
    """Compute ResNet-50 layer RDMs from a folder of images (ids = file names).

    Parameters
    ----------
    image_dir : str or path-like
        Folder of images (see :func:`list_images`).
    weights : None, str, path-like or torch.nn.Module
        See :func:`load_resnet50`; a model instance is used as is.
    layers : sequence of str, default=LAYERS
        Nodes of ResNet-50, read with torchvision's ``create_feature_extractor``.
    image_size : int, default=224
        Crop size of :func:`make_image_transform`.
    batch_size : int, default=16
        Images per forward pass.
    reduce : {"flatten", "mean"} or int, default="flatten"
        See :func:`emolib.rsa.extract_activations`. ``"flatten"`` keeps all units, which
        needs n_images x 800k floats for ``conv1``; pool (e.g. ``reduce=7``) at scale.
    method : str, default="correlation"
        Dissimilarity.
    pattern_key : str, default="id"
        Pattern descriptor for the ids.
    device : str, optional
        Torch device.
    seed : int, default=0
        Seed of random weights (``weights=None``).
    dtype : dtype, default=float64
        dtype of the dissimilarities.

    Returns
    -------
    rsatoolbox.rdm.RDMs
        One RDM per layer, ``rdm_descriptors`` ``layer`` and ``model="resnet50"``.
    """
    import torch
    from PIL import Image

    files = list_images(image_dir)
    transform = make_image_transform(image_size)
    model = weights if isinstance(weights, torch.nn.Module) else load_resnet50(weights, seed=seed)

    def batches():
        for s in range(0, len(files), batch_size):
            tensors = []
            for p in files[s : s + batch_size]:
                try:
                    with Image.open(p) as im:
                        tensors.append(transform(im.convert("RGB")))
                except OSError as exc:
                    raise InputDataError(p, f"cannot read image: {exc}") from exc
            yield torch.stack(tensors)

    return calc_rdms_from_model(
        model, batches(), [p.name for p in files], layers, method=method,
        pattern_key=pattern_key, reduce=reduce, backend="fx", device=device,
        rdm_descriptors={"model": "resnet50"}, dtype=dtype,
    )


# --------------------------------------------------------------------------------------
# the chapter's inputs and the checks of its results
# --------------------------------------------------------------------------------------

#: Sources of :func:`obtain_bold5000`.
BOLD5000_SOURCES = ("synthetic", "files")
#: Generator parameters that must match for a generated folder to be reused.
_REUSE_KEYS = ("n_images", "seed", "null", "noise", "layout", "subjects")


@dataclass
class Bold5000Source:
    """What :func:`obtain_bold5000` resolved.

    Attributes
    ----------
    folder : pathlib.Path
        Folder of the RDM files.
    data : Bold5000RDMs
        The RDMs, restricted to the requested subjects.
    truth : dict or None
        The planted truth (``truth.json``) when the folder has one, else None (real data).
    generated : bool
        Whether the files were generated by this call (False: reused or real files).
    """

    folder: Path
    data: Bold5000RDMs
    truth: dict | None
    generated: bool

    @property
    def input_files(self) -> list[Path]:
        """The files read: RDM files, then ``truth.json`` when present."""
        files = list(self.data.files.values())
        truth = self.folder / "truth.json"
        return files + ([truth] if truth.is_file() else [])


def obtain_bold5000(
    source: str,
    profile: str,
    *,
    data_dir: str | os.PathLike | None = None,
    bold5000_dir: str | os.PathLike | None = None,
    subjects: Sequence[str] = SUBJECTS,
    n_images: int = 60,
    seed: int = 0,
    null: bool = False,
    noise: float = 0.7,
    layout: str = "plain",
    pattern_key: str = PATTERN_KEY,
) -> Bold5000Source:
    """Resolve the RDM files of the BOLD5000 chapter, generating them once if asked.

    Parameters
    ----------
    source : {"synthetic", "files"}
        ``"synthetic"``: generate BOLD5000-shaped files with a planted hierarchy
        (:func:`emolib.synthetic.bold5000.generate_bold5000`) into
        ``<data_dir>/synthetic/<profile>/bold5000``, reusing them when a previous run wrote
        them with the same generator parameters. ``"files"``: read ``bold5000_dir``.
    profile : str
        Run profile; names the generated folder.
    data_dir : str or path-like, optional
        See :func:`emolib.paths.get_data_dir`.
    bold5000_dir : str or path-like, optional
        Folder of real (or previously generated) RDM files, for ``source="files"``.
    subjects : sequence of str, default=("CSI1", "CSI2", "CSI3")
        Subjects kept (CSI4 is excluded by the study); each must have a ROI file.
    n_images, seed, null, noise, layout
        Generator parameters (synthetic only).
    pattern_key : str, default="id"
        Pattern descriptor of the image ids.

    Returns
    -------
    Bold5000Source

    Raises
    ------
    emolib.errors.InputDataError
        If the folder lacks a file or a requested subject.
    """
    if source not in BOLD5000_SOURCES:
        raise ValueError(f"source must be one of {BOLD5000_SOURCES}, got {source!r}")
    generated = False
    if source == "files":
        if bold5000_dir is None:
            raise ValueError("source='files' needs bold5000_dir, the folder of RDM .h5 files")
        folder = Path(bold5000_dir).expanduser().resolve()
        if not folder.is_dir():
            raise InputDataError(folder, "BOLD5000 folder does not exist")
    else:
        from emolib.paths import get_data_dir
        from emolib.synthetic.bold5000 import TRUTH_FILE, generate_bold5000

        folder = get_data_dir(data_dir) / "synthetic" / profile / "bold5000"
        wanted = {"n_images": int(n_images), "seed": int(seed), "null": bool(null),
                  "noise": float(noise), "layout": layout, "subjects": list(subjects)}
        truth_path = folder / TRUTH_FILE
        reuse = False
        if truth_path.is_file():
            old = json.loads(truth_path.read_text())
            reuse = all(old.get(k) == v for k, v in wanted.items()) and all(
                (folder / name).is_file() for name in old.get("files", {}).values()
            )
        if not reuse:
            if folder.is_dir():  # our own generated folder: clear what an older run left
                for p in [*folder.glob("*.h5"), truth_path]:
                    p.unlink(missing_ok=True)
            generate_bold5000(
                folder, n_images=n_images, seed=seed, null=null, noise=noise, layout=layout,
                subjects=tuple(subjects), overwrite=True, pattern_key=pattern_key,
            )
            generated = True
    data = load_bold5000(folder, pattern_key=pattern_key)
    missing = [s for s in subjects if s not in data.rois]
    if missing:
        raise InputDataError(
            folder, f"no ROI file of subject(s) {missing} (found {data.subjects})"
        )
    files = {"layers": data.files["layers"], **{s: data.files[s] for s in subjects}}
    data = Bold5000RDMs(data.layers, {s: data.rois[s] for s in subjects}, files)
    truth_path = folder / "truth.json"
    truth = json.loads(truth_path.read_text()) if truth_path.is_file() else None
    return Bold5000Source(folder, data, truth, generated)


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
