"""Coverage of the RSA pattern bootstrap when neighbouring patterns are dependent.

The job: ``--n`` simulated datasets of ``--moments`` movie moments. A latent state follows an
AR(1) process along movie time (``--phi`` per moment, ``--dims`` dimensions); the "model" and
the "data" patterns are that state plus independent noise (``--noise``), their RDMs squared
Euclidean distances, compared by Pearson r. The true similarity is the expectation of r at
this design size, from ``--n-truth`` further datasets. Every dataset gets bootstrap intervals
(:func:`emolib.rsa.bootstrap_compare`, ``--n-boot`` draws) resampling single moments or
contiguous blocks of ``--block`` moments (``pattern_groups``), on the same datasets. Printed:
per unit and interval (both of :meth:`BootstrapResult.get_ci`: the percentile interval, and
the t interval of the tests, bootstrap mean +- t(n_units - 1) x corrected SE, the default)
the share of intervals that contain the true value with its exact (Clopper-Pearson) 95 %
interval, and the mean width. No timings: this measures a statistical promise, not speed.

Datasets are bootstrapped ``--batch`` at a time (one call, the same draws for the batch, a
new seed for every batch): coverage events are independent given the draws.

Usage::

    python benchmarks/bench_rsa_coverage.py          # 1000 datasets, 120 moments, phi 0.7
    python benchmarks/bench_rsa_coverage.py --moments 240 --phi 0.8 --block 10 20
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
from rsatoolbox.rdm import RDMs  # noqa: E402
from scipy.signal import lfilter  # noqa: E402
from scipy.spatial.distance import pdist  # noqa: E402

from emolib import rsa  # noqa: E402
from emolib.decoding.calibration import clopper_pearson  # noqa: E402


def simulate(rng: np.random.Generator, n: int, dims: int, phi: float, noise: float,
             k: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """``k`` datasets: model and data RDM vectors, shape (k, n (n - 1) / 2) each."""
    e = rng.standard_normal((k, n, dims))
    e[:, 0] /= np.sqrt(1 - phi**2)  # stationary start
    state = lfilter([np.sqrt(1 - phi**2)], [1.0, -phi], e, axis=1)
    model = state + noise * rng.standard_normal(state.shape)
    data = state + noise * rng.standard_normal(state.shape)
    return (np.stack([pdist(m, "sqeuclidean") for m in model]),
            np.stack([pdist(d, "sqeuclidean") for d in data]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="simulated datasets")
    parser.add_argument("--moments", type=int, default=120, help="patterns per dataset")
    parser.add_argument("--dims", type=int, default=10, help="dimensions of the latent state")
    parser.add_argument("--phi", type=float, default=0.7, help="AR(1) coefficient per moment")
    parser.add_argument("--noise", type=float, default=0.5, help="noise SD (state SD is 1)")
    parser.add_argument("--block", type=int, nargs="+", default=[5, 15],
                        help="block lengths (moments) compared with single moments")
    parser.add_argument("--n-boot", type=int, default=400, help="bootstrap draws per interval")
    parser.add_argument("--n-truth", type=int, default=4000, help="datasets for the truth")
    parser.add_argument("--batch", type=int, default=20, help="datasets per bootstrap call")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    n = args.moments
    sim = (n, args.dims, args.phi, args.noise)
    truth = np.mean(np.concatenate([
        [np.corrcoef(a, b)[0, 1] for a, b in zip(*simulate(rng, *sim, k=100), strict=True)]
        for _ in range(args.n_truth // 100)]))
    ids = [f"t{t:05d}" for t in range(n)]
    units = {"moment": None, **{f"block{b}": np.arange(n) // b for b in args.block}}
    hits = {(u, kind): [] for u in units for kind in ("percentile", "t")}
    widths = {key: [] for key in hits}
    points = []
    n_batches = -(-args.n // args.batch)
    for batch in range(n_batches):
        k = min(args.batch, args.n - batch * args.batch)
        a, b = simulate(rng, *sim, k=k)
        model = RDMs(a, rdm_descriptors={"layer": [f"m{i}" for i in range(k)]},
                     pattern_descriptors={"id": ids})
        data = RDMs(b, rdm_descriptors={"roi": [f"d{i}" for i in range(k)]},
                    pattern_descriptors={"id": ids})
        diag = np.arange(k)
        for unit, groups in units.items():
            boot = rsa.bootstrap_compare(model, data, "corr", args.n_boot,
                                         seed=[args.seed, batch], pattern_groups=groups,
                                         data_descriptors=("roi",), dtype=np.float64)
            for kind, test_type in (("percentile", "bootstrap"), ("t", "t-test")):
                low, high = (c[diag, diag] for c in boot.get_ci(0.95, test_type))
                hits[(unit, kind)].append((low <= truth) & (truth <= high))
                widths[(unit, kind)].append(high - low)
        points.append(boot.point[diag, diag])
    points = np.concatenate(points)
    print(f"job: {args.n} datasets of {n} moments, AR(1) phi={args.phi:g}, dims={args.dims}, "
          f"noise={args.noise:g}; {args.n_boot} draws; truth E[r] = {truth:.4f} "
          f"(mean r {points.mean():.4f}, SD of r across datasets {points.std(ddof=1):.4f})")
    for (unit, kind), h in hits.items():
        h = np.concatenate(h)
        lo, hi = clopper_pearson(int(h.sum()), len(h))
        groups = units[unit]
        n_units = n if groups is None else len(np.unique(groups))
        print(f"COVERAGE {unit} ({n_units} units) {kind} = {h.mean():.3f} [{lo:.3f}, {hi:.3f}] "
              f"(nominal 0.95), mean width {np.concatenate(widths[(unit, kind)]).mean():.4f}")


if __name__ == "__main__":
    main()
