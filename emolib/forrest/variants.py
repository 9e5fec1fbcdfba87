"""A prepared dataset again, with some parameters changed: a later chapter that needs what the
data-preparation chapter made plus something more (the neighbours of every selected volume for
windows of volumes) prepares a variant from the same inputs and parameters, never from a copy
of them it could get wrong. The same parameters select the same volumes (the selection is
seeded), so the variant's selected samples are the original's (a test checks)."""

from __future__ import annotations

import os
from pathlib import Path

from emolib.forrest.dataprep import PreparedData, prepare_dataset
from emolib.forrest.timing import RunTiming

__all__ = ["prepare_variant"]


def prepare_variant(prepared: PreparedData, out_dir: str | os.PathLike, *,
                    progress: bool = True, **changes) -> PreparedData:
    """Prepare the inputs of ``prepared`` again with ``changes`` to its parameters.

    Parameters
    ----------
    prepared : PreparedData
        A prepared dataset (:func:`emolib.forrest.load_prepared`); its manifest's parameters
        are reused, inputs included (the BIDS folder and the annotations must still be there).
    out_dir : str or path-like
        Folder of the variant (reused when it was made from the same parameters and input
        contents, as :func:`emolib.forrest.prepare_dataset` does).
    progress : bool, default=True
        Progress bars.
    **changes
        Parameters of :func:`emolib.forrest.prepare_dataset` to change, e.g. ``window=(-1, 0,
        1, 2)`` or ``keep="all"``.

    Returns
    -------
    PreparedData
    """
    params = dict(prepared.manifest.get("parameters") or {})
    if not params:
        raise ValueError(f"{prepared.folder}: the manifest records no parameters to prepare "
                         "a variant from")
    unknown = sorted(set(changes) - set(params))
    if unknown:
        raise ValueError(f"not parameters of prepare_dataset: {unknown}")
    params.update(changes)
    timing = params.pop("timing")
    if isinstance(timing, dict):
        timing = RunTiming(tuple(timing["starts"]), tuple(timing["n_volumes"]), timing["tr"])
    bids_dir, annotations_dir = Path(params.pop("bids_dir")), Path(params.pop("annotations_dir"))
    for path, what in ((bids_dir, "BIDS folder"), (annotations_dir, "annotations folder")):
        if not path.is_dir():
            raise FileNotFoundError(f"{prepared.folder} was prepared from the {what} {path}, "
                                    "which is no longer there")
    return prepare_dataset(bids_dir, annotations_dir, out_dir, timing=timing,
                           progress=progress, **params)
