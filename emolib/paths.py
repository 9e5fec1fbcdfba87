"""Where data lives: one function resolves it (argument, then ``EMOLIB_DATA``, then a default).

Modelled on :func:`nilearn.datasets.get_data_dirs`: an explicit argument wins, then the
``EMOLIB_DATA`` environment variable, then ``data/`` at the root of the repository
(git-ignored).
"""

from __future__ import annotations

import os
from pathlib import Path

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
