"""Reading and validating the Labs et al. (2015) portrayed-emotion annotations.

Each observer's file (``av1oNN.csv`` for the audio-visual movie, ``ao1oNN.csv`` for the
audio-only version) has the header
``start,end,character,arousal,valence,direction,emotion,oncue,offcue``; times are seconds of
movie time; ``emotion`` may be empty or a space-separated list of the 22 categories; cues are
space-separated words.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pandas as pd

from emolib.errors import InputDataError

__all__ = [
    "AROUSAL", "COLUMNS", "DIRECTION", "EMOTIONS", "OFFCUES", "ONCUES", "VALENCE",
    "read_observer", "read_observers",
]

COLUMNS = (
    "start", "end", "character", "arousal", "valence", "direction", "emotion", "oncue", "offcue",
)
#: The 22 emotion categories of the annotation scheme.
EMOTIONS = (
    "ADMIRATION", "ANGERRAGE", "COMPASSION", "CONTEMPT", "DISAPPOINTMENT", "FEAR",
    "FEARSCONFIRMED", "GLOATING", "GRATIFICATION", "GRATITUDE", "HAPPINESS", "HAPPYFOR", "HATE",
    "HOPE", "LOVE", "PRIDE", "RELIEF", "REMORSE", "RESENTMENT", "SADNESS", "SATISFACTION", "SHAME",
)
AROUSAL = ("LOW", "HIGH")
VALENCE = ("POS", "NEG")
DIRECTION = ("SELF", "OTHER")
#: Words that say what revealed the emotion (NARRATOR only in audio-only files).
ONCUES = ("AUDIO", "CONTEXT", "FACE", "GESTURE", "VERBAL", "NARRATOR")
#: Words that say why the episode ended.
OFFCUES = ("SCENEEND", "EMOCHANGE", "CHARLEFT", "EMOFADED")


def _fail(path: Path, line: int, problem: str) -> InputDataError:
    return InputDataError(path, problem, line=line)


def _check_words(path: Path, line: int, column: str, value: str, allowed: tuple[str, ...],
                 required: bool) -> None:
    words = value.split()
    if required and not words:
        raise _fail(path, line, f"column {column!r} is empty")
    bad = [w for w in words if w not in allowed]
    if bad:
        raise _fail(path, line, f"column {column!r} has unknown value(s) {bad}; "
                                f"allowed: {' '.join(allowed)}")


def read_observer(path: str | os.PathLike) -> pd.DataFrame:
    """Read and validate one observer's annotation file.

    Parameters
    ----------
    path : str or path-like
        An ``av1oNN.csv`` or ``ao1oNN.csv`` file.

    Returns
    -------
    pandas.DataFrame
        The 9 original columns (``emotion`` normalised to single spaces, ``""`` when empty)
        plus ``observer`` (the file's stem, e.g. ``"av1o03"``) and ``row`` (1-based line
        number in the file, the header being line 1).

    Raises
    ------
    InputDataError
        Naming the file and line of the first bad row: wrong header, unparsable or negative
        times, ``start > end``, unknown arousal/valence/direction/emotion/cue words.
    """
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None:
                raise InputDataError(path, "file is empty (expected a CSV header)")
            header = [h.strip() for h in header]
            if tuple(header) != COLUMNS:
                raise _fail(path, 1, f"header is {','.join(header)!r}, expected "
                                     f"{','.join(COLUMNS)!r}")
            rows = []
            for line, fields in enumerate(reader, start=2):
                if not fields or all(not f.strip() for f in fields):
                    continue
                if len(fields) != len(COLUMNS):
                    raise _fail(path, line, f"{len(fields)} fields, expected {len(COLUMNS)}")
                rec = dict(zip(COLUMNS, (f.strip() for f in fields), strict=True))
                try:
                    start, end = float(rec["start"]), float(rec["end"])
                except ValueError:
                    raise _fail(path, line, f"start/end are not numbers: "
                                            f"{rec['start']!r}, {rec['end']!r}") from None
                if not (np.isfinite(start) and np.isfinite(end)):
                    raise _fail(path, line, "start/end must be finite")
                if start < 0 or end < 0:
                    raise _fail(path, line, f"negative time (start={start}, end={end})")
                if start > end:
                    raise _fail(path, line, f"start {start} is after end {end}")
                _check_words(path, line, "arousal", rec["arousal"], AROUSAL, True)
                _check_words(path, line, "valence", rec["valence"], VALENCE, True)
                _check_words(path, line, "direction", rec["direction"], DIRECTION, True)
                _check_words(path, line, "emotion", rec["emotion"], EMOTIONS, False)
                _check_words(path, line, "oncue", rec["oncue"], ONCUES, False)
                _check_words(path, line, "offcue", rec["offcue"], OFFCUES, False)
                rec["start"], rec["end"] = start, end
                rec["emotion"] = " ".join(rec["emotion"].split())
                rec["row"] = line
                rows.append(rec)
    except UnicodeDecodeError as err:
        raise InputDataError(path, f"not a UTF-8 text file ({err.reason})") from None
    except csv.Error as err:
        raise InputDataError(path, f"not a valid CSV file ({err})") from None
    df = pd.DataFrame(rows, columns=[*COLUMNS, "row"])
    df["start"] = df["start"].astype(float)
    df["end"] = df["end"].astype(float)
    df["row"] = df["row"].astype(int)
    df.insert(len(COLUMNS), "observer", path.stem)
    return df


def read_observers(raw_dir: str | os.PathLike, pattern: str = "av1o*.csv") -> pd.DataFrame:
    """Read all observers' annotation files of a folder into one table.

    Parameters
    ----------
    raw_dir : str or path-like
        Folder holding the files, e.g. ``gump_emotions/raw``.
    pattern : str, default="av1o*.csv"
        Glob of the files to read; ``"ao1o*.csv"`` reads the audio-only observers.

    Returns
    -------
    pandas.DataFrame
        All rows of all files, in file-name then file order, with the 9 original columns plus
        ``observer`` and ``row`` (see :func:`read_observer`).

    Raises
    ------
    InputDataError
        If the folder is missing, no file matches, or a file has a bad row.
    """
    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        raise InputDataError(raw_dir, "annotation folder does not exist")
    files = sorted(raw_dir.glob(pattern))
    if not files:
        raise InputDataError(raw_dir, f"no annotation file matches {pattern!r}")
    return pd.concat([read_observer(f) for f in files], ignore_index=True)
