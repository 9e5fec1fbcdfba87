"""Incremental, honest execution of the book: a chapter is run again only when something it
depends on changed, and the book says what ran, when, for how long and where.

What a chapter's executed notebook depends on (:func:`execution_inputs`): the source of its
notebook, the parameters it runs with, the code of the ``emolib`` package and of the
benchmarks, the versions of the tracked packages, the files its path parameters point at (and
the annotation, BIDS and release folders found by default when those are None; their file
names, sizes and modification times), and the manifests and parameters of the chapters
before it in the profile (what it reads; the methods chapter, which reads all, runs last).
The runner records these inputs in the executed notebook's metadata (``metadata.emolib``:
their fingerprint, and a copy with machine paths shown as the book shows them), with what the
chapter itself wrote (its stage folder's manifests), the wall time, the device and the time
it ran. :func:`cache_status` compares them with today's:
``make book`` after a change reruns that chapter and the ones after it; with nothing changed it
runs nothing (``--force`` reruns everything).

:func:`write_execution_report` turns these records and the last run's statuses
(``book/.execution.json``) into the book's page ``execution.md``.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from pathlib import Path

import nbformat

from emolib.manifest import (
    describe_changes,
    fingerprint,
    jsonable,
    package_versions,
    sha256_file,
    write_json,
)
from emolib.paths import REPO_ROOT, display_value, get_derived_dir

__all__ = [
    "METADATA_KEY", "REPORT_PAGE", "RUN_FILE", "cache_status", "device_name",
    "execution_inputs", "files_digest", "package_digest", "read_record", "record_execution",
    "stage_manifests", "write_execution_report", "write_run_statuses",
]

#: Key of the execution record in an executed notebook's metadata.
METADATA_KEY = "emolib"
#: The book page the report is written to (generated: not in git).
REPORT_PAGE = "execution.md"
#: Statuses of the last runner invocation, in the book folder.
RUN_FILE = ".execution.json"


#: Parameters that name files or folders a chapter reads (besides ``data_dir``).
PATH_PARAMETERS = ("annotations_dir", "bids_dir", "release_dir", "bold5000_dir", "weights",
                   "mask", "atlas")


def package_digest(roots: tuple[Path, ...] = (REPO_ROOT / "emolib", REPO_ROOT / "benchmarks")
                   ) -> str:
    """SHA-256 over the Python sources of the package and of the benchmarks (which the
    performance chapter runs): paths and contents, sorted."""
    h = hashlib.sha256()
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            h.update(f"{root.name}/{path.relative_to(root).as_posix()}".encode())
            h.update(sha256_file(path).encode())
    return h.hexdigest()


def files_digest(path: str | os.PathLike) -> str | None:
    """Fingerprint of the files at ``path`` (a file, or a folder's files: relative names,
    sizes and modification times, no contents read); None where nothing is."""
    p = Path(path).expanduser()
    if p.is_file():
        st = p.stat()
        return fingerprint([p.name, st.st_size, st.st_mtime_ns])
    if p.is_dir():
        stats = ((f, f.stat()) for f in p.rglob("*") if f.is_file())
        return fingerprint(sorted([f.relative_to(p).as_posix(), st.st_size, st.st_mtime_ns]
                                  for f, st in stats))
    return None


def _read_folders(parameters: dict) -> dict[str, str | None]:
    """The files and folders a chapter reads, by parameter: those given, and where None the
    ones the datasets layer falls back to (shared or fetched annotations, fetched data)."""
    from emolib.datasets import fetched_dir, resolve_annotations_dir

    data_dir = parameters.get("data_dir")
    out = {}
    for name in PATH_PARAMETERS:
        if name not in parameters:
            continue
        value = parameters[name]
        if value is None and name == "annotations_dir":
            value = resolve_annotations_dir(None, data_dir)
        elif value is None and (name, parameters.get("source")) in (
                ("bids_dir", "bids"), ("release_dir", "release")):
            value = fetched_dir("ds000113" if name == "bids_dir" else "bold5000", data_dir)
        if isinstance(value, (str, Path)):
            out[name] = files_digest(value)
    return out


def stage_manifests(stage: str, profile: str, data_dir=None) -> dict[str, str]:
    """``{path: sha256}`` of every ``manifest.json`` and ``parameters.json`` in a stage's
    derived folder (paths relative to the data folder; empty when the stage wrote none)."""
    folder = get_derived_dir(stage, profile, data_dir, create=False)
    if not folder.is_dir():
        return {}
    root = folder.parents[2]
    files = [*folder.rglob("manifest.json"), *folder.rglob("parameters.json")]
    return {p.relative_to(root).as_posix(): sha256_file(p) for p in sorted(files)}


def _own_outputs(path: Path, parameters: dict) -> dict[str, str]:
    return stage_manifests(path.stem, str(parameters.get("profile", "")),
                           parameters.get("data_dir"))


def execution_inputs(name: str, parameters: dict, upstream: list[str],
                     notebooks_dir: Path, package: str | None = None) -> dict:
    """Everything the executed notebook of chapter ``name`` depends on (see the module);
    ``package``: :func:`package_digest`, when the caller computed it once for many."""
    profile = str(parameters.get("profile", ""))
    data_dir = parameters.get("data_dir")
    return {
        "source": sha256_file(notebooks_dir / f"{name}.py"),
        "parameters": jsonable(parameters),
        "package": package or package_digest(),
        "versions": package_versions(),
        "files": _read_folders(parameters),
        "upstream": {stage: stage_manifests(stage, profile, data_dir) for stage in upstream},
    }


def _shown_inputs(inputs: dict) -> dict:
    """The inputs as the published notebook keeps them: machine paths as the book shows
    them (:func:`emolib.paths.display_value`)."""
    data_dir = inputs["parameters"].get("data_dir")
    return {**inputs, "parameters": {k: display_value(v, data_dir)
                                     for k, v in inputs["parameters"].items()}}


def read_record(path: Path) -> dict | None:
    """The execution record of an executed notebook (None if it has none or is unreadable)."""
    try:
        nb = nbformat.read(path, as_version=4)
    except (OSError, ValueError):
        return None
    return nb.metadata.get(METADATA_KEY)


def cache_status(path: Path, inputs: dict) -> tuple[bool, str]:
    """Whether the executed notebook at ``path`` can stand for a run with ``inputs``:
    ``(True, "unchanged")``, or ``(False, why not)``: no notebook, no record, changed inputs
    (named), or outputs of the chapter that changed or disappeared since it ran."""
    if not path.is_file():
        return False, "never run"
    record = read_record(path)
    if not record or "key" not in record:
        return False, "run before execution records were kept"
    if record["key"] != fingerprint(inputs):
        changes = describe_changes(record.get("inputs", {}), jsonable(_shown_inputs(inputs)))
        return False, ("; ".join(changes[:4]) + (" ..." if len(changes) > 4 else "")
                       or "inputs changed")
    if _own_outputs(path, inputs["parameters"]) != record.get("outputs", {}):
        return False, "its outputs changed or are gone"
    return True, "unchanged"


def device_name() -> str:
    """The accelerator the chapters could use, or the CPU."""
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except Exception:  # noqa: BLE001 - a report never fails for want of a device name
        pass
    return f"CPU ({os.cpu_count()} cores)"


def record_execution(path: Path, inputs: dict, wall_s: float,
                     device: str | None = None) -> dict:
    """Write the execution record into the executed notebook at ``path``; returns it.
    ``device``: what the chapter ran on, when not this process's machine (a Dask worker's:
    :func:`emolib.book.cluster.run_chapter` reports it)."""
    parameters = inputs["parameters"]
    record = {
        "key": fingerprint(inputs),
        "inputs": jsonable(_shown_inputs(inputs)),
        "outputs": _own_outputs(path, parameters),
        "wall_s": round(float(wall_s), 1),
        "device": device or device_name(),
        "profile": parameters.get("profile"),
        "executed": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    nb = nbformat.read(path, as_version=4)
    nb.metadata[METADATA_KEY] = record
    tmp = path.with_name(f".{path.name}.tmp")
    nbformat.write(nb, tmp)
    os.replace(tmp, path)
    return record


def write_run_statuses(book_dir: Path, statuses: dict[str, dict]) -> Path:
    """Record what the last runner invocation did with each chapter it ran (``run``,
    ``cached``, ``failed`` with the reason), for the report; the other chapters keep the
    status of the invocation that last ran them (``--only``)."""
    path = Path(book_dir) / RUN_FILE
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        old = {}
    return write_json(path, {**old, **statuses}, indent=1)


def write_execution_report(book_dir: Path, chapters: list[str]) -> Path:
    """Write the book's execution page from the notebooks' records and the last statuses."""
    book_dir = Path(book_dir)
    try:
        statuses = json.loads((book_dir / RUN_FILE).read_text())
    except (OSError, ValueError):
        statuses = {}
    rows, total = [], 0.0
    for name in chapters:
        record = read_record(book_dir / f"{name}.ipynb") or {}
        total += record.get("wall_s", 0)
        status = statuses.get(name, {})
        rows.append("| " + " | ".join([
            f"{{doc}}`{name}`" if (book_dir / f"{name}.ipynb").is_file() else name,
            status.get("status", "-"),
            record.get("executed", "-"),
            f"{record['wall_s']:.0f} s" if "wall_s" in record else "-",
            str(record.get("profile", "-")),
            str(record.get("device", "-")),
            status.get("reason", "").replace("|", "/") or "-",
        ]) + " |")
    text = "\n".join([
        "# Execution report", "",
        "How each chapter of this book was produced. *Status* is what the last build did: "
        "`run` (executed now), `cached` (its notebook, source, parameters, package code and "
        "the chapters before it were unchanged, so the page is that of its last run) or "
        "`failed`. *Executed* is when the page's notebook ran (UTC), *wall time* how long it "
        "took there.", "",
        "| chapter | status | executed | wall time | profile | device | why |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        *rows, "",
        f"Sum of the chapters' wall times: {total / 60:.1f} min.", "",
    ])
    path = book_dir / REPORT_PAGE
    if not path.is_file() or path.read_text() != text:  # unchanged: Sphinx need not redo it
        path.write_text(text)
    return path
