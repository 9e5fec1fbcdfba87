"""The one exception that emolib raises on bad input data."""

from __future__ import annotations

from os import PathLike

__all__ = [
    "InputDataError",
]


class InputDataError(ValueError):
    """Input data is unusable; the message names the file (and line) and the problem.

    Parameters
    ----------
    path : str or path-like or None
        The file (or folder) at fault.
    problem : str
        What is wrong with it, in words a user can act on.
    line : int, optional
        1-based line number in a text file, where it applies.
    """

    def __init__(self, path: str | PathLike | None, problem: str, line: int | None = None):
        self.path = None if path is None else str(path)
        self.problem = problem
        self.line = line
        where = "" if self.path is None else self.path
        if line is not None:
            where = f"{where}, line {line}"
        super().__init__(f"{where}: {problem}" if where else problem)
