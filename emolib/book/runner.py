"""Run the book's notebooks headless with papermill, then render the book.

Two stages, as in Project Pythia and NCAR CUPiD: papermill executes each jupytext notebook of
``notebooks/`` with a profile's parameters and writes the executed ``.ipynb`` into ``book/``;
Jupyter Book only renders them (``execute_notebooks: off``). One notebook's execution is
:func:`emolib.book.execute.execute_notebook`. A failing notebook is named with its cell; the
others still run, and the run exits non-zero with every failure.

Incremental: a notebook whose inputs are unchanged since its executed notebook was made is
not run again (:mod:`emolib.book.incremental`; ``--force`` runs all); every failure is
collected before the run exits non-zero; the book's execution report says what ran.

Concurrent (``--jobs N``): the chapters form a graph, each notebook's header naming the
chapters it reads (``emolib: needs: [...]``, or ``all``); up to N run at the same time, each
in its own kernel, one whose header says ``alone: true`` with nothing beside it. A chapter
that reads a failed one is not run. The kernels are started by threads of this process, or,
with ``--workers M`` (a local Dask cluster) or ``--scheduler ADDRESS`` (a running one), as
tasks on :mod:`emolib.tasks`' engine, where the folds of the chapters that train them run
too (:mod:`emolib.book.cluster`): one cluster, and one view of all its tasks (the dashboard
where bokeh serves it; a terminal bar of every task, chapters and folds, in any case).

Usage::

    python -m emolib.book --profile demo --jobs 2   # execute every notebook, build the book
    python -m emolib.book --profile smoke --no-build
    python -m emolib.book --profile demo --jobs 2 --workers 2   # chapters and folds on Dask
    python -m emolib.book --profile demo --only 01_dataprep
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import jupytext
import yaml
from tqdm.auto import tqdm

from emolib.book.cluster import engine_parameters, submit_chapter
from emolib.book.execute import (
    BOOK_DIR,
    NOTEBOOKS_DIR,
    NotebookFailed,
    execute_notebook,
    present_parameters,
    record_parameters,
    to_ipynb,
)
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
from emolib.tasks import cluster_progress, engine, scheduler_address, sharing_environment

__all__ = [
    "BOOK_DIR", "NOTEBOOKS_DIR", "NotebookFailed", "PROFILES_DIR", "build_book", "chapter_alone",
    "chapter_needs", "chapters",
    "copy_book_sources", "declared_parameters", "execute_notebook", "load_profile", "main",
    "notebook_parameters", "present_parameters", "record_parameters", "run_profile",
    "stage_static_assets", "to_ipynb",
]

PROFILES_DIR = REPO_ROOT / "profiles"


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


def notebook_parameters(spec: dict, name: str, declared: dict | None = None) -> dict:
    """Parameters of one notebook under a profile: the common ones it declares, then its own
    (``declared``: :func:`declared_parameters` of the notebook, when the caller has it).

    Raises :class:`emolib.book.params.ParameterError` for a name of its own that the
    notebook does not declare.
    """
    known = declared_parameters(name) if declared is None else declared
    own = spec["notebooks"].get(name) or {}
    check_names(own, known, f"profile {spec.get('name', '?')!r}: notebook {name}")
    common = {k: v for k, v in spec["common"].items() if k in known}
    return {**common, **own}


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
                book_dir: Path = BOOK_DIR, jobs: int = 1, workers: int | None = None,
                scheduler: str | None = None) -> dict[str, dict]:
    """Execute the notebooks of a profile as a graph of chapters, then build the book.

    A chapter runs once the chapters it reads (:func:`chapter_needs`) have run or were
    cached; up to ``jobs`` chapters run at the same time (each in its own kernel), except
    one that must run alone (:func:`chapter_alone`). With ``jobs=1`` they run one after
    another in the profile's order. With ``workers`` (a local Dask cluster of that many
    processes, started for the run) or ``scheduler`` (the address of a running one), each
    chapter's execution is a task on that cluster, and the chapters that train folds there
    are given its address (:mod:`emolib.book.cluster`); ``jobs`` still bounds the chapters
    at once. Otherwise threads of this process drive the kernels. With ``jobs > 1`` the
    kernels of chapters that may run beside others get
    :func:`emolib.tasks.sharing_environment` (OpenMP threads that sleep while they wait):
    spinning threads of two kernels, or of a kernel beside its folds' workers, took the
    cores from each other (in a demo book on 2 cores, an epoch of the space-time chapter's
    networks took about 100 s beside the decoding chapter's folds and the chapters after it,
    14 s once it ran alone).

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
    declared = {n: declared_parameters(n) for n in spec["notebooks"]}
    check_profile(spec, declared)
    order = list(spec["notebooks"])
    needs = {n: chapter_needs(n, order) for n in names}
    alone = {n: chapter_alone(n) for n in names}
    package = package_digest()  # once: the sources do not change during the run
    total = time.perf_counter()
    statuses, failures = {}, []
    bars = progress and jobs == 1  # cell bars of concurrent kernels would interleave
    lock = threading.Lock()

    def say(line: str) -> None:  # one write per line: lines of concurrent chapters stay whole
        with lock:  # (above the bar of the cluster's tasks, when there is one)
            tqdm.write(line, file=sys.stdout)
            sys.stdout.flush()

    def run_one(i: int, name: str) -> tuple[dict, str | None]:
        params = notebook_parameters(spec, name, declared[name])
        inputs = execution_inputs(name, params, needs[name], NOTEBOOKS_DIR, package)
        address = scheduler_address(client) if client is not None else None
        on_engine, recorded_as = engine_parameters(declared[name], params, address)
        params = {**params, **on_engine}
        fresh, why = (False, "--force") if force else cache_status(
            book_dir / f"{name}.ipynb", inputs)
        head = f"[{i}/{len(names)}] {name} (profile {spec['name']})"
        if fresh:
            say(f"{head}: cached ({why})")
            return {"status": "cached", "reason": "inputs unchanged"}, None
        say(f"{head}: running ({why})")
        t0 = time.perf_counter()
        try:
            # a kernel that may compute beside others does not spin on their cores
            share = sharing_environment() if jobs > 1 and not alone[name] else {}
            if client is None:
                out = execute_notebook(name, params, output_dir=book_dir, progress=bars,
                                       kernel_env=share)
                device, seconds = None, time.perf_counter() - t0
            else:  # the worker's device and time, not this machine's nor the wait for a slot
                out, device, seconds = submit_chapter(client, name, params, book_dir,
                                                      recorded_as, share)
        except Exception as err:  # NotebookFailed, or a dead kernel, a timeout: collected
            say(f"{head}: FAILED after {time.perf_counter() - t0:.0f} s")
            text = str(err) if isinstance(err, NotebookFailed) else (
                f"notebooks/{name}.py: {type(err).__name__}: {err}")
            return {"status": "failed", "reason": text.splitlines()[0]}, text
        record_execution(out, inputs, seconds, device=device)
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
    with contextlib.ExitStack() as stack:
        client = stack.enter_context(engine(workers, scheduler, progress=progress))
        if client is not None:  # one bar of every task on the cluster: chapters and folds
            stack.enter_context(cluster_progress(client, progress=progress, interval=2.0))
        pool = stack.enter_context(ThreadPoolExecutor(max_workers=jobs))
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
    engine_args = parser.add_mutually_exclusive_group()
    engine_args.add_argument("--workers", type=int,
                             help="run the chapters, and the folds they train, as tasks on "
                                  "a local Dask cluster of this many processes")
    engine_args.add_argument("--scheduler",
                             help="run them on the running Dask scheduler at this address "
                                  "(e.g. a Slurm cluster's, through dask-jobqueue)")
    args = parser.parse_args(argv)
    try:
        if args.build_only:
            build_book()
        else:
            run_profile(args.profile, args.only, build=not args.no_build,
                        progress=not args.no_progress, force=args.force, jobs=args.jobs,
                        workers=args.workers, scheduler=args.scheduler)
    except NotebookFailed as err:
        print(f"\nFAILED: {err}", file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as err:
        print(f"\nFAILED: the book build exited with status {err.returncode}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
