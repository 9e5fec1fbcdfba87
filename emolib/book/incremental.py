"""Incremental, honest execution of the book: a chapter is run again only when something it
depends on changed, and the book says what ran, when, for how long and where.

What a chapter's executed notebook depends on (:func:`execution_inputs`): the source of its
notebook, the parameters it runs with, the code of the ``emolib`` package, the versions of the
tracked packages, and the manifests of the chapters before it in the profile (what it reads).
The runner records these inputs, hashed, in the executed notebook's metadata
(``metadata.emolib``), with what the chapter itself wrote (its stage folder's manifests), the
wall time, the device and the time it ran. :func:`cache_status` compares them with today's:
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

from emolib.manifest import describe_changes, fingerprint, jsonable, package_versions, write_json
from emolib.paths import REPO_ROOT, get_derived_dir

__all__ = [
    "METADATA_KEY", "REPORT_PAGE", "RUN_FILE", "cache_status", "device_name",
    "execution_inputs", "package_digest", "read_record", "record_execution", "stage_manifests",
    "write_execution_report", "write_run_statuses",
]

#: Key of the execution record in an executed notebook's metadata.
METADATA_KEY = "emolib"
#: The book page the report is written to (generated: not in git).
REPORT_PAGE = "execution.md"
#: Statuses of the last runner invocation, in the book folder.
RUN_FILE = ".execution.json"


def package_digest(root: Path = REPO_ROOT / "emolib") -> str:
    """SHA-256 over the ``emolib`` package's Python sources (paths and bytes, sorted)."""
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def stage_manifests(stage: str, profile: str, data_dir=None) -> dict[str, str]:
    """``{path: sha256}`` of every ``manifest.json`` in a stage's derived folder (relative to
    the data folder; empty when the stage wrote none)."""
    folder = get_derived_dir(stage, profile, data_dir, create=False)
    if not folder.is_dir():
        return {}
    root = folder.parents[2]
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("manifest.json"))}


def execution_inputs(name: str, parameters: dict, upstream: list[str],
                     notebooks_dir: Path) -> dict:
    """Everything the executed notebook of chapter ``name`` depends on (see the module)."""
    profile = str(parameters.get("profile", ""))
    data_dir = parameters.get("data_dir")
    source = notebooks_dir / f"{name}.py"
    return {
        "source": hashlib.sha256(source.read_bytes()).hexdigest(),
        "parameters": jsonable(parameters),
        "package": package_digest(),
        "versions": package_versions(),
        "upstream": {stage: stage_manifests(stage, profile, data_dir) for stage in upstream},
    }


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
    if not record or "inputs" not in record:
        return False, "run before execution records were kept"
    if fingerprint(record["inputs"]) != fingerprint(inputs):
        changes = describe_changes(record["inputs"], jsonable(inputs))
        return False, "; ".join(changes[:4]) + (" ..." if len(changes) > 4 else "")
    parameters = inputs["parameters"]
    now = stage_manifests(path.stem, str(parameters.get("profile", "")),
                          parameters.get("data_dir"))
    if now != record.get("outputs", {}):
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


def record_execution(path: Path, inputs: dict, wall_s: float) -> dict:
    """Write the execution record into the executed notebook at ``path``; returns it."""
    parameters = inputs["parameters"]
    record = {
        "inputs": jsonable(inputs),
        "outputs": stage_manifests(path.stem, str(parameters.get("profile", "")),
                                   parameters.get("data_dir")),
        "wall_s": round(float(wall_s), 1),
        "device": device_name(),
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
    """Record what the last runner invocation did with each chapter (``run``, ``cached``,
    ``failed`` with the reason), for the report."""
    return write_json(Path(book_dir) / RUN_FILE, statuses, indent=1)


def write_execution_report(book_dir: Path, chapters: list[str]) -> Path:
    """Write the book's execution page from the notebooks' records and the last statuses."""
    book_dir = Path(book_dir)
    try:
        statuses = json.loads((book_dir / RUN_FILE).read_text())
    except (OSError, ValueError):
        statuses = {}
    rows = []
    for name in chapters:
        record = read_record(book_dir / f"{name}.ipynb") or {}
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
    total = sum((read_record(book_dir / f"{n}.ipynb") or {}).get("wall_s", 0) for n in chapters)
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
