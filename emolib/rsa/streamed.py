"""Exact layer RDMs of many stimuli with bounded memory: activations streamed to disk.

:func:`calc_rdms_streamed` runs a torch model once over the stimuli and writes every image's
flattened activation of every layer as one row of a disk-backed ``.npy`` file
(n_images, n_units); the n x n Gram matrix is then accumulated in float64 over column chunks
sized from a memory limit. Memory is bounded by the limit (plus one forward batch), whatever
the number of units: ResNet-50's ``conv1``..``layer4`` at BOLD5000's 4916 images hold 45 GB of
float32 activations, which :func:`emolib.rsa.calc_rdms_from_model` keeps in memory.

The store is resumable and never stale: ``progress.json`` records a hash of everything that
defines the result and how many images are complete; it is replaced atomically, and only after
the rows it declares complete have been flushed.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import DTypeLike
from rsatoolbox.rdm import RDMs
from tqdm.auto import tqdm

from emolib.manifest import write_json
from emolib.rsa.align import PATTERN_KEY, check_unique

__all__ = ["PROGRESS_FILE", "STORE_DTYPES", "STREAM_METHODS", "calc_rdms_streamed"]

#: Dissimilarities computed by :func:`calc_rdms_streamed`.
STREAM_METHODS = ("correlation", "euclidean")
#: dtypes of the stored activation rows.
STORE_DTYPES = ("float16", "float32", "float64")
#: Name of the progress record in ``store_dir``.
PROGRESS_FILE = "progress.json"
_FORMAT = 1
_GIB = 1 << 30
#: Rows read at once before conversion to float64 in the Gram phase.
_STAGE_ROWS = 256

logger = logging.getLogger(__name__)

Batches = Callable[[int], Iterable[Any]] | Iterable[Any]


def _digest(obj: Any) -> str:
    return hashlib.blake2b(json.dumps(obj, sort_keys=True).encode(), digest_size=16).hexdigest()


def _acts_path(store: Path, k: int) -> Path:
    return store / f"acts_{k:02d}.npy"


def _rdm_path(store: Path, k: int) -> Path:
    return store / f"rdm_{k:02d}.npy"


def _wipe(store: Path) -> None:
    """Remove this function's files from ``store`` (progress first, then the data)."""
    (store / PROGRESS_FILE).unlink(missing_ok=True)
    for pattern in ("acts_*.npy", "rdm_*.npy", "*.tmp", "*.tmp.npy"):
        for p in store.glob(pattern):
            p.unlink()


def _stored_shape_ok(path: Path, shape: tuple[int, int], dtype: np.dtype) -> bool:
    try:
        mm = np.load(path, mmap_mode="r")
    except (OSError, ValueError):
        return False
    ok = mm.shape == shape and mm.dtype == dtype
    del mm
    return ok


def _open_state(store: Path, parts: dict[str, Any], resume: bool, n: int,
                dtype: np.dtype) -> dict[str, Any]:
    """The progress record to continue from, or a fresh one (the store wiped, and said so)."""
    path = store / PROGRESS_FILE
    key = _digest(parts)
    fresh = {"format": _FORMAT, "key": key, "parts": parts, "n_done": 0, "units": None,
             "rdms_done": []}
    if not path.exists():
        _wipe(store)
        return fresh
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        old = {}
    if not resume:
        logger.warning("%s: resume=False, wiping the stored activations and recomputing", store)
    elif old.get("key") != key or old.get("format") != _FORMAT:
        before = old.get("parts", {})
        changed = [k for k in parts if before.get(k) != parts[k]] or ["format"]
        logger.warning("%s: stored activations were made for a different job (%s changed); "
                       "wiping them and recomputing", store, ", ".join(changed))
    else:
        units = old.get("units")
        n_layers = len(parts["layers"])
        if units is None:  # stopped before the first batch was stored
            _wipe(store)
            return fresh
        if all(
            _stored_shape_ok(_acts_path(store, k), (n, units[k]), dtype) for k in range(n_layers)
        ) and all(_rdm_path(store, k).exists() for k in old.get("rdms_done", [])):
            if old["n_done"]:
                logger.info("%s: resuming, %d of %d images already stored", store,
                            old["n_done"], n)
            return old
        logger.warning("%s: stored files are missing or damaged; wiping and recomputing", store)
    _wipe(store)
    return fresh


def _iter_from(batches: Batches, start: int) -> Iterator[tuple[int, Any]]:
    """``(first_image_index, batch)`` from image ``start`` on, of a callable or an iterable."""
    import torch

    def as_tensor(batch: Any) -> Any:
        if isinstance(batch, (tuple, list)):
            batch = batch[0]
        return torch.from_numpy(batch) if isinstance(batch, np.ndarray) else batch

    if isinstance(batches, (np.ndarray, torch.Tensor)):
        raise TypeError("batches must be an iterable of batches or a callable start -> "
                        "iterable of batches, not one array (use e.g. torch.split(x, 32))")
    if callable(batches):
        pos = start
        for batch in batches(start):
            batch = as_tensor(batch)
            yield pos, batch
            pos += batch.shape[0]
        return
    pos = 0
    for batch in batches:
        batch = as_tensor(batch)
        b = batch.shape[0]
        if pos + b > start:
            yield max(pos, start), batch[max(0, start - pos):]
        pos += b


def _make_extractor(model: Any, layers: list[str], backend: str) -> tuple[Callable, Callable]:
    """``(run, close)``: run(batch) -> {layer: activation}; close() removes hooks."""
    if backend == "fx":
        from torchvision.models.feature_extraction import create_feature_extractor

        extractor = create_feature_extractor(model, return_nodes={n: n for n in layers})
        extractor.eval()
        return extractor, lambda: None
    if backend != "hooks":
        raise ValueError(f"backend must be 'hooks' or 'fx', not {backend!r}")
    modules = dict(model.named_modules())
    missing = [name for name in layers if name not in modules]
    if missing:
        raise ValueError(f"model has no modules {missing}; it has e.g. {list(modules)[:12]}")
    outs: dict[str, Any] = {}
    handles = [modules[name].register_forward_hook(
        lambda _m, _i, out, name=name: outs.__setitem__(name, out)) for name in layers]

    def run(x: Any) -> dict[str, Any]:
        outs.clear()
        model(x)
        return dict(outs)

    def close() -> None:
        for h in handles:
            h.remove()

    return run, close


def _prepare_rows(t: Any, method: str, store_dtype: np.dtype, ids: np.ndarray,
                  layer: str) -> np.ndarray:
    """Flatten a batch of activations to rows; centre and scale them for "correlation"."""
    import torch

    x = t.detach().reshape(t.shape[0], -1).to(torch.float64)
    if method == "correlation":
        x = x - x.mean(dim=1, keepdim=True)
        norms = torch.linalg.vector_norm(x, dim=1)
        if bool((norms == 0).any()):
            bad = torch.nonzero(norms == 0).flatten().cpu().numpy()
            raise ValueError(f"{layer}: patterns with zero variance have no correlation "
                             f"distance: {list(ids[bad[:5]])}")
        # unit RMS (norm sqrt(n_units)): the Gram matrix / n_units is the correlation matrix,
        # and entries stay O(1), inside float16's normal range
        x = x * (math.sqrt(x.shape[1]) / norms)[:, None]
    rows = x.to(getattr(torch, store_dtype.name)).cpu().numpy()
    if not np.isfinite(rows).all():
        raise ValueError(f"{layer}: activations overflow {store_dtype.name} (max |x| "
                         f"{float(t.abs().max()):.3g}); use store_dtype='float32'")
    return rows


def _check_disk(store: Path, units: list[int], n: int, itemsize: int, layers: list[str]
                ) -> None:
    need = sum(n * u * itemsize for u in units) + len(units) * n * (n - 1) // 2 * 8
    free = shutil.disk_usage(store).free
    if need > free:
        parts = ", ".join(f"{name} {n * u * itemsize / _GIB:.2f}" for name, u in
                          zip(layers, units, strict=True))
        raise OSError(errno.ENOSPC, (
            f"{store} has {free / _GIB:.2f} GiB free, the stored activations need "
            f"{need / _GIB:.2f} GiB (n_images x n_units x itemsize, GiB: {parts}; plus the "
            "RDM vectors): free space, choose another store_dir or store_dtype='float16'"))


def _forward(model: Any, batches: Batches, ids: np.ndarray, layers: list[str], store: Path,
             state: dict[str, Any], method: str, store_dtype: np.dtype, backend: str,
             device: Any, progress: bool) -> None:
    """Run the model over the images not yet stored; write their rows, then the progress."""
    import torch

    n = len(ids)
    pos = state["n_done"]
    run, close = _make_extractor(model, layers, backend)
    bar = tqdm(total=n, initial=pos, desc="activations to disk", unit="img",
               disable=not progress)
    try:
        with torch.inference_mode():
            for start, x in _iter_from(batches, pos):
                b = x.shape[0]
                if start != pos:
                    raise ValueError(f"batches resumed at image {start}, expected {pos}")
                if pos + b > n:
                    raise ValueError(f"batches yield more than the {n} images of ids")
                outs = run(x.to(device))
                rows = {name: _prepare_rows(outs[name], method, store_dtype,
                                            ids[pos:pos + b], name) for name in layers}
                units = [rows[name].shape[1] for name in layers]
                if state["units"] is None:
                    _check_disk(store, units, n, store_dtype.itemsize, layers)
                    for k, u in enumerate(units):
                        mm = np.lib.format.open_memmap(_acts_path(store, k), mode="w+",
                                                       dtype=store_dtype, shape=(n, u))
                        del mm
                    state["units"] = units
                    write_json(store / PROGRESS_FILE, state, indent=1)
                elif units != state["units"]:
                    raise ValueError(
                        f"activations of image {pos} have {units} units per layer, the stored "
                        f"ones {state['units']}: the inputs changed without input_key saying so")
                for k, name in enumerate(layers):
                    # a fresh mapping per batch: written pages leave the process's memory
                    mm = np.load(_acts_path(store, k), mmap_mode="r+")
                    mm[pos:pos + b] = rows[name]
                    mm.flush()
                    del mm
                pos += b
                state["n_done"] = pos
                # only after the rows are flushed
                write_json(store / PROGRESS_FILE, state, indent=1)
                bar.update(b)
    finally:
        bar.close()
        close()
    if pos != n:
        raise ValueError(f"batches gave {pos} images but there are {n} ids")


def _gram_rdm(path: Path, n: int, method: str, cols: int, device: Any, bar: tqdm
              ) -> np.ndarray:
    """Condensed RDM (float64) of one stored layer, its Gram matrix built chunk by chunk."""
    import torch
    from scipy.linalg.blas import dsyrk

    mm = np.load(path, mmap_mode="r")
    p, sdtype, offset = mm.shape[1], mm.dtype, mm.offset
    del mm
    on_gpu = torch.device(device).type != "cpu"
    if on_gpu:
        g_t = torch.zeros((n, n), dtype=torch.float64, device=device)
    else:
        gram = np.zeros((n, n), order="F")  # dsyrk fills its lower triangle in place
    fd = os.open(path, os.O_RDONLY)
    try:
        for c0 in range(0, p, cols):
            w = min(cols, p - c0)
            if on_gpu:
                c = _read_columns(fd, offset, n, p, sdtype, c0, w, sdtype)
                c = torch.from_numpy(c).to(device, torch.float64)
                g_t.addmm_(c, c.T)
            else:
                c = _read_columns(fd, offset, n, p, sdtype, c0, w, np.float64)
                # c is C order, so c.T is Fortran order: no copy
                gram = dsyrk(1.0, c.T, beta=1.0, c=gram, trans=1, lower=1, overwrite_c=1)
            del c
            bar.update(1)
    finally:
        os.close(fd)
    if on_gpu:
        gram = g_t.cpu().numpy()  # full and symmetric, C order: read rows
        del g_t

        def below(i: int) -> np.ndarray:
            return gram[i, i + 1:]
    else:
        def below(i: int) -> np.ndarray:
            return gram[i + 1:, i]  # contiguous column of the lower triangle
    diag = np.diagonal(gram).copy()
    out = np.empty(n * (n - 1) // 2)
    pos = 0
    for i in range(n - 1):
        seg = out[pos:pos + n - 1 - i]
        if method == "correlation":
            # the stored rows are unit RMS up to rounding: normalise by the stored norms
            np.divide(below(i), np.sqrt(diag[i] * diag[i + 1:]), out=seg)
            np.subtract(1.0, seg, out=seg)
        else:
            np.subtract(diag[i] + diag[i + 1:], 2.0 * below(i), out=seg)
            seg /= p
        pos += n - 1 - i
    return out


def _read_columns(fd: int, offset: int, n: int, p: int, sdtype: np.dtype, c0: int, w: int,
                  out_dtype: DTypeLike) -> np.ndarray:
    """Columns ``c0:c0+w`` of a stored (n, p) C-order array as ``out_dtype``, read row by row
    with ``pread`` (nothing is mapped into the process, so its resident memory stays bounded)."""
    out = np.empty((n, w), dtype=out_dtype)
    direct = out.dtype == sdtype
    stage = out if direct else np.empty((min(n, _STAGE_ROWS), w), dtype=sdtype)
    step = n if direct else len(stage)
    nbytes = w * sdtype.itemsize
    for r0 in range(0, n, step):
        r1 = min(n, r0 + step)
        for r in range(r0, r1):
            got = os.preadv(fd, [stage[r - r0].view(np.uint8)],
                            offset + (r * p + c0) * sdtype.itemsize)
            if got != nbytes:
                raise OSError(errno.EIO, f"short read of the stored activations (row {r})")
        if not direct:
            out[r0:r1] = stage[: r1 - r0]
    return out


def _chunk_columns(n: int, itemsize: int, memory_limit_gb: float) -> int:
    """Columns per Gram chunk: the n x n float64 Gram, the condensed vector and the chunk
    (float64, plus a staging block of rows) within ``memory_limit_gb``."""
    fixed = n * n * 8 + n * (n - 1) // 2 * 8
    budget = memory_limit_gb * _GIB - fixed
    per_col = n * 8 + _STAGE_ROWS * itemsize
    if budget < per_col:
        raise ValueError(f"memory_limit_gb={memory_limit_gb} is too small: the Gram matrix and "
                         f"RDM vector of {n} images alone need {fixed / _GIB:.3f} GiB")
    return int(budget // per_col)


def calc_rdms_streamed(
    model: Any,
    batches: Batches,
    ids: Sequence,
    layers: Sequence[str],
    *,
    store_dir: str | os.PathLike,
    method: str = "correlation",
    store_dtype: DTypeLike = "float32",
    memory_limit_gb: float = 2.0,
    backend: str = "fx",
    device: Any = None,
    pattern_key: str = PATTERN_KEY,
    rdm_descriptors: Mapping[str, Any] | None = None,
    dtype: DTypeLike = np.float64,
    progress: bool = True,
    resume: bool = True,
    input_key: str = "",
) -> RDMs:
    """Compute exact layer RDMs of a torch model with activations streamed to disk.

    One forward pass writes each image's flattened activation of each layer (any rank) as a
    row of ``store_dir/acts_KK.npy`` (n_images, n_units). For ``"correlation"`` a row is
    centred and scaled to unit RMS at write time, so the Gram matrix divided by n_units is
    the correlation matrix; ``"euclidean"`` stores the raw rows. The float64 Gram matrix is
    then accumulated over column chunks (BLAS ``dsyrk`` on the CPU, ``addmm`` on a GPU).

    **Disk**: sum over layers of n_images x n_units x itemsize, plus one float64 RDM vector
    per layer; 45.4 GB (float32) or 22.7 GB (float16) for ResNet-50's conv1..layer4 at 4916
    images of 224 x 224. Checked against ``shutil.disk_usage`` before anything is written.
    **Memory**: ``memory_limit_gb`` bounds the Gram phase (n x n float64 Gram, the condensed
    vector and one column chunk); the forward phase holds one batch and its activations.
    The stored rows are kept in ``store_dir`` (delete it when done). Each phase's wall time
    is logged (logger ``emolib.rsa.streamed``, INFO; record attributes ``phase`` in
    {"forward", "gram"} and ``seconds``).

    Parameters
    ----------
    model : torch.nn.Module
        Run in eval mode under ``torch.inference_mode``; its training flag is restored.
    batches : callable or iterable
        A callable ``start -> iterable of batches from image start on`` (what a resumed
        run calls, with the number of images already stored, so that finished images are
        neither loaded nor run), or an iterable of batches from image 0 (on resume, the
        batches of finished images are still produced, then skipped without a forward
        pass). A batch is a tensor or array (b, ...), or a tuple whose first item is one.
    ids : sequence
        One unique id per image, in the order of the batches.
    layers : sequence of str
        Layer names: fx nodes (``backend="fx"``) or modules (``"hooks"``).
    store_dir : str or path-like
        Folder of the stored rows and ``progress.json`` (created if needed).
    method : {"correlation", "euclidean"}, default="correlation"
        ``"correlation"``: 1 - Pearson r. ``"euclidean"``: squared euclidean distance
        / n_units, as :func:`rsatoolbox.rdm.calc_rdm` defines ``"euclidean"``.
    store_dtype : {"float32", "float16", "float64"}, default="float32"
        dtype of the stored rows. float32 agrees with :func:`rsatoolbox.rdm.calc_rdm` on the
        float64 activations to ~1e-9 absolute (~2e-8 relative). float16 halves the disk;
        measured on random-init ResNet-50, conv1..layer4 (12 noise images of 64 x 64, 16
        smooth ones of 224 x 224), correlation distances then differ by at most 2.4e-5
        (relative 1.4e-4), euclidean ones by relative 2.5e-4, and each RDM vector correlates
        with the exact one at r > 1 - 1e-6.
    memory_limit_gb : float, default=2.0
        Memory of the Gram phase (GiB); sets the columns per chunk.
    backend : {"fx", "hooks"}, default="fx"
        torchvision's ``create_feature_extractor`` (fx node names) or forward hooks.
    device : str or torch.device, optional
        Where the model runs (moved there for the call and back) and the Gram matrix is
        built (``addmm`` on a GPU). Default: the model's device.
    pattern_key : str, default="id"
        Pattern descriptor for the ids.
    rdm_descriptors : mapping, optional
        Constant descriptors added to every RDM, e.g. ``{"model": "resnet50"}``.
    dtype : dtype, default=float64
        dtype of the returned dissimilarities.
    progress : bool, default=True
        tqdm bars over images and over Gram chunks.
    resume : bool, default=True
        Continue from ``progress.json`` when its key matches: the key hashes the ids, layers,
        method, store_dtype, backend, the model's class and state_dict tensors, and
        ``input_key``. A different key (or ``resume=False``) wipes the store and recomputes,
        with a logged warning. Completed RDMs are reused too.
    input_key : str, default=""
        What defines the inputs that the key cannot see (e.g. image paths with sizes and
        mtimes or hashes, and the transform's parameters). Change it when the inputs change.

    Returns
    -------
    rsatoolbox.rdm.RDMs
        One RDM per layer, ``rdm_descriptors["layer"]`` naming it, the ids in
        ``pattern_descriptors[pattern_key]``, ``dissimilarity_measure=method``: the object
        :func:`emolib.rsa.calc_rdms_from_model` returns.

    Raises
    ------
    ValueError
        Unknown method or store_dtype, duplicate ids, a zero-variance pattern, too few or
        too many images in ``batches``, a memory limit below the Gram matrix's size.
    OSError
        ``store_dir`` has not enough free space (``errno.ENOSPC``).
    """
    import torch

    from emolib.models.identity import model_digest

    if method not in STREAM_METHODS:
        raise ValueError(f"method must be one of {STREAM_METHODS}, not {method!r}")
    if np.dtype(store_dtype).name not in STORE_DTYPES:
        raise ValueError(f"store_dtype must be one of {STORE_DTYPES}, not {store_dtype!r}")
    sdtype = np.dtype(store_dtype)
    ids_arr = np.asarray(ids)
    check_unique(ids_arr)
    n = len(ids_arr)
    if n < 2:
        raise ValueError(f"an RDM needs at least 2 patterns, got {n}")
    layers = list(layers)
    if not layers or len(set(layers)) != len(layers):
        raise ValueError(f"layers must be non-empty and unique, got {layers}")
    store = Path(store_dir)
    store.mkdir(parents=True, exist_ok=True)
    parts = {"ids": _digest([str(i) for i in ids_arr.tolist()]), "n": n, "layers": layers,
             "method": method, "store_dtype": sdtype.name, "backend": backend,
             "model": model_digest(model), "input_key": str(input_key)}
    state = _open_state(store, parts, resume, n, sdtype)

    try:
        model_device = next(model.parameters()).device
    except StopIteration:
        model_device = torch.device("cpu")
    device = model_device if device is None else torch.device(device)
    was_training = model.training
    if state["n_done"] < n:
        t0, n0 = time.perf_counter(), state["n_done"]
        model.eval()
        model.to(device)
        try:
            _forward(model, batches, ids_arr, layers, store, state, method, sdtype, backend,
                     device, progress)
        finally:
            model.to(model_device)
            model.train(was_training)
        seconds = time.perf_counter() - t0
        logger.info("%s: forward pass and store of %d images in %.1f s", store, n - n0,
                    seconds, extra={"phase": "forward", "seconds": seconds})

    cols = _chunk_columns(n, sdtype.itemsize, memory_limit_gb)
    todo = [k for k in range(len(layers)) if k not in state["rdms_done"]]
    n_chunks = sum(math.ceil(state["units"][k] / cols) for k in todo)
    vectors = np.empty((len(layers), n * (n - 1) // 2), dtype=dtype)
    t0 = time.perf_counter()
    with tqdm(total=n_chunks, desc="Gram chunks", unit="chunk", disable=not progress) as bar:
        for k in range(len(layers)):
            path = _rdm_path(store, k)
            if k in state["rdms_done"]:
                vectors[k] = np.load(path)
                continue
            vec = _gram_rdm(_acts_path(store, k), n, method, cols, device, bar)
            tmp = path.with_name(path.stem + ".tmp.npy")
            with open(tmp, "wb") as f:
                np.save(f, vec)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            state["rdms_done"] = sorted([*state["rdms_done"], k])
            write_json(store / PROGRESS_FILE, state, indent=1)
            vectors[k] = vec
            del vec
    seconds = time.perf_counter() - t0
    logger.info("%s: Gram matrices of %d layers (%d chunks of %d columns) in %.1f s", store,
                len(todo), n_chunks, cols, seconds, extra={"phase": "gram", "seconds": seconds})
    rdm_desc: dict[str, list] = {"layer": layers}
    for key, value in (rdm_descriptors or {}).items():
        rdm_desc[key] = [value] * len(layers)
    return RDMs(vectors, dissimilarity_measure=method, rdm_descriptors=rdm_desc,
                pattern_descriptors={pattern_key: ids_arr.tolist()})
