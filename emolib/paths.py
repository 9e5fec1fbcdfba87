"""Where data lives: one function resolves it (argument, then ``EMOLIB_DATA``, then a default).

Modelled on :func:`nilearn.datasets.get_data_dirs`: an explicit argument wins, then the
``EMOLIB_DATA`` environment variable, then ``data/`` at the root of the repository
(git-ignored).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "DEFAULT_DATA_DIR", "REPO_ROOT", "SHARED_ANNOTATIONS_DIR", "atomic_output_dir",
    "display_command", "display_path", "display_roots", "display_value", "get_data_dir",
    "get_derived_dir",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = REPO_ROOT / "data"
#: The real Labs et al. (2015) annotation files, when the shared data folder sits beside the repo.
SHARED_ANNOTATIONS_DIR = (
    REPO_ROOT.parent / "shared" / "data" / "studyforrest" / "gump_emotions" / "raw"
)


def get_data_dir(data_dir: str | os.PathLike | None = None, *, create: bool = True) -> Path:
    """Return the folder that holds all data of the project.

    Parameters
    ----------
    data_dir : str or path-like, optional
        Explicit folder. When ``None``, ``$EMOLIB_DATA`` is used, else ``<repo>/data``.
    create : bool, default=True
        Create the folder if it does not exist.

    Returns
    -------
    pathlib.Path
        Absolute path of the data folder.
    """
    if data_dir is None:
        data_dir = os.environ.get("EMOLIB_DATA") or DEFAULT_DATA_DIR
    path = Path(data_dir).expanduser().resolve()
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def display_roots(data_dir: str | os.PathLike | None = None) -> list[tuple[Path, str]]:
    """The folders the book names by a short prefix, most specific first: the data folder
    (``<data>``), the repository (``.``) and its parent (``..``; left out where it is the
    file system's root, which would take in everything)."""
    roots = [(get_data_dir(data_dir, create=False), "<data>"), (REPO_ROOT, "."),
             (REPO_ROOT.parent, "..")]
    return [(root, prefix) for root, prefix in roots if root != Path(root.anchor)]


def display_path(path: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> str:
    """A path as the book shows it: never the absolute path of the machine that built it.

    Inside the data folder (:func:`get_data_dir` of ``data_dir``) it reads ``<data>/...``;
    inside the repository, relative to it; beside the repository (``../shared``), as
    ``../...``; anywhere else, its last two parts after ``.../`` (e.g. a real ds000113 at
    ``/mnt/openneuro/ds000113`` is ``.../openneuro/ds000113``).
    """
    p = Path(path).expanduser().resolve()
    for root, prefix in display_roots(data_dir):
        if p == root or root in p.parents:
            rel = p.relative_to(root).as_posix()
            return prefix if rel == "." else f"{prefix}/{rel}"
    return ".../" + "/".join(p.parts[-2:])


def display_value(value, data_dir: str | os.PathLike | None = None):
    """A parameter's value as the book shows it: an absolute path as :func:`display_path`
    writes it, anything else as it is."""
    if isinstance(value, str) and value and Path(value).is_absolute():
        return display_path(value, data_dir)
    return value


def display_command(args, data_dir: str | os.PathLike | None = None) -> str:
    """Command-line arguments joined for the book, absolute paths as :func:`display_path`
    writes them."""
    return " ".join(str(display_value(str(a), data_dir)) for a in args)


def get_derived_dir(
    stage: str, profile: str, data_dir: str | os.PathLike | None = None, *, create: bool = True
) -> Path:
    """Return the folder where a pipeline stage writes its outputs for one run profile.

    Parameters
    ----------
    stage : str
        Stage name, e.g. ``"01_dataprep"``.
    profile : str
        Run profile (``"smoke"``, ``"demo"``, ``"paper"``, ...).
    data_dir : str or path-like, optional
        See :func:`get_data_dir`.
    create : bool, default=True
        Create the folder if it does not exist.
    """
    path = get_data_dir(data_dir, create=create) / "derived" / profile / stage
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def atomic_output_dir(out_dir: str | os.PathLike, keep_partial: bool = False
                      ) -> Iterator[Path]:
    """Write a folder all at once: nothing half-written is ever left at ``out_dir``.

    Yields ``<out_dir>.partial`` to write into. When the block ends normally that folder
    replaces ``out_dir``; when it raises, ``out_dir`` is left as it was. The partial folder is
    emptied first and deleted when the block raises. With ``keep_partial`` an existing one is
    handed over as it is (for the caller to resume from what it can check), and an
    interrupted block (``KeyboardInterrupt``; a kill cannot be caught anyway) keeps it for
    the next run; an error still deletes it.

    The old ``out_dir`` is moved aside (``<out_dir>.old``) before the new one is renamed
    into place and deleted after: renames are atomic, so a kill at any moment leaves the old
    folder or the new one at ``out_dir`` (or, between the two renames, the old one beside it,
    which the next call puts back), never a half-deleted one.
    """
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".partial")
    old = out_dir.with_name(out_dir.name + ".old")
    if old.exists():  # a kill during an earlier replacement: the old folder comes back
        if out_dir.exists():
            shutil.rmtree(old)
        else:
            old.rename(out_dir)
    if tmp.exists() and not keep_partial:
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        yield tmp
    except BaseException as err:
        if not (keep_partial and isinstance(err, KeyboardInterrupt)):
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out_dir.exists():
        out_dir.rename(old)
    tmp.rename(out_dir)
    if old.exists():
        shutil.rmtree(old)
