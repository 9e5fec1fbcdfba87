"""Manifests of derived data: parameters, input file hashes and package versions.

Every stage writes a ``manifest.json`` beside its outputs, so that a result can be traced to
the exact inputs and code that made it, and a stage can check what an earlier stage used.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import sys
from importlib import metadata
from pathlib import Path

import numpy as np

__all__ = [
    "TRACKED_PACKAGES", "jsonable", "package_versions", "read_manifest", "sha256_bytes",
    "sha256_file", "write_manifest",
]

#: Packages whose versions go into every manifest.
TRACKED_PACKAGES = (
    "emolib", "numpy", "scipy", "pandas", "scikit-learn", "nibabel", "nilearn", "torch",
    "rsatoolbox", "umap-learn",
)


def sha256_bytes(data: bytes) -> str:
    """SHA-256 hex digest of a bytes buffer."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """SHA-256 hex digest of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def package_versions(packages: tuple[str, ...] = TRACKED_PACKAGES) -> dict[str, str | None]:
    """Installed versions of ``packages`` (``None`` where one is not installed)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj


def write_manifest(
    folder: str | os.PathLike,
    stage: str,
    parameters: dict,
    inputs: dict[str, str] | None = None,
    outputs: dict | None = None,
) -> Path:
    """Write ``manifest.json`` into ``folder``.

    Parameters
    ----------
    folder : str or path-like
        Output folder of the stage.
    stage : str
        Stage name, e.g. ``"01_dataprep"``.
    parameters : dict
        Parameters the stage ran with (JSON-serialisable after converting paths/arrays).
    inputs : dict of str to str, optional
        Input file path -> SHA-256 digest.
    outputs : dict, optional
        Anything worth recording about the outputs (counts, shapes, file names).

    Returns
    -------
    pathlib.Path
        Path of the manifest.
    """
    manifest = {
        "stage": stage,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "parameters": jsonable(parameters),
        "inputs": jsonable(inputs or {}),
        "outputs": jsonable(outputs or {}),
        "versions": package_versions(),
        "platform": {"system": platform.platform(), "executable": sys.executable},
    }
    path = Path(folder) / "manifest.json"
    path.write_text(json.dumps(manifest, indent=2))
    return path


def read_manifest(folder: str | os.PathLike) -> dict:
    """Read the ``manifest.json`` of a stage's output folder."""
    path = Path(folder) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run the stage that writes it first")
    return json.loads(path.read_text())
