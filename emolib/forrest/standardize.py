"""Standardisation of BOLD volumes before decoding: per volume (the original project's) or
per voxel within its run (detrended, optionally high-passed, as :func:`nilearn.signal.clean`).

Used by :func:`emolib.forrest.prepare_dataset` on every run it caches.
"""

from __future__ import annotations

import numpy as np

__all__ = ["zscore_volumes", "zscore_voxels"]


def zscore_volumes(chunk: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Z-score volumes ``(x, y, z, t)`` each by its own mean and std; returns ``(t, x, y, z)``.

    With a mask the statistics are computed inside it and voxels outside are set to 0.
    A constant volume (std 0) becomes all zeros. The population std (ddof=0) is used,
    as ``numpy.std`` and the original project did.
    """
    data = np.ascontiguousarray(np.moveaxis(chunk, -1, 0), dtype=np.float32)  # (t, x, y, z)
    flat = data.reshape(len(data), -1)
    if mask is None:
        mean = flat.mean(axis=1, dtype=np.float64)
        std = flat.std(axis=1, dtype=np.float64)
        flat -= mean[:, None].astype(np.float32)
    else:
        m = mask.ravel()
        inside = flat[:, m]
        mean = inside.mean(axis=1, dtype=np.float64)
        std = inside.std(axis=1, dtype=np.float64)
        flat -= mean[:, None].astype(np.float32)
        flat[:, ~m] = 0.0
    scale = np.divide(1.0, std, out=np.zeros_like(std), where=std > 0).astype(np.float32)
    flat *= scale[:, None]
    return data


def zscore_voxels(data: np.ndarray, volumes: np.ndarray, mask: np.ndarray | None = None,
                  slab: int = 8, high_pass: float | None = None, tr: float = 2.0
                  ) -> np.ndarray:
    """Detrend and z-score every voxel's time series over one run; returns ``(t, x, y, z)``.

    The statistics of each voxel come from all ``data.shape[-1]`` volumes of the run: its
    mean, a linear trend and, with ``high_pass`` (Hz), the discrete cosine drifts below that
    frequency (:func:`nilearn.signal.create_cosine_drift`, the SPM/nilearn high-pass) are
    projected out together, then the residual is divided by its sample standard deviation
    (ddof=1): what :func:`nilearn.signal.clean` does with ``detrend=True,
    standardize="zscore_sample"`` (and ``high_pass``, ``t_r=tr``, ``filter="cosine"``) on one
    run. Only the volumes at indices ``volumes`` are returned. A constant voxel becomes 0
    (nilearn leaves it at 0 too), as do voxels outside ``mask`` and every voxel of a run too
    short for its drift terms. The statistics are computed in float64, ``slab`` x-planes at
    a time, so that a full-size run (80 x 80 x 35 x 542) needs tens of megabytes beyond its
    own data.
    """
    n_t = data.shape[-1]
    vols = np.asarray(volumes, dtype=np.intp)
    basis = [np.ones(n_t), np.arange(n_t, dtype=np.float64)]
    if high_pass:
        from nilearn.signal import create_cosine_drift

        basis += list(create_cosine_drift(high_pass, tr * np.arange(n_t))[:, :-1].T)
    q = np.linalg.qr(np.stack(basis, axis=1))[0] if n_t > len(basis) else None
    out = np.zeros((len(vols), *data.shape[:3]), dtype=np.float32)
    if q is None:
        return out
    for a in range(0, data.shape[0], slab):
        y = np.asarray(data[a:a + slab], dtype=np.float64)  # (s, y, z, t)
        scale = np.abs(y).max(axis=-1, keepdims=True)
        y -= (y @ q) @ q.T
        sd = y.std(axis=-1, ddof=1, keepdims=True)
        flat = sd <= 1e-9 * np.maximum(scale, 1.0)  # constant up to rounding
        z = y[..., vols] / np.where(flat, 1.0, sd)
        z[np.broadcast_to(flat, z.shape)] = 0.0
        out[:, a:a + slab] = np.moveaxis(z, -1, 0)
    if mask is not None:
        out[:, ~mask] = 0.0
    return out
