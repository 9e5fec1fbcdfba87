"""Execute one chapter headless: papermill runs ``notebooks/<name>.py`` (jupytext, converted
first) with its parameters, and the executed notebook is made to read as a page of the paper.

What :mod:`emolib.book.runner` does for every chapter of a profile, on threads of its process
or as tasks on a Dask cluster (:mod:`emolib.book.cluster`), one notebook at a time here:
atomic replacement of the book's notebook, the failed one kept beside with its traceback, the
parameters recorded in the chapter's stage folder, machine paths kept out of the published
page.
"""

from __future__ import annotations

import os
from pathlib import Path

import jupytext
import nbformat
import papermill as pm

from emolib.book.params import parse_parameters
from emolib.paths import REPO_ROOT

__all__ = ["BOOK_DIR", "KERNEL", "NOTEBOOKS_DIR", "NotebookFailed", "execute_notebook",
           "present_parameters", "record_parameters", "to_ipynb"]

NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
BOOK_DIR = REPO_ROOT / "book"
KERNEL = "python3"


class NotebookFailed(RuntimeError):
    """A notebook raised; the message names the notebook and the cell."""


def to_ipynb(source: Path) -> nbformat.NotebookNode:
    """Read a jupytext ``.py`` notebook with the kernelspec papermill needs."""
    nb = jupytext.read(source)
    nb.metadata["kernelspec"] = {"name": KERNEL, "display_name": "Python 3 (ipykernel)",
                                 "language": "python"}
    nb.metadata.setdefault("language_info", {"name": "python"})
    return nb


def execute_notebook(
    name: str, parameters: dict, output_dir: Path = BOOK_DIR, progress: bool = True,
    timeout: int | None = None, recorded_as: dict | None = None,
    kernel_env: dict[str, str | None] | None = None,
) -> Path:
    """Execute ``notebooks/<name>.py`` with ``parameters`` into ``<output_dir>/<name>.ipynb``.

    Papermill writes the notebook as it runs, cell after cell, into a hidden
    ``.<name>.partial.ipynb``; only a notebook that ran to its end replaces ``<name>.ipynb``
    (atomically). A killed or failed run therefore never leaves a half-executed notebook
    where the book reads one: the earlier complete one, if any, stays. A failed run's
    notebook, with its traceback, is kept as ``<name>.failed.ipynb``. The parameters it ran
    with are recorded in its stage folder (:func:`record_parameters`), those in
    ``recorded_as`` with the values given there instead (where it ran is not recorded:
    :mod:`emolib.book.cluster`). ``kernel_env``: environment variables set (``None``:
    removed) for the kernel only, e.g. the driver's thread settings for a kernel started by a
    Dask worker; this process's environment is left as it is.

    Raises
    ------
    NotebookFailed
        If a cell raises, naming the notebook, the cell's number and the error.
    """
    source = NOTEBOOKS_DIR / f"{name}.py"
    if not source.is_file():
        raise FileNotFoundError(f"{source} does not exist")
    output_dir.mkdir(parents=True, exist_ok=True)
    out = output_dir / f"{name}.ipynb"
    partial = output_dir / f".{name}.partial.ipynb"
    failed = output_dir / f"{name}.failed.ipynb"
    tmp_in = output_dir / f".{name}.input.ipynb"
    nbformat.write(to_ipynb(source), tmp_in)
    try:
        pm.execute_notebook(
            str(tmp_in), str(partial), parameters=parameters, kernel_name=KERNEL,
            progress_bar=progress, cwd=str(REPO_ROOT), execution_timeout=timeout,
            # the kernel's own log (e.g. its warning about local TCP) stays out of the terminal
            extra_arguments=["--IPKernelApp.log_level=ERROR"],
            **({"kernel_manager_class": _kernel_manager(kernel_env)} if kernel_env else {}),
        )
    except pm.PapermillExecutionError as err:
        partial.replace(failed)
        raise NotebookFailed(
            f"{source.relative_to(REPO_ROOT)} failed in cell {err.exec_count} "
            f"(cell index {err.cell_index}): {err.ename}: {err.evalue}\n"
            f"The executed notebook with the traceback is {failed}"
        ) from None
    except Exception:  # a dead kernel, a timeout: what ran is kept beside as well
        if partial.exists():
            partial.replace(failed)
        raise
    finally:
        tmp_in.unlink(missing_ok=True)
    effective = present_parameters(partial, recorded_as)
    partial.replace(out)
    failed.unlink(missing_ok=True)
    record_parameters(name, {**effective, **(recorded_as or {})})
    return out


def _kernel_manager(env: dict[str, str | None]) -> type:
    """A jupyter_client kernel manager whose kernels start with ``env`` applied to this
    process's environment (the Popen ``env`` of the kernel: nothing else is changed)."""
    from jupyter_client import AsyncKernelManager
    from jupyter_client.manager import KernelManager

    class EnvKernelManager(AsyncKernelManager):
        async def start_kernel(self, **kw):
            merged = dict(kw.pop("env", None) or os.environ)
            for var, value in env.items():
                if value is None:
                    merged.pop(var, None)
                else:
                    merged[var] = str(value)
            return await KernelManager._async_start_kernel(self, env=merged, **kw)

    return EnvKernelManager


def record_parameters(name: str, parameters: dict) -> Path | None:
    """Write the parameters a notebook ran with to ``parameters.json`` in its stage folder
    (``<data>/derived/<profile>/<name>/``), where the methods chapter reads them."""
    from emolib.manifest import jsonable, write_json
    from emolib.paths import get_derived_dir

    if "profile" not in parameters:
        return None
    folder = get_derived_dir(name, str(parameters["profile"]), parameters.get("data_dir"))
    return write_json(folder / "parameters.json", jsonable(parameters), indent=2)


def _format_value(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _shown(name: str, value, data_dir):
    """A parameter's value as the published book shows it (see :func:`present_parameters`)."""
    from emolib.paths import display_value

    return None if name == "data_dir" and isinstance(value, str) else display_value(value,
                                                                                   data_dir)


def _scrub_outputs(nb: nbformat.NotebookNode, data_dir) -> None:
    """Machine paths in the outputs (warnings name source files, messages name folders)
    replaced as :func:`emolib.paths.display_path` writes them: data folder first, then the
    repository and its parent."""
    from emolib.paths import display_roots

    roots = display_roots(data_dir)

    def scrub(text: str) -> str:
        for root, short in roots:
            text = text.replace(str(root), short)
        return text

    for cell in nb.cells:
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            if "text" in out:
                out["text"] = scrub(out["text"])
            for mime, value in out.get("data", {}).items():
                if mime.startswith("text/") and isinstance(value, str):
                    out["data"][mime] = scrub(value)
            if "traceback" in out:
                out["traceback"] = [scrub(line) for line in out["traceback"]]


def present_parameters(path: Path, recorded_as: dict | None = None) -> dict:
    """Make an executed notebook read as a paper page.

    Every code cell gets the ``hide-input`` tag: the reader sees prose, figures and tables,
    the code one click away. A markdown cell after papermill's injected cell lists every
    parameter this run used, marking those the profile changed (it stays visible). Absolute
    paths among the injected parameters are shown as :func:`emolib.paths.display_path` does
    and ``data_dir`` as None, in the summary and in the injected cell: the published page
    holds no path of the machine that built it (the run's own values are returned, and
    recorded by :func:`record_parameters`). Parameters in ``recorded_as`` (where the run
    ran: the book's Dask cluster, :mod:`emolib.book.cluster`) read as those values in the
    injected cell, the run's own in a comment, so that Run All in a launched copy does not
    look for a cluster that is gone. Cells tagged ``colab`` (the install cell for Colab) are
    removed from the book.
    """
    recorded_as = recorded_as or {}
    nb = nbformat.read(path, as_version=4)
    defaults, injected, where = {}, {}, None
    for i, cell in enumerate(nb.cells):
        tags = cell.metadata.setdefault("tags", [])
        if cell.cell_type != "code":
            continue
        if "colab" in tags and "remove-cell" not in tags:
            tags.append("remove-cell")
        if not {"remove-cell", "remove-input", "hide-input"} & set(tags):
            tags.append("hide-input")
        for tag, store in (("parameters", defaults), ("injected-parameters", injected)):
            if tag in tags:
                store.update(parse_parameters(cell.source))
                if tag == "injected-parameters":
                    where = i
    effective = {**defaults, **injected}
    if where is None:
        nbformat.write(nb, path)
        return effective
    # machine paths are not published: the book shows them as display_path does, and the
    # data folder as None (a reader's own, for Run All in a launched copy)
    data_dir = effective.get("data_dir")
    shown = {k: _shown(k, v, data_dir) for k, v in effective.items()}
    # in the injected cell a machine path becomes None (the default: the reader's own data
    # folder, or what make data fetched), so that Run All works in a launched copy
    def line(k, v) -> str:
        if k in recorded_as:
            return f"{k} = {recorded_as[k]!r}  # this run's, on the book's Dask cluster: {v!r}\n"
        if shown[k] == v:
            return f"{k} = {v!r}\n"
        return f"{k} = None  # this run's: {shown[k] if k != 'data_dir' else 'its data folder'}\n"

    nb.cells[where].source = "# Parameters\n" + "".join(line(k, v) for k, v in injected.items())
    _scrub_outputs(nb, data_dir)
    papermill = nb.metadata.get("papermill", {})
    for key in ("input_path", "output_path"):  # the build machine's temporary files
        papermill.pop(key, None)
    if "parameters" in papermill:
        papermill["parameters"] = {k: _shown(k, v, data_dir)
                                   for k, v in papermill["parameters"].items()}
    items = [f"`{k} = {_format_value(shown[k])}`" + (
        " *(the book's Dask cluster)*" if k in recorded_as else
        " *(profile)*" if k in injected and injected[k] != defaults.get(k) else "")
        for k in effective]
    text = ("**Parameters of this run** (*(profile)* marks values the run profile set; the "
            "code of both parameter cells is one click away above):\n\n" +
            "\n".join(f"- {item}" for item in items))
    summary = nbformat.v4.new_markdown_cell(text)
    summary.metadata["tags"] = ["parameters-summary"]
    if not (where + 1 < len(nb.cells) and "parameters-summary" in
            nb.cells[where + 1].metadata.get("tags", [])):
        nb.cells.insert(where + 1, summary)
    nbformat.write(nb, path)
    return effective
