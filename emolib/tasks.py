"""Independent tasks on one engine: in this process, on a local Dask cluster, or on a cluster
somebody already runs (a lab's Slurm allocation through ``dask-jobqueue``, a cloud cluster).

A generic engine: nothing here knows of either study. The unit is a *task*: a top-level
function and its arguments, whose result is small (what it computed lies in the folder it
wrote, atomically, so that a task that dies leaves nothing half-written and a retried task
resumes or redoes it). :func:`run_tasks` returns the results in the order of the tasks,
whatever the order they finished in. :func:`engine` holds one client for many submissions
(the book's chapters, each a task that waits on its kernel and leaves its worker's slot to
the folds: :func:`leave_worker_slot`); :func:`cluster_progress` draws one bar of every task
on the scheduler, whoever submitted it.

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

import contextlib
import importlib.util
import os
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

__all__ = ["ClusterProgress", "cluster_progress", "dashboard_link", "engine", "have_dask",
           "leave_worker_slot", "local_cluster", "run_tasks", "scheduler_address",
           "sharing_environment", "slurm_job_script", "task_key", "thread_environment",
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
    worker = _current_worker()
    name = worker.name if worker is not None else None
    return name if isinstance(name, int) else None


def _current_worker():
    """The Dask worker running this code, or None (not in a worker, or no Dask here)."""
    if not have_dask():
        return None
    from distributed import get_worker

    try:
        return get_worker()
    except ValueError:  # not in a worker
        return None


def leave_worker_slot() -> bool:
    """Called by a task that mostly waits (on a subprocess, or on tasks it submitted to the
    same cluster): it gives its worker's thread back to the cluster (``distributed.secede``)
    so that the tasks it waits for can run there. A no-op outside a Dask worker; returns
    whether it seceded."""
    if _current_worker() is None:
        return False
    from distributed import secede

    secede()
    return True


def thread_environment() -> dict[str, str | None]:
    """This process's BLAS and OpenMP thread settings (the variables a local cluster sets in
    its workers' environment; None for one not set), to hand to a task that starts a process
    which should compute as it would have here (the book's chapters give them to their
    kernel: the Popen environment of that process only, never the worker's own, which its
    torch reads when it first computes)."""
    return {var: os.environ.get(var) for var in _THREAD_VARS}


def sharing_environment(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for a process that computes beside others on the same cores (the book's
    chapters that run at the same time): its OpenMP threads sleep while they wait
    (``OMP_WAIT_POLICY=PASSIVE``) instead of spinning on cores the others need. Empty where
    ``env`` (default: this process's environment) sets a policy already.

    Measured on 2 cores, a training step of EmotionCNN at 24 x 24 x 12 (batch 32) with 2
    threads beside two 1-thread ones: 1.07-1.67 s passive, 1.94-2.30 s spinning (1.55-1.82 s
    with 1 thread); alone, passive cost 0.67 s against 0.63 s.
    """
    env = os.environ if env is None else env
    return {} if "OMP_WAIT_POLICY" in env else {"OMP_WAIT_POLICY": "PASSIVE"}


def scheduler_address(client) -> str:
    """The scheduler's own address (what it listens on), to hand to code that runs on the
    cluster's machines: the address this client dialled may be a tunnel's
    (``tcp://localhost:8786``) that a worker cannot reach."""
    try:
        return client.scheduler_info(n_workers=0)["address"]
    except (KeyError, TypeError):
        return client.scheduler.address


@contextlib.contextmanager
def engine(workers: int | None = None, scheduler: str | None = None,
           threads: int | None = None, progress: bool = True) -> Iterator[Any]:
    """A Dask client for many submissions, for the time of a ``with`` block: on a local
    cluster of ``workers`` processes started here (:func:`local_cluster`, closed at the end)
    or on the running scheduler at ``scheduler``; ``None`` (no Dask) when neither is given.

    :func:`scheduler_address` of the client is what to hand on to code that submits tasks
    of its own (:func:`run_tasks`' ``scheduler``), so that everything runs on the one
    cluster: :func:`cluster_progress` and its dashboard (printed when ``progress`` and
    served) then show every task.
    """
    _validate(workers, scheduler)
    if workers is None and scheduler is None:
        yield None
        return
    _require_dask()
    from distributed import Client

    with contextlib.ExitStack() as stack:
        cluster = stack.enter_context(local_cluster(workers, threads)) if workers else None
        client = stack.enter_context(Client(cluster or scheduler, set_as_default=False))
        if progress:
            link = dashboard_link(client)
            where = f"a local Dask cluster of {workers} workers" if workers else \
                f"the Dask scheduler at {scheduler}"
            print(f"tasks run on {where}" + (f"; dashboard {link}" if link else ""),
                  flush=True)
        yield client


def _tally_plugin(name: str):
    """A scheduler plugin that counts the tasks submitted to the scheduler (by any client: the
    chapters' and the folds' alike), finished, failed and processing. Defined here, not at module
    level, so that it travels to a remote scheduler by value (no emolib needed there)."""
    from distributed.diagnostics.plugin import SchedulerPlugin

    class TaskTally(SchedulerPlugin):
        # only tasks submitted since the tally began: on a shared scheduler, those already
        # there when it began neither end in the bar nor make its counts negative
        def __init__(self):
            self.name = name
            self.keys, self.on_workers = set(), set()
            self.counts = {"submitted": 0, "done": 0, "failed": 0, "processing": 0}

        def update_graph(self, scheduler, *, tasks=(), **kwargs):
            new = set(tasks) - self.keys
            self.keys |= new
            self.counts["submitted"] += len(new)

        def transition(self, key, start, finish, *args, **kwargs):
            if key not in self.keys:
                return
            if finish == "processing":
                self.on_workers.add(key)
            elif start == "processing":
                self.on_workers.discard(key)
            self.counts["processing"] = len(self.on_workers)
            if start == "processing" and finish == "memory":
                self.counts["done"] += 1
            elif finish == "erred":
                self.counts["failed"] += 1

    return TaskTally()


class ClusterProgress:
    """What :func:`cluster_progress` yields: ``counts()``, the scheduler's tally now."""

    def __init__(self, client, name: str):
        self._client, self._name = client, name

    def counts(self) -> dict[str, int]:
        """``{"submitted", "done", "failed", "processing"}``: tasks since the tally began
        (processing: on a worker, running or queued there, as Dask counts them)."""
        name = self._name
        return self._client.run_on_scheduler(
            lambda dask_scheduler: dict(dask_scheduler.plugins[name].counts))


@contextlib.contextmanager
def cluster_progress(client, desc: str = "tasks on the cluster", progress: bool = True,
                     interval: float = 1.0) -> Iterator[ClusterProgress]:
    """One terminal bar of every task the cluster runs while the block runs: those this
    process submits and those others submit to the same scheduler (a chapter's kernel
    submitting its folds): those that ended (finished or failed) out of those submitted, with
    those on workers (processing) and the failed ones.

    The tally is a scheduler plugin (removed at the end); the bar is redrawn every
    ``interval`` seconds from a thread of this process (``progress=False``: no bar, the tally
    still kept). Print beside it with ``tqdm.write``.
    """
    from tqdm.auto import tqdm

    name = f"emolib-tally-{uuid.uuid4().hex}"
    try:
        client.register_plugin(_tally_plugin(name), name=name)
    except Exception as err:  # a scheduler that takes no plugins: the work goes on, unseen
        print(f"no progress bar of the cluster's tasks ({type(err).__name__}: {err})",
              flush=True)
        yield None
        return
    tally = ClusterProgress(client, name)
    stop = threading.Event()
    bar = tqdm(total=0, desc=desc, unit="task", disable=not progress, dynamic_ncols=True)

    def draw() -> None:
        try:
            counts = tally.counts()
        except Exception:  # the scheduler is going away: the last drawing stands
            return
        bar.total = counts["submitted"]
        bar.n = counts["done"] + counts["failed"]
        bar.set_postfix(processing=counts["processing"], failed=counts["failed"], refresh=False)
        bar.refresh()

    def loop() -> None:
        while not stop.wait(interval):
            draw()

    thread = threading.Thread(target=loop, name=name, daemon=True)
    if progress:
        thread.start()
    try:
        yield tally
    finally:
        stop.set()
        if progress:
            thread.join()
            draw()
        bar.close()
        with contextlib.suppress(Exception):
            client.unregister_scheduler_plugin(name)


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
    futures = [client.submit(func, *args, key=task_key(name),
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


def task_key(name: str) -> str:
    """A unique Dask key that shows ``name`` on the dashboard (``name`` made safe, then a
    random suffix: a task submitted twice is two tasks, not one cached result)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    return f"{safe}-{uuid.uuid4().hex}"


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
