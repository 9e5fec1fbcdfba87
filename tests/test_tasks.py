"""Folds as tasks on Dask (emolib.tasks, run_decoding's ``workers`` and ``scheduler``): the
same numbers as the serial run, a killed worker's fold retried to the same numbers, results
in the tasks' order, errors that name the task, the Slurm job script dask-jobqueue would
submit."""

from __future__ import annotations

import math
import operator
import os
import signal
import threading
import time

import pandas as pd
import pytest

from emolib.decoding import load_decoding, run_decoding
from emolib.models import TrainConfig
from emolib.tasks import (
    cluster_progress,
    engine,
    leave_worker_slot,
    local_cluster,
    run_tasks,
    slurm_job_script,
    threads_per_task,
)

pytest.importorskip("distributed")

from distributed import Client  # noqa: E402


@pytest.fixture(scope="module")
def tiny_prepared(tiny_dataset, tmp_path_factory):
    from emolib.forrest import prepare_dataset
    from tests.conftest import TINY_TIMING

    return prepare_dataset(tiny_dataset / "ds000113", tiny_dataset / "annotations",
                           tmp_path_factory.mktemp("tasks") / "prep", timing=TINY_TIMING,
                           min_count=10, n_per_class=10, seed=0, progress=False)


def test_serial_tasks_keep_order_and_name_the_failing_task():
    assert run_tasks(operator.mul, [(2, 3), (4, 5), (6, 7)]) == [6, 20, 42]
    assert run_tasks(operator.mul, []) == []
    with pytest.raises(ValueError, match="math domain error") as err:
        run_tasks(math.sqrt, [(4.0,), (-1.0,)], names=["four", "minus one"])
    assert "in minus one" in err.value.__notes__


def test_bad_engine_arguments_are_refused():
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="workers must be None"):
            run_tasks(operator.mul, [(1, 2)], workers=bad)
    with pytest.raises(ValueError, match="not both"):
        run_tasks(operator.mul, [(1, 2)], workers=2, scheduler="tcp://127.0.0.1:1")
    with pytest.raises(ValueError, match="2 names for 1 tasks"):
        run_tasks(operator.mul, [(1, 2)], names=["a", "b"])
    assert threads_per_task(None) is None
    assert threads_per_task(10 ** 6) == 1
    with engine() as client:  # neither: serial, no Dask
        assert client is None
    with pytest.raises(ValueError, match="not both"), engine(2, "tcp://127.0.0.1:1"):
        pass
    assert leave_worker_slot() is False  # outside a worker: nothing to leave


def test_cluster_tasks_keep_order_and_raise_the_task_error():
    """On a 2-worker local cluster: results in the tasks' order, a failing task's own error
    (after its retries) with a note naming it, and this process's environment untouched."""
    before = dict(os.environ)
    tasks = [(i, i + 1) for i in range(8)]
    assert run_tasks(operator.mul, tasks, workers=2, progress=False) == [a * b for a, b in tasks]
    assert dict(os.environ) == before
    with pytest.raises(ValueError, match="math domain error") as err:
        run_tasks(math.sqrt, [(4.0,), (-1.0,)], names=["four", "minus one"], workers=2,
                  retries=1, progress=False)
    assert any("in minus one" in note for note in err.value.__notes__)


def test_cluster_workers_get_their_thread_count_and_no_malloc_trim():
    """The workers' BLAS/OpenMP variables are the cluster's thread count, distributed's
    MALLOC_TRIM_THRESHOLD_ (1.8x slower training here) is not set; each worker knows its
    number (one GPU per worker), and this process is no worker. A task that waits (a
    chapter, for its kernel and folds) leaves its slot to others; the progress tally counts
    every task on the scheduler, the nested ones too."""
    from emolib.tasks import worker_index

    with local_cluster(2, threads=1) as cluster, Client(cluster) as client:
        envs = client.run(lambda: {k: os.environ.get(k) for k in
                                   ("OMP_NUM_THREADS", "MALLOC_TRIM_THRESHOLD_")})
        indices = [client.submit(worker_index, pure=False, workers=[addr]).result()
                   for addr in client.scheduler_info(n_workers=-1)["workers"]]
        # two tasks that wait for tasks of their own, on 2 workers of one thread each: they
        # give their slots back (else nothing is left to run the children)
        def parent(x):
            from distributed import get_client

            from emolib.tasks import leave_worker_slot

            seceded = leave_worker_slot()
            return seceded, get_client().submit(operator.mul, x, 2).result()

        # one tally of every task on the scheduler, whoever submitted it: the two parents,
        # the children they submitted, and one that fails
        with cluster_progress(client, progress=False) as tally:
            parents = [client.submit(parent, x, pure=False) for x in (3, 4)]
            waited = [f.result(timeout=120) for f in parents]
            with pytest.raises(ValueError, match="math domain error"):
                client.submit(math.sqrt, -1.0, pure=False).result()
            counts = tally.counts()
        plugins = client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.plugins))
    assert waited == [(True, 6), (True, 8)]
    assert counts == {"submitted": 5, "done": 4, "failed": 1, "processing": 0}
    assert not any(p.startswith("emolib-tally") for p in plugins)  # removed at the end
    assert sorted(indices) == [0, 1]
    assert worker_index() is None
    assert len(envs) == 2
    assert all(e == {"OMP_NUM_THREADS": "1", "MALLOC_TRIM_THRESHOLD_": None}
               for e in envs.values())


CFG = TrainConfig(epochs=2, batch_size=16, t_max=2, patience=5, seed=0, augment_noise=1.0)


def test_folds_on_a_local_cluster_match_the_serial_run(tiny_prepared, tmp_path):
    """Two folds as tasks on a 2-worker local cluster: predictions (CNN, linear, chance)
    and learning curves (losses, accuracies, learning rates; not their clock times)
    identical to the serial run with the same thread count; a second run reuses them, one
    with another thread count does not."""
    serial = run_decoding(tiny_prepared, tmp_path / "serial", "run", CFG, folds=[0, 1],
                          progress=False, threads=1)
    cluster = run_decoding(tiny_prepared, tmp_path / "cluster", "run", CFG, folds=[0, 1],
                           progress=False, workers=2, threads=1)
    assert len(serial.folds) == 2
    pd.testing.assert_frame_equal(cluster.predictions, serial.predictions)
    timing = ["seconds"]  # the one column that is a clock, not a result
    pd.testing.assert_frame_equal(cluster.history.drop(columns=timing),
                                  serial.history.drop(columns=timing))
    again = run_decoding(tiny_prepared, tmp_path / "cluster", "run", CFG, folds=[0, 1],
                         progress=False, workers=2, threads=1)
    assert set(again.reuse["status"]) == {"reuse"}
    # the thread count is part of a fold's inputs: another one does not reuse it
    other = run_decoding(tiny_prepared, tmp_path / "cluster", "run", CFG, folds=[0],
                         progress=False, threads=2)
    assert list(other.reuse["status"]) == ["stale"]


def test_a_killed_worker_is_replaced_and_its_fold_ends_the_same(tiny_prepared, tmp_path):
    """A worker is SIGKILLed while its fold is between epochs (checkpoint written, fold not
    done): the nanny replaces it, the scheduler reruns the fold, which resumes from its
    checkpoint, and the decoding ends with the serial run's numbers; nothing of the killed
    fold was left half-written."""
    cfg = TrainConfig(epochs=20, batch_size=16, t_max=20, patience=50, seed=0,
                      augment_noise=1.0)
    reference = run_decoding(tiny_prepared, tmp_path / "serial", "run", cfg, folds=[0],
                             progress=False, threads=1)
    out = tmp_path / "cluster"
    killed = {}
    with local_cluster(2, threads=1) as cluster, Client(cluster) as client:
        pids = client.run(os.getpid)
        box = {}
        thread = threading.Thread(target=lambda: box.setdefault("result", run_decoding(
            tiny_prepared, out, "run", cfg, folds=[0], progress=False,
            scheduler=cluster.scheduler_address, threads=1)))
        thread.start()
        deadline = time.monotonic() + 120
        while not killed and time.monotonic() < deadline and thread.is_alive():
            for fdir in sorted(out.glob("fold-*")):
                if (fdir / "checkpoint.pt").exists() and not (fdir / "done.json").exists():
                    name = fdir.name.removeprefix("fold-")
                    for addr, keys in client.processing().items():
                        if any(f"fold_{name}-" in str(k) for k in keys):
                            os.kill(pids[addr], signal.SIGKILL)
                            killed.update(fold=fdir, pid=pids[addr],
                                          files=sorted(p.name for p in fdir.iterdir()))
                            break
                if killed:
                    break
            time.sleep(0.01)
        thread.join(timeout=300)
        assert killed, "no fold was caught between epochs"
        assert not thread.is_alive()
        client.wait_for_workers(2, timeout=60)
        now = client.run(os.getpid).values()
        assert len(now) == 2 and killed["pid"] not in now  # replaced by a new process
    assert "predictions.csv" not in killed["files"] and "done.json" not in killed["files"]
    result = box["result"]
    pd.testing.assert_frame_equal(result.predictions, reference.predictions)
    pd.testing.assert_frame_equal(load_decoding(out).predictions, reference.predictions)


def test_slurm_job_script_is_what_dask_jobqueue_would_submit():
    pytest.importorskip("dask_jobqueue")
    script = slurm_job_script(cores=4, memory="16GB", walltime="02:00:00", gpus=1,
                              queue="gpu", account="lab")
    assert script.startswith("#!/usr/bin/env bash")
    for line in ("#SBATCH -p gpu", "#SBATCH -A lab", "#SBATCH -n 1", "#SBATCH --cpus-per-task=4",
                 "#SBATCH -t 02:00:00", "#SBATCH --gres=gpu:1"):
        assert line in script, (line, script)
    assert "distributed.cli.dask_worker" in script and "--nthreads 4" in script
