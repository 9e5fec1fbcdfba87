"""Coverage of the decoding intervals over simulated decodings: jackknife vs bootstrap, blocks.

The job: ``--n`` simulated decodings (:func:`emolib.decoding.coverage.simulate_held_out`: 4 run
folds of 450 two-second steps, labels in episodes of 20 steps on average, outputs AR(1) along
time with coefficient ``--phi`` per step, 3 subjects per moment, 44 selected moments per fold),
by a model that learned nothing (``--signal 0``: true macro AUC 0.5) or something (``--signal
1``: true AUC by Monte Carlo, :func:`emolib.decoding.coverage.true_macro_auc`). On the same
datasets: the 95 % delete-one-block jackknife t-interval of the fold-averaged macro AUC
(:func:`emolib.decoding.block_jackknife`) over blocks of ``--blocks`` seconds, and the
percentile block bootstrap (:func:`emolib.decoding.cluster_bootstrap`, ``--n-boot`` draws) over
single moments and 60-s blocks. Printed: per method and unit the share of intervals that
contain the true value with its exact (Clopper-Pearson) 95 % interval, and the mean width, as
``COVERAGE`` lines. No timings: this measures a statistical promise, not speed. With
``--labels DIR`` the labels are the real movie's consensus labels from the annotation files in
``DIR`` (:func:`emolib.decoding.coverage.consensus_sequence`) instead of the Markov episodes.

Usage::

    python benchmarks/bench_interval_coverage.py                  # 300 datasets per setting
    python benchmarks/bench_interval_coverage.py --n 100 --phi 0.9 --signal 0
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pandas as pd  # noqa: E402

from emolib.decoding.coverage import consensus_sequence, interval_coverage  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=300, help="simulated decodings per setting")
    parser.add_argument("--n-boot", type=int, default=200, help="bootstrap draws per interval")
    parser.add_argument("--blocks", type=float, nargs="+", default=[30.0, 60.0, 120.0],
                        help="block lengths (s) of the jackknife")
    parser.add_argument("--phi", type=float, nargs="+", default=[0.9, 0.5],
                        help="AR(1) coefficients of the outputs per 2-s step")
    parser.add_argument("--signal", type=float, nargs="+", default=[0.0, 1.0],
                        help="score added to the true class (0: null)")
    parser.add_argument("--no-bootstrap", action="store_true", help="jackknife only")
    parser.add_argument("--labels", help="annotation folder: the real movie's label sequence")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    labels = None if args.labels is None else consensus_sequence(args.labels)
    tables = []
    for signal in args.signal:
        for phi in args.phi:
            common = dict(seed=args.seed, phi=phi, signal=signal, labels=labels, progress=False)
            parts = [interval_coverage(args.n, args.blocks, methods=("jackknife",), **common)]
            if not args.no_bootstrap:  # the same datasets (same seed)
                parts.append(interval_coverage(args.n, (None, 60.0), methods=("bootstrap",),
                                               n_boot=args.n_boot, **common))
            tables.append(pd.concat(parts).assign(phi=phi, signal=signal))
    table = pd.concat(tables, ignore_index=True)
    with pd.option_context("display.width", 140):
        print(table.round(3).to_string(index=False))
    for _, row in table.iterrows():
        print(f"COVERAGE signal={row['signal']:g} phi={row['phi']:g} {row['method']} "
              f"{row['unit']} = {row['coverage']:.3f} [{row['low']:.3f}, {row['high']:.3f}] "
              f"(truth {row['truth']:.3f}, nominal 0.95, width {row['mean_width']:.3f})")


if __name__ == "__main__":
    main()
