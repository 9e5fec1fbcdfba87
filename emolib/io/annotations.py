"""Reading and validating the Labs et al. (2015) portrayed-emotion annotations.

Each observer's file (``av1oNN.csv`` for the audio-visual movie, ``ao1oNN.csv`` for the
audio-only version) has the header
``start,end,character,arousal,valence,direction,emotion,oncue,offcue``; times are seconds of
movie time; ``emotion`` may be empty or a space-separated list of the 22 categories; cues are
space-separated words.

Files are read as UTF-8, with or without a byte-order mark (what spreadsheet programs write
when saving "CSV UTF-8"), with LF, CRLF or CR line endings; other encodings are refused with an
error that says so.
"""

from __future__ import annotations

import codecs
import csv
import io
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


#: Byte-order marks of encodings that are not UTF-8 (UTF-32 first: its LE mark starts like
#: UTF-16's).
_FOREIGN_BOMS = (
    (codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16"),
)
_RESAVE = "save it again as UTF-8 CSV"


def _decode(path: Path, data: bytes) -> str:
    """The text of an annotation file's bytes: UTF-8, a leading UTF-8 byte-order mark dropped."""
    for bom, name in _FOREIGN_BOMS:
        if data.startswith(bom):
            raise InputDataError(path, f"file is {name} encoded (it starts with the {name} "
                                       f"byte-order mark); annotation files must be UTF-8: "
                                       f"{_RESAVE}")
    if b"\x00" in data:
        raise InputDataError(path, "file contains NUL bytes, so it is not UTF-8 text (UTF-16 "
                                   f"without a byte-order mark?); {_RESAVE}")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise InputDataError(path, f"not a UTF-8 text file ({err.reason} at byte {err.start}; "
                                   f"another encoding such as Windows-1252?); {_RESAVE}",
                             line=line) from None


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

    The file must be UTF-8 text; a leading UTF-8 byte-order mark (as spreadsheet programs
    write) is dropped, and LF, CRLF or CR line endings are all read alike, so these variants
    of a file give identical tables. Blank lines (e.g. trailing ones) are skipped.

    A file with a header but no annotation rows is refused rather than read as an observer
    who saw no emotion: every observer of the 2-hour movie annotated hundreds of episodes,
    so an empty table means a truncated or wrongly saved file, and silently adding nothing
    would bias the consensus labels.

    Parameters
    ----------
    path : str or path-like
        An ``av1oNN.csv`` or ``ao1oNN.csv`` file.

    Returns
    -------
    pandas.DataFrame
        The 9 original columns (``emotion`` normalised to single spaces, ``""`` when empty)
        plus ``observer`` (the file's stem, e.g. ``"av1o03"``) and ``row`` (1-based line
        number in the file where the row starts, the header being line 1). Never empty.

    Raises
    ------
    InputDataError
        Naming the file (and the line, where there is one) when the file is empty (0 bytes),
        only blank, not UTF-8 (e.g. UTF-16, named as such), not valid CSV, has a wrong header
        or a header but no annotation rows; and naming the file and line of the first bad
        row: wrong number of fields, unparsable, non-finite or negative times,
        ``start > end``, unknown arousal/valence/direction/emotion/cue words. Nothing is
        returned when any of these is found.
    OSError
        If the file cannot be read (e.g. it does not exist).
    """
    path = Path(path)
    data = path.read_bytes()
    if not data:
        raise InputDataError(path, f"file is empty (0 bytes); expected the header "
                                   f"{','.join(COLUMNS)!r} and annotation rows")
    text = _decode(path, data)
    if not text.strip():
        raise InputDataError(path, "file has no content (only blank lines or a byte-order "
                                   f"mark); expected the header {','.join(COLUMNS)!r} and "
                                   "annotation rows")
    try:
        # newline="": the csv module sees the line endings as written (LF, CRLF or CR)
        with io.StringIO(text, newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader)
            header = [h.strip() for h in header]
            if tuple(header) != COLUMNS:
                raise _fail(path, 1, f"header is {','.join(header)!r}, expected "
                                     f"{','.join(COLUMNS)!r}")
            rows = []
            # a record's line is where it starts (a quoted field may span lines)
            next_start = reader.line_num + 1
            for fields in reader:
                line, next_start = next_start, reader.line_num + 1
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
    except csv.Error as err:
        raise InputDataError(path, f"not a valid CSV file ({err})") from None
    if not rows:
        raise InputDataError(path, "file has a header but no annotation rows; an observer "
                                   "who annotated no episode of the whole movie is not "
                                   "plausible (a truncated or unsaved file?)")
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
        If the folder is missing, no file matches, or any file is refused by
        :func:`read_observer` (e.g. a bad row, or a header but no rows); then no table is
        returned, not even the files read before it.
    """
    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        raise InputDataError(raw_dir, "annotation folder does not exist")
    files = sorted(raw_dir.glob(pattern))
    if not files:
        raise InputDataError(raw_dir, f"no annotation file matches {pattern!r}")
    return pd.concat([read_observer(f) for f in files], ignore_index=True)
