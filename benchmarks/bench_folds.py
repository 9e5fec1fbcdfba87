"""Benchmark: cross-validation folds as tasks on a local Dask cluster against the serial run,
and what the paper profile would cost on N workers.

The job: :func:`emolib.decoding.run_decoding` on a generated dataset in the demo's layout
(``--subjects`` subjects, ``--shape`` grid, the original class selection), ``--folds`` run
folds of ``--epochs`` epochs each, with the linear and chance baselines.

- *serial*: the folds one after another in this process, on all its torch threads (what the
  book did before; the demo's default without a cluster).
- *cluster*: the same folds as tasks on a local cluster of ``--workers`` processes, the
  cores shared among them (:func:`emolib.tasks.threads_per_task`: one thread each on 2
  cores), cluster start included.

Like for like: the same data, folds, configuration and seed; each side starts from an empty
output folder (nothing reused); the data preparation is timed on neither; both run once in
the same process, serial first. The numbers differ between the sides only by rounding (a
fold's result depends on its thread count: tests/test_tasks.py checks identity at equal
threads). On 2 cores expect little: the serial run already uses both cores inside each
convolution, and what the cluster gains is the part of a training step that does not scale
with threads (small kernels, the optimiser, batch norm), about 1.4x in throughput here,
less the cluster's start and the last fold that runs alone.

Then, with ``--throughput`` (full-size training volumes per second of one worker, as
``bench_training.py`` measures it; on a GPU, measure it there), the arithmetic toward the
paper profile (8 run folds, up to 50 epochs, 15 subjects at 80 x 80 x 35):
:func:`emolib.book.perf.paper_training_cost`, as the performance chapter shows it.

    .venv/bin/python benchmarks/bench_folds.py [--folds 4] [--epochs 3] [--workers 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from emolib.book.perf import paper_training_cost
from emolib.decoding import run_decoding
from emolib.forrest import prepare_dataset
from emolib.models import TrainConfig
from emolib.synthetic import generate_studyforrest


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--folds", type=int, default=4, help="run folds (of 8)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--subjects", type=int, default=3)
    ap.add_argument("--shape", type=int, nargs=3, default=(24, 24, 12))
    ap.add_argument("--throughput", type=float, default=None,
                    help="full-size training volumes/s of one process, for the paper "
                         "arithmetic (bench_training.py); omitted: no arithmetic")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ds = generate_studyforrest(root / "ds", n_subjects=args.subjects,
                                   shape=tuple(args.shape), effect_size=0.02, seed=0,
                                   progress=False)
        prep = prepare_dataset(ds / "ds000113", ds / "annotations", root / "prep", seed=0,
                               progress=False)
        cfg = TrainConfig(epochs=args.epochs, t_max=args.epochs, patience=args.epochs,
                          augment_noise=1.0, seed=0)
        folds = list(range(args.folds))
        print(f"job: {args.folds} run folds x {args.epochs} epochs, {args.subjects} subjects "
              f"at {'x'.join(map(str, args.shape))}, {int(prep.samples['selected'].sum())} "
              f"samples; torch threads here {torch.get_num_threads()}", flush=True)
        t0 = time.perf_counter()
        run_decoding(prep, root / "serial", "run", cfg, folds=folds, progress=False)
        serial = time.perf_counter() - t0
        t0 = time.perf_counter()
        run_decoding(prep, root / "cluster", "run", cfg, folds=folds, progress=False,
                     workers=args.workers)
        cluster = time.perf_counter() - t0
    print(f"serial ({torch.get_num_threads()} threads):  {serial:6.1f} s")
    print(f"local cluster ({args.workers} workers): {cluster:6.1f} s (cluster start included)")
    print(f"RATIO folds wall time serial / {args.workers}-worker cluster = "
          f"{serial / cluster:.2f}")
    if args.throughput:
        print(f"\npaper profile, run split (8 folds, up to 50 epochs, 15 subjects, 80x80x35), "
              f"at {args.throughput:g} full-size volumes/s per worker:")
        for row in paper_training_cost(args.throughput).itertuples():
            print(f"  {row.workers} worker(s): {row.rounds} round(s) of {row.fold_hours:.1f} h "
                  f"= {row.total_hours:.1f} h")

if __name__ == "__main__":
    main()
