"""Where a run's input data come from: a real BIDS tree, or a dataset generated on demand.

The notebooks take the same parameters whatever the source, so the book runs on generated
data by default and on the real ds000113 by pointing ``bids_dir`` at it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from emolib.datasets.fetch import fetched_dir
from emolib.errors import InputDataError
from emolib.forrest.timing import STUDYFORREST, RunTiming
from emolib.manifest import describe_changes
from emolib.paths import SHARED_ANNOTATIONS_DIR, get_data_dir
from emolib.synthetic.forrest import dataset_folder, generate_studyforrest

__all__ = [
    "DatasetSource", "SOURCES", "obtain_dataset", "resolve_annotations_dir",
]

SOURCES = ("synthetic", "bids")


@dataclass(frozen=True)
class DatasetSource:
    """Resolved inputs of the data-preparation stage.

    Attributes
    ----------
    bids_dir : pathlib.Path
        Root of the BIDS tree.
    annotations_dir : pathlib.Path
        Folder of the annotation CSVs.
    annotations_real : bool
        Whether the annotations are the real Labs et al. files.
    truth_dir : pathlib.Path or None
        Folder of the generated dataset (holds ``truth/``) for generated data, else ``None``.
    layout : {"bids", "aligned"}
        Layout of ``bids_dir`` (see :func:`emolib.io.bids.scan_runs`).
    reuse : tuple of (str, str) or None
        For generated data, what :func:`obtain_dataset` did: ``("reuse", ...)`` (the
        dataset on disk was generated with the same parameters and annotation contents),
        ``("new", ...)`` or ``("stale", <what changed>)`` (generated now); None for real data.
    """

    bids_dir: Path
    annotations_dir: Path
    annotations_real: bool
    truth_dir: Path | None
    layout: str = "bids"
    reuse: tuple[str, str] | None = None


def resolve_annotations_dir(annotations_dir: str | os.PathLike | None,
                            data_dir: str | os.PathLike | None = None) -> Path | None:
    """The annotation folder to use: the argument; else the real files, where present
    (``../shared`` beside the repository, or fetched by
    :func:`emolib.datasets.fetch_emotion_annotations` into the data folder); else None."""
    if annotations_dir is not None:
        path = Path(annotations_dir).expanduser()
        if not path.is_dir():
            raise InputDataError(path, "annotation folder does not exist")
        return path.resolve()
    for folder in (SHARED_ANNOTATIONS_DIR, fetched_dir("annotations", data_dir)):
        if folder.is_dir() and any(folder.glob("*.csv")):
            return folder
    return None


def obtain_dataset(
    source: str,
    profile: str,
    *,
    data_dir: str | os.PathLike | None = None,
    bids_dir: str | os.PathLike | None = None,
    annotations_dir: str | os.PathLike | None = None,
    annotation_pattern: str = "av1o*.csv",
    timing: RunTiming = STUDYFORREST,
    layout: str = "bids",
    progress: bool = True,
    **generator_options,
) -> DatasetSource:
    """Resolve (and for ``source="synthetic"`` generate, once) the stage's input data.

    Parameters
    ----------
    source : {"synthetic", "bids"}
        Generate a dataset under ``<data_dir>/synthetic/<profile>/studyforrest`` (a folder of
        its own: it is replaced as a whole, and the BOLD5000 twin lives beside it), or read
        ``bids_dir``.
    profile : str
        Run profile; names the generated dataset's folder.
    data_dir : str or path-like, optional
        See :func:`emolib.paths.get_data_dir`.
    bids_dir : str or path-like, optional
        Root of a real ds000113 tree (required for ``source="bids"``).
    annotations_dir : str or path-like, optional
        Annotation folder; default: the shared real Labs et al. files when present, else
        (synthetic only) generated files.
    annotation_pattern : str, default="av1o*.csv"
        Glob of the annotation files.
    timing : RunTiming, default=STUDYFORREST
        Run timing of the generated dataset.
    layout : {"bids", "aligned"}, default="bids"
        ``bids_dir`` is raw ds000113 (each subject in its native space) or the StudyForrest
        aligned derivative; for generated data, the layout generated.
    progress : bool, default=True
        Progress bar while generating.
    **generator_options
        Passed to :func:`emolib.synthetic.generate_studyforrest` (``n_subjects``, ``shape``,
        ``effect_size``, ``null``, ``seed``, ...).
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    ann = resolve_annotations_dir(annotations_dir, data_dir)
    if source == "bids":
        if bids_dir is None:  # where fetch_ds000113 (make data) puts it
            bids_dir = fetched_dir("ds000113", data_dir)
            if not bids_dir.is_dir():
                raise ValueError(f"source='bids' needs bids_dir, the root of ds000113; none "
                                 f"given and none fetched into {bids_dir} (make data, or "
                                 "emolib.datasets.fetch_ds000113)")
        if ann is None:
            raise ValueError("source='bids' needs annotations_dir (the Labs et al. raw/ "
                             "folder); none found (make data fetches it)")
        return DatasetSource(Path(bids_dir).expanduser().resolve(), ann, True, None, layout)
    out = get_data_dir(data_dir) / "synthetic" / profile / "studyforrest"
    record = out / "truth" / "generation.json"
    before = json.loads(record.read_text())["parameters"] if record.is_file() else None
    # the pipeline owns this folder: regenerate it when the parameters changed
    generate_studyforrest(out, timing=timing, annotations_dir=ann,
                          annotation_pattern=annotation_pattern, progress=progress,
                          overwrite="changed", layout=layout, **generator_options)
    after = json.loads(record.read_text())["parameters"]
    if before is None:
        reuse = ("new", "nothing there")
    elif before == after:
        reuse = ("reuse", "same parameters")
    else:
        reuse = ("stale", "; ".join(describe_changes(before, after)))
    if progress:
        print(f"generated dataset {out.name}: " + {
            "reuse": "reused (same parameters)", "new": "generated",
            "stale": f"generated again ({reuse[1]})"}[reuse[0]], flush=True)
    data = out / dataset_folder(layout)
    if ann is None:
        return DatasetSource(data, out / "annotations", False, out, layout, reuse)
    return DatasetSource(data, ann, True, out, layout, reuse)
