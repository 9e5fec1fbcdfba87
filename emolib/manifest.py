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
    "FILES_FILE", "INPUTS_FILE", "TRACKED_PACKAGES", "describe_changes", "file_digests",
    "fingerprint", "jsonable", "package_versions", "read_manifest", "reuse_status",
    "sha256_bytes", "sha256_file", "start_stage", "write_inputs", "write_json", "write_manifest",
    "write_text",
]

#: File beside a reusable output that records what it was made from (see reuse_status).
INPUTS_FILE = "inputs.json"

#: File beside a reusable output that records the size, modification time and SHA-256 of
#: each input file it was made from (see file_digests).
FILES_FILE = "input_files.json"

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


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` at ``path`` atomically: into a hidden file beside it, flushed to disk,
    then renamed into place, so that a reader (or a run after a kill) finds the old file or
    the new one, never half of one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def write_json(path: str | os.PathLike, obj, **dumps) -> Path:
    """Write ``obj`` as JSON at ``path`` atomically (:func:`write_text`); ``dumps`` go to
    :func:`json.dumps`."""
    return write_text(path, json.dumps(obj, **dumps))


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
    return write_json(Path(folder) / "manifest.json", manifest, indent=2)


def start_stage(folder: str | os.PathLike) -> Path:
    """Mark a stage's output folder unfinished before the stage writes into it.

    The folder is created and its ``manifest.json`` removed: the manifest is the mark of a
    finished stage (:func:`write_manifest`, called last, writes it), so until this run
    finishes nothing that reads manifests (:func:`read_manifest`, the methods chapter, a
    later stage) takes the folder for a finished one, whatever a kill leaves in it.
    Returns the folder.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.json").unlink(missing_ok=True)
    return folder


def read_manifest(folder: str | os.PathLike) -> dict:
    """Read the ``manifest.json`` of a stage's output folder."""
    path = Path(folder) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run the stage that writes it first")
    return json.loads(path.read_text())


def fingerprint(obj) -> str:
    """SHA-256 of the canonical JSON of ``obj`` (sorted keys; paths, arrays as in
    :func:`jsonable`): equal for equal contents, whatever the order of dict entries."""
    text = json.dumps(jsonable(obj), sort_keys=True, separators=(",", ":"), default=str)
    return sha256_bytes(text.encode())


def describe_changes(old, new, prefix: str = "") -> list[str]:
    """What differs between two JSON-like records, as ``"key: old -> new"`` lines (nested
    keys joined by dots; long values abbreviated)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            name = f"{prefix}.{key}" if prefix else str(key)
            if key not in old:
                out.append(f"{name}: new")
            elif key not in new:
                out.append(f"{name}: gone")
            else:
                out += describe_changes(old[key], new[key], name)
        return out
    if jsonable(old) == jsonable(new):
        return []

    def short(v) -> str:
        text = json.dumps(jsonable(v), default=str)
        return text if len(text) <= 40 else text[:37] + "..."

    return [f"{prefix or 'value'}: {short(old)} -> {short(new)}"]


def reuse_status(folder: str | os.PathLike, inputs: dict, done: str | None = None
                 ) -> tuple[str, str]:
    """Whether the outputs in ``folder`` were made from ``inputs``: ``(status, reason)``.

    ``inputs`` is everything the outputs depend on (parameters, fingerprints of input data),
    as :func:`write_inputs` recorded it when they were made. ``status`` is

    - ``"reuse"``: the same inputs, and (with ``done``) the file a finished stage writes last;
    - ``"resume"``: the same inputs, ``done`` missing (an interrupted stage, to continue);
    - ``"new"``: nothing there;
    - ``"stale"``: made from other inputs, or before inputs were recorded, or unreadable:
      to delete and recompute. ``reason`` then names the changes (:func:`describe_changes`).
    """
    folder = Path(folder)
    path = folder / INPUTS_FILE
    if not path.is_file():
        if folder.is_dir() and any(folder.iterdir()):
            return "stale", "made before its inputs were recorded"
        return "new", "nothing there"
    try:
        old = json.loads(path.read_text())
    except ValueError:
        return "stale", f"unreadable {INPUTS_FILE}"
    new = json.loads(json.dumps(jsonable(inputs), default=str))
    if old != new:
        return "stale", "; ".join(describe_changes(old, new)) or "inputs changed"
    if done is not None and not (folder / done).is_file():
        return "resume", "same inputs, unfinished"
    return "reuse", "same inputs"


def write_inputs(folder: str | os.PathLike, inputs: dict) -> Path:
    """Record what the outputs in ``folder`` are made from (read by :func:`reuse_status`)."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    return write_json(Path(folder) / INPUTS_FILE, jsonable(inputs), indent=1, sort_keys=True,
                      default=str)


def file_digests(paths, known: dict | None = None) -> dict[str, dict]:
    """SHA-256 of each file, with the size and modification time it had when read.

    A file whose size and ``mtime_ns`` equal its entry in ``known`` (an earlier result of
    this function, e.g. read from :data:`FILES_FILE`) keeps that entry's digest without being
    read, as git's index does; any other file is read and hashed. So checking whether
    gigabytes of inputs changed costs a ``stat`` per file while they have not, and a read
    of those that were touched, whose content may still be the same.

    Returns
    -------
    dict of str to dict
        ``{path: {"sha256": ..., "size": ..., "mtime_ns": ...}}`` in the order of ``paths``.
    """
    known = known or {}
    out = {}
    for path in map(str, paths):
        st = os.stat(path)
        old = known.get(path) or {}
        if old.get("size") == st.st_size and old.get("mtime_ns") == st.st_mtime_ns:
            out[path] = dict(old)
        else:
            out[path] = {"sha256": sha256_file(path), "size": st.st_size,
                         "mtime_ns": st.st_mtime_ns}
    return out
