"""Coverage of the decoding intervals over simulated null decodings: moments vs time blocks.

The job: ``--n`` simulated decodings by a model that learned nothing
(:func:`emolib.decoding.coverage.simulate_held_out`: 4 run folds of 450 two-second steps,
labels in episodes, outputs AR(1) along time, 3 subjects per moment, 44 selected moments per
fold), each summarised by the 95 % bootstrap interval of the fold-averaged macro AUC
(:func:`emolib.decoding.cluster_bootstrap`, ``--n-boot`` draws) with single moments or blocks
of movie time as the resampling unit, on the same datasets. Printed: per unit the share of
intervals that contain the true 0.5 with its exact (Clopper-Pearson) 95 % interval, and the
mean width. No timings: this measures a statistical promise, not speed.

Usage::

    python benchmarks/bench_interval_coverage.py               # 400 datasets, phi 0.9 and 0.5
    python benchmarks/bench_interval_coverage.py --n 100 --blocks 30 60 120
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pandas as pd  # noqa: E402

from emolib.decoding.coverage import interval_coverage  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=400, help="simulated null decodings")
    parser.add_argument("--n-boot", type=int, default=200, help="bootstrap draws per interval")
    parser.add_argument("--blocks", type=float, nargs="+", default=[30.0, 60.0, 120.0],
                        help="block lengths (s) compared with single moments")
    parser.add_argument("--phi", type=float, nargs="+", default=[0.9, 0.5],
                        help="AR(1) coefficients of the outputs per 2-s step")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    tables = []
    for phi in args.phi:
        t = interval_coverage(args.n, (None, *args.blocks), seed=args.seed, n_boot=args.n_boot,
                              phi=phi)
        tables.append(t.assign(phi=phi))
    table = pd.concat(tables, ignore_index=True)
    with pd.option_context("display.width", 120):
        print(table.round(3).to_string(index=False))
    for _, row in table.iterrows():
        print(f"COVERAGE phi={row['phi']:g} {row['unit']} = {row['coverage']:.3f} "
              f"[{row['low']:.3f}, {row['high']:.3f}] (nominal 0.95)")


if __name__ == "__main__":
    main()
