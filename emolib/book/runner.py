"""Run the book's notebooks headless with papermill, then render the book.

Two stages, as in Project Pythia and NCAR CUPiD: papermill executes each jupytext notebook of
``notebooks/`` with a profile's parameters and writes the executed ``.ipynb`` into ``book/``;
Jupyter Book only renders them (``execute_notebooks: off``). A failing notebook is named with
its cell; the others still run, and the run exits non-zero with every failure.

Incremental: a notebook whose inputs are unchanged since its executed notebook was made is
not run again (:mod:`emolib.book.incremental`; ``--force`` runs all); every failure is
collected before the run exits non-zero; the book's execution report says what ran.

Concurrent (``--jobs N``): the chapters form a graph, each notebook's header naming the
chapters it reads (``emolib: needs: [...]``, or ``all``); up to N run at the same time, each
in its own kernel (so threads of this process suffice to drive them: the folds inside a
chapter are what goes to Dask, :mod:`emolib.tasks`), one whose header says ``alone: true``
with nothing beside it. A chapter that reads a failed one is not run.

Usage::

    python -m emolib.book --profile demo --jobs 2   # execute every notebook, build the book
    python -m emolib.book --profile smoke --no-build
    python -m emolib.book --profile demo --only 01_dataprep
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import jupytext
import nbformat
import papermill as pm
import yaml

from emolib.book.incremental import (
    cache_status,
    execution_inputs,
    package_digest,
    record_execution,
    write_execution_report,
    write_run_statuses,
)
from emolib.book.params import check_names, check_profile, parse_parameters
from emolib.paths import REPO_ROOT

__all__ = [
    "BOOK_DIR", "NOTEBOOKS_DIR", "NotebookFailed", "PROFILES_DIR", "build_book", "chapter_alone",
    "chapter_needs", "chapters",
    "copy_book_sources", "declared_parameters", "execute_notebook", "load_profile", "main",
    "notebook_parameters", "present_parameters", "record_parameters", "run_profile",
    "stage_static_assets", "to_ipynb",
]

NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
BOOK_DIR = REPO_ROOT / "book"
PROFILES_DIR = REPO_ROOT / "profiles"
KERNEL = "python3"


class NotebookFailed(RuntimeError):
    """A notebook raised; the message names the notebook and the cell."""


def load_profile(profile: str | Path) -> dict:
    """Read a profile: a name in ``profiles/`` or a path to a YAML file.

    A profile has ``common`` parameters (given to every notebook that declares them) and a
    ``notebooks`` mapping of notebook name -> its own parameters; only the notebooks it lists
    are run.
    """
    path = Path(profile)
    if not path.suffix:
        path = PROFILES_DIR / f"{profile}.yaml"
    if not path.is_file():
        known = ", ".join(p.stem for p in sorted(PROFILES_DIR.glob("*.yaml")))
        raise FileNotFoundError(f"profile {profile!r} not found (known: {known})")
    spec = yaml.safe_load(path.read_text()) or {}
    if not isinstance(spec.get("notebooks"), dict) or not spec["notebooks"]:
        raise ValueError(f"{path}: a profile needs a non-empty 'notebooks' mapping")
    spec.setdefault("common", {})
    spec.setdefault("name", path.stem)
    return spec


def declared_parameters(name: str) -> dict:
    """The parameters ``notebooks/<name>.py`` declares (its ``parameters`` cell), with their
    default values."""
    source = NOTEBOOKS_DIR / f"{name}.py"
    if not source.is_file():
        raise FileNotFoundError(f"{source} does not exist")
    for cell in jupytext.read(source).cells:
        if cell.cell_type == "code" and "parameters" in cell.metadata.get("tags", []):
            return parse_parameters(cell.source)
    return {}


def notebook_parameters(spec: dict, name: str) -> dict:
    """Parameters of one notebook under a profile: the common ones it declares, then its own.

    Raises :class:`emolib.book.params.ParameterError` for a name of its own that the
    notebook does not declare.
    """
    known = declared_parameters(name)
    own = spec["notebooks"].get(name) or {}
    check_names(own, known, f"profile {spec.get('name', '?')!r}: notebook {name}")
    common = {k: v for k, v in spec["common"].items() if k in known}
    return {**common, **own}


def to_ipynb(source: Path) -> nbformat.NotebookNode:
    """Read a jupytext ``.py`` notebook with the kernelspec papermill needs."""
    nb = jupytext.read(source)
    nb.metadata["kernelspec"] = {"name": KERNEL, "display_name": "Python 3 (ipykernel)",
                                 "language": "python"}
    nb.metadata.setdefault("language_info", {"name": "python"})
    return nb


def execute_notebook(
    name: str, parameters: dict, output_dir: Path = BOOK_DIR, progress: bool = True,
    timeout: int | None = None,
) -> Path:
    """Execute ``notebooks/<name>.py`` with ``parameters`` into ``<output_dir>/<name>.ipynb``.

    Papermill writes the notebook as it runs, cell after cell, into a hidden
    ``.<name>.partial.ipynb``; only a notebook that ran to its end replaces ``<name>.ipynb``
    (atomically). A killed or failed run therefore never leaves a half-executed notebook
    where the book reads one: the earlier complete one, if any, stays. A failed run's
    notebook, with its traceback, is kept as ``<name>.failed.ipynb``.

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
    effective = present_parameters(partial)
    partial.replace(out)
    failed.unlink(missing_ok=True)
    record_parameters(name, effective)
    return out


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


def present_parameters(path: Path) -> dict:
    """Make an executed notebook read as a paper page.

    Every code cell gets the ``hide-input`` tag: the reader sees prose, figures and tables,
    the code one click away. A markdown cell after papermill's injected cell lists every
    parameter this run used, marking those the profile changed (it stays visible). Absolute
    paths among the injected parameters are shown as :func:`emolib.paths.display_path` does
    and ``data_dir`` as None, in the summary and in the injected cell: the published page
    holds no path of the machine that built it (the run's own values are returned, and
    recorded by :func:`record_parameters`). Cells tagged ``colab`` (the install cell for
    Colab) are removed from the book.
    """
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
    nb.cells[where].source = "# Parameters\n" + "".join(
        f"{k} = {v!r}\n" if shown[k] == v else
        f"{k} = None  # this run's: {shown[k] if k != 'data_dir' else 'its data folder'}\n"
        for k, v in injected.items())
    _scrub_outputs(nb, data_dir)
    papermill = nb.metadata.get("papermill", {})
    for key in ("input_path", "output_path"):  # the build machine's temporary files
        papermill.pop(key, None)
    if "parameters" in papermill:
        papermill["parameters"] = {k: _shown(k, v, data_dir)
                                   for k, v in papermill["parameters"].items()}
    items = [f"`{k} = {_format_value(shown[k])}`" + (" *(profile)*" if k in injected and
                                                      injected[k] != defaults.get(k) else "")
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


def stage_static_assets(book_dir: Path = BOOK_DIR) -> None:
    """Copy plotly.js and MathJax from their Python packages into ``book/_static``.

    The book then loads them from its own pages: nothing is fetched from a CDN.
    """
    import mathjax
    import plotly

    static = book_dir / "_static"
    static.mkdir(exist_ok=True)
    plotly_js = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    shutil.copy2(plotly_js, static / "plotly.min.js")
    es5 = Path(mathjax.__file__).parent / "static" / "mathjax" / "es5"
    dest = static / "mathjax"
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir()
    # Only the combined component and its fonts: Jupyter Book adds every .js file under
    # _static to every notebook page, and MathJax's lazily loaded parts (ui/, a11y/, tex
    # extensions) would then run twice and clash with the copies inside the combined file.
    shutil.copy2(es5 / "tex-mml-chtml.js", dest / "tex-mml-chtml.js")
    fonts = "output/chtml/fonts/woff-v2"
    shutil.copytree(es5 / fonts, dest / fonts)


def copy_book_sources(dest: Path) -> Path:
    """Copy the book's own pages (markdown, bibliography, ``_static``) into ``dest``, e.g. to
    build a book from notebooks executed elsewhere without touching ``book/``."""
    dest.mkdir(parents=True, exist_ok=True)
    for path in BOOK_DIR.iterdir():
        if path.name.startswith((".", "_build")) or path.suffix == ".ipynb":
            continue
        if path.is_dir():
            shutil.copytree(path, dest / path.name, dirs_exist_ok=True)
        else:
            shutil.copy2(path, dest / path.name)
    return dest


def build_book(book_dir: Path = BOOK_DIR, warnings_as_errors: bool = True,
               all_pages: bool = True, builder: str = "html") -> Path:
    """Render ``book_dir`` with Jupyter Book (config and toc at the repository root) into
    ``book_dir/_build/html``; returns the path of its ``index.html``.

    The execution report page (:func:`emolib.book.incremental.write_execution_report`) is
    written first. ``all_pages=False`` lets Sphinx redo only the pages whose files changed
    (what ``make book`` does after a run that reused chapters). ``builder``: a Sphinx
    builder of Jupyter Book (``"linkcheck"`` checks the external links: ``make linkcheck``).
    """
    book_dir = Path(book_dir)
    stage_static_assets(book_dir)
    write_execution_report(book_dir, chapters())
    cmd = [
        str(Path(sys.executable).with_name("jupyter-book")), "build", str(book_dir),
        "--config", str(REPO_ROOT / "_config.yml"), "--toc", str(REPO_ROOT / "_toc.yml"),
        "--path-output", str(book_dir), *(["--all"] if all_pages else []),
        "--builder", builder,
    ]
    if warnings_as_errors:
        cmd += ["-W", "--keep-going"]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=REPO_ROOT)
    index = book_dir / "_build" / "html" / "index.html"
    print(f"Book built: {index}", flush=True)
    return index


def chapters() -> list[str]:
    """The chapters (``notebooks/NN_name.py``), in their numbers' order."""
    return sorted(p.stem for p in NOTEBOOKS_DIR.glob("[0-9][0-9]_*.py"))


def _header(name: str) -> dict:
    """The ``emolib`` part of chapter ``name``'s notebook header (``needs``, ``alone``)."""
    return jupytext.read(NOTEBOOKS_DIR / f"{name}.py").metadata.get("emolib", {})


def chapter_needs(name: str, names: list[str]) -> list[str]:
    """The chapters among ``names`` (a profile's, in order) whose outputs chapter ``name``
    reads: its notebook header's ``emolib: needs:`` list (``all``: every other chapter of the
    profile), or every chapter before it where the header says nothing."""
    needs = _header(name).get("needs")
    if needs is None:
        return names[:names.index(name)]
    if needs == "all":
        return [n for n in names if n != name]
    if not isinstance(needs, list) or not all(isinstance(n, str) for n in needs):
        raise ValueError(f"{NOTEBOOKS_DIR / f'{name}.py'}: emolib.needs must be a list of "
                         f"chapter names or 'all', not {needs!r}")
    unknown = sorted(set(needs) - set(chapters()))
    if unknown:  # a misspelt name would drop the dependency and its cache invalidation
        raise ValueError(f"{NOTEBOOKS_DIR / f'{name}.py'}: emolib.needs names no chapter "
                         f"{unknown}")
    return [n for n in names if n in needs]


def chapter_alone(name: str) -> bool:
    """Whether chapter ``name`` must run with nothing else beside it (header ``emolib:
    alone: true``: the performance chapter, whose timings another kernel would distort)."""
    return bool(_header(name).get("alone", False))


def run_profile(profile: str, only: list[str] | None = None, build: bool = True,
                progress: bool = True, force: bool = False,
                book_dir: Path = BOOK_DIR, jobs: int = 1) -> dict[str, dict]:
    """Execute the notebooks of a profile as a graph of chapters, then build the book.

    A chapter runs once the chapters it reads (:func:`chapter_needs`) have run or were
    cached; up to ``jobs`` chapters run at the same time (each in its own kernel), except
    one that must run alone (:func:`chapter_alone`). With ``jobs=1`` they run one after
    another in the profile's order.

    A notebook whose source, parameters, package code and upstream manifests are those of
    its executed notebook's record is not run again (``cached``; ``force`` runs it anyway):
    :mod:`emolib.book.incremental`. A failing notebook does not stop the others, but the
    chapters that read it are not run (``skipped``: they would read missing or stale
    outputs); every failure (notebook and cell) is collected and raised together at the
    end, before the book is built. Returns each notebook's status (``run``, ``cached``,
    ``failed``, ``skipped``) with the reason.
    """
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a positive integer, not {jobs!r}")
    spec = load_profile(profile)
    names = [n for n in spec["notebooks"] if only is None or n in only]
    missing = [n for n in (only or []) if n not in spec["notebooks"]]
    if missing:
        raise ValueError(f"profile {spec['name']!r} has no notebook(s) {missing}")
    # every name of the profile checked before any notebook runs
    check_profile(spec, {n: declared_parameters(n) for n in spec["notebooks"]})
    order = list(spec["notebooks"])
    needs = {n: chapter_needs(n, order) for n in names}
    alone = {n: chapter_alone(n) for n in names}
    package = package_digest()  # once: the sources do not change during the run
    total = time.perf_counter()
    statuses, failures = {}, []
    bars = progress and jobs == 1  # cell bars of concurrent kernels would interleave
    lock = threading.Lock()

    def say(line: str) -> None:  # one write per line: lines of concurrent chapters stay whole
        with lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    def run_one(i: int, name: str) -> tuple[dict, str | None]:
        params = notebook_parameters(spec, name)
        inputs = execution_inputs(name, params, needs[name], NOTEBOOKS_DIR, package)
        fresh, why = (False, "--force") if force else cache_status(
            book_dir / f"{name}.ipynb", inputs)
        head = f"[{i}/{len(names)}] {name} (profile {spec['name']})"
        if fresh:
            say(f"{head}: cached ({why})")
            return {"status": "cached", "reason": "inputs unchanged"}, None
        say(f"{head}: running ({why})")
        t0 = time.perf_counter()
        try:
            out = execute_notebook(name, params, output_dir=book_dir, progress=bars)
        except Exception as err:  # NotebookFailed, or a dead kernel, a timeout: collected
            say(f"{head}: FAILED after {time.perf_counter() - t0:.0f} s")
            text = str(err) if isinstance(err, NotebookFailed) else (
                f"notebooks/{name}.py: {type(err).__name__}: {err}")
            return {"status": "failed", "reason": text.splitlines()[0]}, text
        record_execution(out, inputs, time.perf_counter() - t0)
        say(f"{head}: done in {time.perf_counter() - t0:.0f} s")
        return {"status": "run", "reason": why}, None

    # what each chapter waits for in this run (with --only, the others are taken as done)
    upstream = {n: [m for m in needs[n] if m in names] for n in names}
    try:  # a cycle in the declared needs is an error before anything runs
        TopologicalSorter(upstream).prepare()
    except CycleError as err:
        raise ValueError(f"chapters that need each other: {err.args[1]} (their notebook "
                         "headers' emolib.needs)") from None

    def did_not_run(chapter: str) -> list[str]:
        return [n for n in upstream[chapter]
                if statuses.get(n, {}).get("status") in ("failed", "skipped")]

    pending = list(names)
    running: dict = {}
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        while pending or running:
            skipped_any = False
            for name in list(pending):
                bad = did_not_run(name)
                if bad:
                    pending.remove(name)
                    skipped_any = True
                    statuses[name] = {"status": "skipped",
                                      "reason": f"needs {', '.join(bad)}, which did not run"}
                    say(f"[{names.index(name) + 1}/{len(names)}] {name}: not run "
                        f"({statuses[name]['reason']})")
                    continue
                ready = all(n in statuses for n in upstream[name])
                fits = len(running) < jobs and not any(alone[n] for n in running.values())
                if alone[name] and jobs > 1:  # alone: when nothing runs and nothing else can
                    fits = fits and not running and not any(
                        not alone[p] and not did_not_run(p)
                        and all(n in statuses for n in upstream[p]) for p in pending)
                if ready and fits:
                    pending.remove(name)
                    running[pool.submit(run_one, names.index(name) + 1, name)] = name
            if not running:
                if pending and not skipped_any:  # cannot happen without a cycle
                    raise RuntimeError(f"no chapter of {pending} can start")
                continue
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                name = running.pop(future)
                statuses[name], error = future.result()
                if error:
                    failures.append(error)
    statuses = {n: statuses[n] for n in names}
    write_run_statuses(book_dir, statuses)
    if failures:
        skipped = [n for n, st in statuses.items() if st["status"] == "skipped"]
        raise NotebookFailed(f"{len(failures)} of {len(names)} notebooks failed"
                             + (f" ({', '.join(skipped)} not run: they read them)"
                                if skipped else "") + ":\n\n" + "\n\n".join(failures))
    if build:
        t0 = time.perf_counter()
        build_book(book_dir, all_pages=False)
        print(f"book rendered in {time.perf_counter() - t0:.0f} s", flush=True)
    n_cached = sum(s["status"] == "cached" for s in statuses.values())
    print(f"total {time.perf_counter() - total:.0f} s ({n_cached} of {len(names)} notebooks "
          "cached)", flush=True)
    return statuses


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="demo", help="profile name or YAML path")
    parser.add_argument("--only", nargs="+", help="run only these notebooks")
    parser.add_argument("--no-build", action="store_true", help="execute, do not render")
    parser.add_argument("--build-only", action="store_true", help="render, do not execute")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("--force", action="store_true",
                        help="run every notebook, even those whose inputs are unchanged")
    parser.add_argument("--jobs", type=int, default=1,
                        help="chapters run at the same time, each once those it reads are "
                             "done (default 1: one after another)")
    args = parser.parse_args(argv)
    try:
        if args.build_only:
            build_book()
        else:
            run_profile(args.profile, args.only, build=not args.no_build,
                        progress=not args.no_progress, force=args.force, jobs=args.jobs)
    except NotebookFailed as err:
        print(f"\nFAILED: {err}", file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as err:
        print(f"\nFAILED: the book build exited with status {err.returncode}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
