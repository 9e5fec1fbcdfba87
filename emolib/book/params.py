"""Notebook parameters: what a notebook declares, and a refusal of names it does not know.

papermill injects parameters as plain assignments in a cell after the notebook's cell tagged
``parameters``; a name the notebook does not declare (``-p epoch 3`` for ``epochs``) is only
logged by papermill and then silently ignored by the notebook. Two guards here:

- :func:`check_parameters`, called by every notebook in the cell after its parameters
  (before any work), reads the kernel's input history (IPython's ``In``), finds papermill's
  injected cell (it starts with ``# Parameters``) and the parameters cell run just before it,
  and raises :class:`ParameterError` for any injected name the parameters cell does not
  assign, naming the closest known one. This works for plain ``papermill`` and for the
  book's runner alike; outside a kernel, or without an injected cell, it does nothing.
- :func:`check_profile` (used by :mod:`emolib.book.runner` before it runs anything) checks a
  whole profile against the notebooks' parameter cells, so a misspelt name in the last
  chapter fails before the first chapter starts.
"""

from __future__ import annotations

import ast
import difflib
from collections.abc import Iterable, Mapping

__all__ = ["INJECTED_HEADER", "ParameterError", "check_names", "check_parameters",
           "check_profile", "parse_parameters"]

#: First line of the cell papermill's Python translator injects.
INJECTED_HEADER = "# Parameters"


class ParameterError(ValueError):
    """A parameter name that a notebook does not declare."""


def parse_parameters(source: str) -> dict:
    """Names assigned at top level in a parameters cell, with their values.

    Values that are Python literals are returned as such, anything else as its source
    text. Both ``name = value`` and ``name: type = value`` count.
    """
    out: dict = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.AnnAssign):
            targets, value = [node.target], node.value
        elif isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        else:
            continue
        if value is None:
            continue
        for target in targets:
            if isinstance(target, ast.Name):
                try:
                    out[target.id] = ast.literal_eval(value)
                except ValueError:
                    out[target.id] = ast.unparse(value)
    return out


def check_names(given: Iterable[str], known: Iterable[str], where: str) -> None:
    """Raise :class:`ParameterError` if any of ``given`` is not in ``known``.

    The message names ``where`` (e.g. the notebook), every unknown name with the closest
    known one, and the known names.
    """
    known = sorted(set(known))
    unknown = [name for name in given if name not in known]
    if not unknown:
        return
    parts = []
    for name in unknown:
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        parts.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    raise ParameterError(f"{where}: unknown parameter {', '.join(parts)}; the known ones are: "
                         f"{', '.join(known)}")


def check_parameters(notebook: str, history: list[str] | None = None) -> None:
    """Refuse parameters papermill injected that this notebook does not declare.

    Parameters
    ----------
    notebook : str
        The notebook's name, for the message.
    history : list of str, optional
        Sources of the cells run so far, oldest first; default the kernel's ``In``.

    Raises
    ------
    ParameterError
        Naming each unknown parameter and the closest known one.
    """
    if history is None:
        try:
            from IPython import get_ipython
        except ImportError:  # pragma: no cover - IPython comes with every kernel
            return
        shell = get_ipython()
        if shell is None:
            return
        history = list(shell.user_ns.get("In", []))
    for i in range(len(history) - 1, 0, -1):
        if history[i].lstrip().startswith(INJECTED_HEADER):
            injected = parse_parameters(history[i])
            declared = parse_parameters(history[i - 1])
            check_names(injected, declared, f"notebook {notebook}")
            return


def check_profile(spec: Mapping, declared: Mapping[str, Iterable[str]]) -> None:
    """Check a run profile against the notebooks' declared parameters.

    Parameters
    ----------
    spec : mapping
        The profile (``common`` and ``notebooks``, see :func:`emolib.book.runner.load_profile`).
    declared : mapping of str to iterable of str
        Each notebook's declared parameter names.

    Raises
    ------
    ParameterError
        For a notebook-specific name its notebook does not declare, or a ``common`` name
        that no notebook declares; ``common`` names go only to the notebooks that declare
        them (see :func:`emolib.book.runner.notebook_parameters`).
    """
    name = spec.get("name", "?")
    everything = set().union(*(set(v) for v in declared.values())) if declared else set()
    check_names(spec.get("common") or {}, everything,
                f"profile {name!r}, common (declared by no notebook)")
    for nb, params in (spec.get("notebooks") or {}).items():
        check_names(params or {}, declared[nb], f"profile {name!r}: notebook {nb}")
