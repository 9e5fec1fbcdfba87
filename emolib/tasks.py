"""Independent tasks on one engine: in this process, on a local Dask cluster, or on a cluster
somebody already runs (a lab's Slurm allocation through ``dask-jobqueue``, a cloud cluster).

A generic engine: nothing here knows of either study. The unit is a *task*: a top-level
function and its arguments, whose result is small (what it computed lies in the folder it
wrote, atomically, so that a task that dies leaves nothing half-written and a retried task
resumes or redoes it). :func:`run_tasks` returns the results in the order of the tasks,
whatever the order they finished in.

Why Dask's ``distributed`` and not joblib: a worker that dies (killed, out of memory, a node
lost) is replaced and its task rescheduled (up to ``distributed.scheduler.allowed-failures``
times, 3 by default), the same client code attaches to a
scheduler anywhere (``scheduler="tcp://host:8786"``), and ``dask-jobqueue`` starts workers as
Slurm, PBS or SGE jobs (:func:`slurm_job_script` shows the script it would submit). joblib's
process pool stops the whole map when one worker dies.

Numbers: a task's result must not depend on where it ran. What can change it is the number
of threads each task computes with (sums split across threads round differently), so a task
that cares takes its thread count as an argument and sets it itself; :func:`threads_per_task`
gives the default for a local cluster (the cores shared by its workers).
"""

from __future__ import annotations

import importlib.util
import os
import uuid
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["dashboard_link", "have_dask", "local_cluster", "run_tasks", "slurm_job_script",
           "threads_per_task", "worker_index"]

#: What a worker's BLAS and OpenMP pools are limited to, set in each local worker's environment.
_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def have_dask() -> bool:
    """Whether ``dask.distributed`` can be imported here."""
    return importlib.util.find_spec("distributed") is not None


def threads_per_task(workers: int | None) -> int | None:
    """Threads for each task of a local cluster of ``workers`` processes: the machine's cores
    shared among them (at least one); ``None`` (leave the process's setting) when serial."""
    if not workers:
        return None
    return max(1, (os.cpu_count() or 1) // int(workers))


def worker_index() -> int | None:
    """This process's number among a local cluster's workers (0, 1, ...: their names), or
    None outside a Dask worker or for a worker named otherwise. A task uses it to take one
    GPU per worker (``cuda:<index % device count>``)."""
    if not have_dask():
        return None
    from distributed import get_worker

    try:
        name = get_worker().name
    except ValueError:  # not in a worker
        return None
    return name if isinstance(name, int) else None


def _require_dask():
    if not have_dask():
        raise ImportError("running tasks on a Dask cluster needs dask.distributed "
                          "(pip install 'distributed'); workers=None runs them serially")


def dashboard_link(client) -> str | None:
    """The Dask dashboard's address, or None where it is not served (bokeh not installed)."""
    try:
        return client.dashboard_link if importlib.util.find_spec("bokeh") else None
    except (AttributeError, KeyError):
        return None


def _validate(workers: int | None, scheduler: str | None) -> None:
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                or workers < 1):
        raise ValueError(f"workers must be None (serial) or a positive integer, not {workers!r}")
    if scheduler is not None and workers is not None:
        raise ValueError("give workers (a local cluster) or scheduler (an existing one), "
                         "not both")
    if scheduler is not None and not isinstance(scheduler, str):
        raise TypeError(f"scheduler must be an address such as 'tcp://host:8786', "
                        f"not {scheduler!r}")


def run_tasks(
    func: Callable[..., Any],
    tasks: Sequence[tuple],
    *,
    names: Sequence[str] | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    threads: int | None = None,
    retries: int = 0,
    progress: bool = True,
    desc: str = "tasks",
) -> list:
    """Run ``func(*args)`` for every ``args`` in ``tasks``; the results in the tasks' order.

    Parameters
    ----------
    func : callable
        A module-level function (workers import it by name).
    tasks : sequence of tuple
        Positional arguments of each call. They travel to the workers pickled: pass folders,
        not large arrays.
    names : sequence of str, optional
        A name per task, for progress and errors (default ``task 0``, ``task 1``, ...).
    workers : int, optional
        ``None``: one after another in this process (no Dask needed). An integer: a local
        Dask cluster of that many worker processes, started here and closed at the end.
    scheduler : str, optional
        Address of a running Dask scheduler to submit to instead (its workers must import
        ``func``'s package); not with ``workers``.
    threads : int, optional
        BLAS and OpenMP threads of each local worker (environment variables set before the
        workers start); default :func:`threads_per_task`. Tasks that compute with torch set
        their own thread count (it changes the rounding): pass it to them as an argument.
    retries : int, default=0
        How many times Dask reruns a task that raised (a task whose worker died is rerun
        anyway, up to ``distributed.scheduler.allowed-failures`` times). Errors of the
        folds' own are deterministic: none by default.
    progress : bool, default=True
        A bar of finished tasks (and, for a cluster, its dashboard's address when served).
    desc : str, default="tasks"
        The bar's label.

    Raises
    ------
    Exception
        The first task's error that remains after its retries, of its own type, with a note
        naming the task.
    """
    _validate(workers, scheduler)
    tasks = [tuple(t) for t in tasks]
    names = [f"task {i}" for i in range(len(tasks))] if names is None else list(names)
    if len(names) != len(tasks):
        raise ValueError(f"{len(names)} names for {len(tasks)} tasks")
    if not tasks:
        return []
    if workers is None and scheduler is None:
        return _run_serial(func, tasks, names)
    _require_dask()
    from distributed import Client

    if scheduler is not None:
        with Client(scheduler, set_as_default=False) as client:
            return _run_on(client, func, tasks, names, retries, progress, desc)
    with local_cluster(workers, threads) as cluster, \
            Client(cluster, set_as_default=False) as client:
        return _run_on(client, func, tasks, names, retries, progress, desc)


def local_cluster(workers: int, threads: int | None = None):
    """A local Dask cluster of ``workers`` processes, one task at a time each, to pass (its
    ``scheduler_address``) to several calls, or to use as a context manager.

    Each worker's BLAS and OpenMP pools get ``threads`` threads (default
    :func:`threads_per_task`), through the workers' environment only. distributed's default
    ``MALLOC_TRIM_THRESHOLD_=65536`` is not set: it made training in a worker 1.8x slower
    here (every large tensor allocation mapped and unmapped again). This process's
    environment is left as it was (the nanny writes its variables into it).
    """
    _validate(workers, None)
    _require_dask()
    import dask
    from distributed import LocalCluster

    n_threads = threads or threads_per_task(workers)
    env = {var: str(n_threads) for var in _THREAD_VARS}
    saved = dict(os.environ)
    try:
        with dask.config.set({f"distributed.nanny.pre-spawn-environ.{var}": None
                              for var in ("MALLOC_TRIM_THRESHOLD_", *_THREAD_VARS)}):
            return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                dashboard_address=":0" if importlib.util.find_spec("bokeh")
                                else None, env=env)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _run_serial(func, tasks, names) -> list:
    out = []
    for name, args in zip(names, tasks, strict=True):
        try:
            out.append(func(*args))
        except Exception as err:
            err.add_note(f"in {name}")
            raise
    return out


def _run_on(client, func, tasks, names, retries, progress, desc) -> list:
    from distributed import as_completed
    from tqdm.auto import tqdm

    link = dashboard_link(client)
    if progress:
        n = len(client.scheduler_info(n_workers=-1).get("workers", {}))
        print(f"{desc}: {len(tasks)} on {n} Dask workers"
              + (f"; dashboard {link}" if link else ""), flush=True)
    futures = [client.submit(func, *args, key=f"{_key(name)}-{uuid.uuid4().hex}",
                             pure=False, retries=retries)
               for i, (name, args) in enumerate(zip(names, tasks, strict=True))]
    index = {f.key: i for i, f in enumerate(futures)}
    results: list = [None] * len(futures)
    bar = tqdm(total=len(futures), desc=desc, disable=not progress)
    try:
        for future in as_completed(futures, loop=client.loop):
            i = index[future.key]
            try:
                results[i] = future.result()
            except Exception as err:
                err.add_note(f"in {names[i]}, on the Dask cluster")
                raise
            bar.update(1)
    finally:
        bar.close()
        for f in futures:
            f.release()
    return results


def _key(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def slurm_job_script(cores: int = 8, memory: str = "32GB", walltime: str = "04:00:00",
                     processes: int = 1, gpus: int = 0, queue: str | None = None,
                     account: str | None = None, **kwargs) -> str:
    """The Slurm job script ``dask_jobqueue.SLURMCluster`` would submit for each worker job.

    On a cluster: ``cluster = SLURMCluster(**same arguments); cluster.scale(jobs=N)`` and pass
    ``cluster.scheduler_address`` as ``scheduler`` to :func:`run_tasks` (or to any function
    of this package that takes one). Offline, the script shows what would be asked of Slurm.

    Parameters
    ----------
    cores, memory, walltime, processes, queue, account
        ``SLURMCluster``'s own arguments (cores and memory per job, workers per job).
    gpus : int, default=0
        GPUs per job (``--gres=gpu:N``); with one worker per GPU, ``processes=gpus``.
    **kwargs
        Any other ``SLURMCluster`` argument (``job_extra_directives``, ``python``, ...).
    """
    _require_dask()
    if importlib.util.find_spec("dask_jobqueue") is None:
        raise ImportError("the Slurm job script needs dask-jobqueue (pip install dask-jobqueue)")
    from dask_jobqueue import SLURMCluster

    extra = list(kwargs.pop("job_extra_directives", []))
    if gpus:
        extra.append(f"--gres=gpu:{int(gpus)}")
    with SLURMCluster(cores=cores, memory=memory, walltime=walltime, processes=processes,
                      queue=queue, account=account, job_extra_directives=extra,
                      scheduler_options={"dashboard_address": None}, **kwargs) as cluster:
        return cluster.job_script()
