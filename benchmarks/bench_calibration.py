"""Calibration of the decoding null: its size over many null datasets, with binomial bounds.

A p-value's promise is about many datasets, so it is measured over many
(:func:`emolib.decoding.calibration.null_pvalues`): each realisation is a generated
StudyForrest-shaped dataset in which nothing is planted (2 subjects, 3 overlapping runs of 90
volumes, 12 x 12 x 10 voxels, generated annotations, its own seed), prepared as the book prepares
data, split by run, decoded by the linear baseline exactly as in
:func:`emolib.decoding.run_decoding`, and tested with the time-aware permutation null
(:func:`emolib.decoding.permutation_test`: the exact group of shifts, or 199 uniform draws).
With ``--cnn N`` the first N realisations run the whole pipeline with the CNN (4 epochs).

Printed: the size ``P(p <= alpha)`` at alpha 0.05 and 0.01 with 95 % Clopper-Pearson intervals,
as ``CALIBRATION`` lines. A calibrated test has a size within sampling error of alpha.

Usage::

    python benchmarks/bench_calibration.py                 # 200 null datasets, linear baseline
    python benchmarks/bench_calibration.py --n 40 --cnn 4  # smaller, with the CNN
"""

from __future__ import annotations

import argparse
import tempfile
import time

from emolib.decoding.calibration import null_pvalues, size_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="null datasets (linear baseline)")
    parser.add_argument("--cnn", type=int, default=0, help="of which also decoded by the CNN")
    parser.add_argument("--seed", type=int, default=1000)
    args = parser.parse_args()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        pvals = null_pvalues(tmp, args.n, args.seed, cnn=args.cnn, progress=False)
    print(f"{args.n} null datasets in {time.perf_counter() - t0:.0f} s")
    for row in size_table(pvals).itertuples():
        print(f"CALIBRATION size {row.model} alpha={row.alpha} = {row.size:.3f} "
              f"[{row.low:.3f}, {row.high:.3f}] over {row.n_datasets} null datasets")


if __name__ == "__main__":
    main()
