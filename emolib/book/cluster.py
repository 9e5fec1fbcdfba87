"""The book's chapters as tasks on a Dask cluster, beside the folds they train.

``python -m emolib.book --workers N`` (a local cluster started for the run) or
``--scheduler tcp://host:8786`` (one that runs already: a lab's Slurm allocation through
``dask-jobqueue``, :func:`emolib.tasks.slurm_job_script`) makes each chapter's execution one
task of :mod:`emolib.tasks`' engine, and gives the chapters that train folds on a cluster (a
``scheduler`` parameter: 02) the same scheduler, so that the folds are tasks there too: one
cluster, and one view of everything the book runs (a terminal bar; the dashboard if served).

A chapter task only waits for its kernel (papermill starts one as a process on the worker's
machine), so it leaves its worker's slot to the folds (:func:`emolib.tasks.leave_worker_slot`):
a chapter never holds the slot its own folds need. It needs a free slot to *start*, though: on
a cluster whose every worker trains a fold, a chapter that could run beside them (09 while 02
trains) waits for the first of those folds to end (its priority puts it ahead of the queued
ones). On a 2-core machine the thread runner therefore overlaps chapters better; the cluster
pays where it has slots to spare. Its kernel computes with the driver's BLAS/OpenMP thread
settings, not the worker's share of the cores, so a chapter's numbers do not depend on where
it ran (``tests/test_runner.py`` compares them with a run on this process's threads).
On a real cluster the workers must see the repository and the data folder at the same paths
as the driver (a shared file system), as they do for the folds.

Two costs of sharing workers. A kernel is a child of the worker that started it: a worker
that dies (a fold out of memory on it) takes the chapter's kernel along, and Dask runs the
chapter again from its start (its executed notebook replaces the book's only once complete;
its folds resume from their checkpoints), which counts against the task's allowed failures.
And stopping the driver (Ctrl-C) does not stop chapters already running on a scheduler that
outlives it: cancel them there (``client.cancel``, or the dashboard) before running again.

Where a chapter ran stays out of what it is cached and recorded by: it is not an input of
what it computed. The folds give the same numbers on any engine with the same thread count
(``tests/test_tasks.py``), and a chapter that trains folds is given the count its own local
cluster would have used (:func:`engine_parameters`; the count is in each fold's inputs), so
a chapter run on a cluster is reused by a run on threads, and its stage's ``parameters.json``
(which the later chapters' cache keys and the methods chapter read) holds the values a run on
threads would have recorded, not the scheduler's address. The executed page itself says
where it ran (its parameters list shows the address).
"""

from __future__ import annotations

from pathlib import Path

from emolib.tasks import threads_per_task

__all__ = ["CHAPTER_PRIORITY", "engine_parameters", "run_chapter", "submit_chapter"]

#: Dask priority of a chapter's task: above the folds' (0), so that a chapter starts as soon as
#: a slot frees, not behind every fold already queued.
CHAPTER_PRIORITY = 10


def engine_parameters(declared: dict, parameters: dict,
                      address: str | None) -> tuple[dict, dict]:
    """For a chapter that declares ``declared`` (its parameters cell's defaults) and is run
    with ``parameters`` (the profile's), on the cluster whose scheduler is at ``address``:
    the parameters that send its own tasks there, and the values its stage records for them
    instead (those a run on threads records). Both ``{}`` for a chapter that submits no
    tasks (declares no ``scheduler``), for one whose profile trains its folds in its own
    kernel (``workers: null``, no scheduler: it does so on the cluster too), or without a
    cluster. The book's cluster takes the place of one the profile names for the chapter.

    A chapter that declares ``threads`` (each fold's torch threads, which change the
    rounding) gets the count it would have used on its own local cluster
    (:func:`emolib.tasks.threads_per_task` of its ``workers``), unless the profile gives one:
    its folds compute, and are cached, as on threads of this process.
    """
    if address is None or "scheduler" not in declared:
        return {}, {}
    recorded = {k: parameters.get(k, declared[k])
                for k in ("scheduler", "workers", "threads") if k in declared}
    if not recorded.get("scheduler") and recorded.get("workers", 1) is None:
        return {}, {}
    given = {"scheduler": address, **({"workers": None} if "workers" in declared else {})}
    if "threads" in declared:
        given["threads"] = recorded["threads"] if recorded["threads"] is not None else \
            threads_per_task(recorded.get("workers"))
    return given, {k: recorded[k] for k in given}


def run_chapter(name: str, parameters: dict, book_dir: str, thread_env: dict,
                recorded_as: dict, progress: bool = False) -> tuple[str, str, float]:
    """The task: execute chapter ``name`` (:func:`emolib.book.execute.execute_notebook`) into
    ``book_dir`` on this worker, with ``thread_env`` (the driver's thread settings) for its
    kernel, having left the worker's slot to other tasks; ``recorded_as``: the parameter
    values its stage records instead of the engine's. Returns the executed notebook's path,
    the worker machine's device (:func:`emolib.book.incremental.device_name`) and the seconds
    the chapter ran there (not the time it waited for a slot)."""
    import time

    from emolib.book.execute import execute_notebook
    from emolib.book.incremental import device_name
    from emolib.tasks import leave_worker_slot

    leave_worker_slot()
    t0 = time.perf_counter()
    # for the kernel only: torch in this worker, which the folds use, keeps its own threads
    out = execute_notebook(name, parameters, output_dir=Path(book_dir), progress=progress,
                           recorded_as=recorded_as, kernel_env=thread_env)
    return str(out), device_name(), time.perf_counter() - t0


def submit_chapter(client, name: str, parameters: dict, book_dir: Path,
                   recorded_as: dict | None = None,
                   kernel_env: dict[str, str] | None = None) -> tuple[Path, str, float]:
    """Run chapter ``name`` as a task on ``client``'s cluster and wait for it: the executed
    notebook, the device and the seconds it ran (:func:`run_chapter`); its kernel gets this
    process's thread settings and ``kernel_env``. Its errors
    (:class:`emolib.book.execute.NotebookFailed` naming the cell) are raised here. A task
    whose worker died is run again from the start by Dask (the executed notebook replaces
    the book's only once complete)."""
    from emolib.tasks import task_key, thread_environment

    # ahead of queued folds: a chapter waits for a free slot only until a running task ends
    env = {**thread_environment(), **(kernel_env or {})}
    future = client.submit(run_chapter, name, parameters, str(book_dir), env,
                           recorded_as or {}, key=task_key(f"chapter-{name}"), pure=False,
                           priority=CHAPTER_PRIORITY)
    try:
        path, device, seconds = future.result()
        return Path(path), device, seconds
    finally:
        future.release()
