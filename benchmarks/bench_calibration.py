"""Calibration of the decoding null: its size over many null datasets, with binomial bounds.

A p-value's promise is about many datasets, so it is measured over many
(:func:`emolib.decoding.calibration.null_pvalues`): each realisation is a generated
StudyForrest-shaped dataset in which nothing is planted (2 subjects, 3 overlapping runs of 90
volumes, 12 x 12 x 10 voxels, generated annotations, its own seed), prepared as the book prepares
data, split by run, decoded by the linear baseline exactly as in
:func:`emolib.decoding.run_decoding`, and tested with the time-aware permutation null
(:func:`emolib.decoding.permutation_test`: the exact group of shifts, or 199 uniform draws).
With ``--cnn N`` the first N realisations run the whole pipeline with the CNN (4 epochs).
Each decoding also gets its 95 % interval of the macro AUC (block jackknife over 30-s blocks of
movie time, :func:`emolib.decoding.block_jackknife`).

Printed, as ``CALIBRATION`` lines: the size ``P(p <= alpha)`` at alpha 0.05 and 0.01, and the
coverage of the 95 % intervals (how often they contain the true 0.5), each with its 95 %
Clopper-Pearson interval. A calibrated test has a size within sampling error of alpha, a
calibrated interval a coverage within sampling error of 0.95. ``--out`` writes the
per-realisation table (CSV).

Usage::

    python benchmarks/bench_calibration.py                 # 200 null datasets, linear baseline
    python benchmarks/bench_calibration.py --n 40 --cnn 4  # smaller, with the CNN
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings

from emolib.decoding.calibration import coverage_table, null_pvalues, size_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="null datasets (linear baseline)")
    parser.add_argument("--cnn", type=int, default=0, help="of which also decoded by the CNN")
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--block-s", type=float, default=30.0, help="interval block (s)")
    parser.add_argument("--standardize", default="run", choices=("run", "volume"))
    parser.add_argument("--smoothing-fwhm", type=float, default=7.0, help="mm; 0: none")
    parser.add_argument("--high-pass", type=float, default=1 / 128, help="Hz; 0: none")
    parser.add_argument("--augment-noise", type=float, default=1.0, help="CNN input noise SD")
    parser.add_argument("--span-s", type=float, default=20.0, help="leakage guard span (s)")
    parser.add_argument("--scene-size", type=float, default=0.01, help="scene signal size")
    parser.add_argument("--out", help="CSV file for the per-realisation table")
    args = parser.parse_args()
    # generated ds000113 holds a subject without the movie session, as the real one
    warnings.filterwarnings("ignore", message=r"sub-\d+ skipped: no ses-movie")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        pvals = null_pvalues(tmp, args.n, args.seed, cnn=args.cnn, block_s=args.block_s,
                             standardize=args.standardize,
                             smoothing_fwhm=args.smoothing_fwhm or None,
                             high_pass=args.high_pass or None,
                             augment_noise=args.augment_noise, span_s=args.span_s,
                             scene_size=args.scene_size, progress=False)
    if args.out:
        pvals.to_csv(args.out, index=False)
    print(f"{args.n} null datasets in {time.perf_counter() - t0:.0f} s (standardize "
          f"{args.standardize}, smoothing {args.smoothing_fwhm or 0:g} mm, high-pass "
          f"{args.high_pass:g} Hz, CNN input noise "
          f"{args.augment_noise:g}, guard span {args.span_s:g} s, scene signal "
          f"{args.scene_size:g})")
    for row in size_table(pvals).itertuples():
        print(f"CALIBRATION size {row.model} alpha={row.alpha} = {row.size:.3f} "
              f"[{row.low:.3f}, {row.high:.3f}] over {row.n_datasets} null datasets")
    for row in coverage_table(pvals).itertuples():
        print(f"CALIBRATION coverage {row.model} 95% interval = {row.coverage:.3f} "
              f"[{row.low:.3f}, {row.high:.3f}] over {row.n_datasets} null datasets "
              f"(mean width {row.mean_width:.3f})")


if __name__ == "__main__":
    main()
