"""Pattern bootstrap of a layer x ROI table: emolib.rsa against rsatoolbox, in one run.

The job: 5 ResNet-50 layer RDMs against 10 ROI RDMs (generated, BOLD5000-shaped), 500
patterns, 100 bootstrap samples of the patterns, comparison ``corr``. rsatoolbox runs
``rsatoolbox.inference.eval_bootstrap_pattern`` once per ROI (the 5 layers as fixed models;
``boot_noise_ceil=False`` so that both do the same work); emolib runs one
:func:`emolib.rsa.bootstrap_compare` for the whole table. Beside the per-ROI call, rsatoolbox
is also used the fast, idiomatic way: per draw, both RDM objects are subsampled once
(``RDMs.subsample_pattern``) and one ``compare`` gives the whole layer x ROI table.

Like for like: all three do the same draws (rsatoolbox's legacy generator, replayed), in
float64, on the same RDM objects, in one process with the same BLAS threads; none is
warmed (each is run once: rsatoolbox's calls take seconds, far above any first-call cost);
the point estimate (one ``compare``) is outside all timings. The script prints the times,
``RATIO`` lines (emolib against each rsatoolbox use), and checks that

- the point estimates equal rsatoolbox's plain comparison (``compare``/``eval_fixed``);
- with the same draws, the bootstrap samples of all three agree to 1e-6 (means and
  standard errors: the numbers agree to float64 rounding);
- with independent draws, the standard errors agree within 15 % (median over the table).

``--full-scale`` instead runs the comparison table at BOLD5000's size (4916 images, 5 layers,
10 ROIs, 3 subjects each in its own image order, plus the joint RDMs) and reports the peak
resident memory of the process (``resource.getrusage``).

Usage::

    python benchmarks/bench_rsa_bootstrap.py [--n-patterns 500] [--n-bootstrap 100]
    python benchmarks/bench_rsa_bootstrap.py --full-scale
"""

from __future__ import annotations

import argparse
import contextlib
import io
import resource
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rsatoolbox.inference import eval_bootstrap_pattern  # noqa: E402
from rsatoolbox.model import ModelFixed  # noqa: E402
from rsatoolbox.rdm import compare  # noqa: E402

from emolib import rsa  # noqa: E402
from emolib.synthetic.bold5000 import simulate_bold5000_rdms  # noqa: E402


def _rss_mb() -> float:
    """Current resident memory (MB) from /proc, or NaN where unavailable."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _peak_rss_mb() -> float:
    """Peak resident memory of this process (MB); ru_maxrss is in KB on Linux."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _check(name: str, ok: bool, detail: str) -> bool:
    print(f"  [{'PASS' if ok else 'FAIL'}] {name}: {detail}")
    return ok


def run_bootstrap(n_patterns: int, n_bootstrap: int, seed: int) -> bool:
    """Time both tools on the same bootstrap job; print times, ratio and checks."""
    sim = simulate_bold5000_rdms(n_patterns, seed=seed, subjects=("CSI1",), dtype=np.float64)
    layers = sim.layers
    # rsatoolbox compares by position: give it the ROIs in the layers' order (by id)
    rois = rsa.reorder_patterns(sim.rois["CSI1"], rsa.get_pattern_ids(layers))
    names = list(layers.rdm_descriptors["layer"])
    models = [ModelFixed(name, layers.subset("layer", name)) for name in names]
    n_roi = rois.n_rdm
    print(f"job: {len(names)} layers x {n_roi} ROIs, {n_patterns} patterns, "
          f"{n_bootstrap} bootstraps, method corr")

    # --- rsatoolbox: one eval_bootstrap_pattern per ROI, the same draws for every ROI
    ref_samples = np.empty((n_bootstrap, len(names), n_roi))
    ref_se = np.empty((len(names), n_roi))
    t0 = time.perf_counter()
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        for j in range(n_roi):
            np.random.seed(seed)  # noqa: NPY002 - rsatoolbox draws from the legacy generator
            res = eval_bootstrap_pattern(models, rois[j], method="corr", N=n_bootstrap,
                                         boot_noise_ceil=False)
            ref_samples[:, :, j] = res.evaluations
            ref_se[:, j] = res.get_sem()
    t_ref = time.perf_counter() - t0

    # --- rsatoolbox, idiomatic and fast: subsample both RDM objects once per draw, one compare
    np.random.seed(seed)  # noqa: NPY002
    draws = np.stack([np.random.randint(0, n_patterns, size=n_patterns)  # noqa: NPY002
                      for _ in range(n_bootstrap)])
    fast_samples = np.full((n_bootstrap, len(names), n_roi), np.nan)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for b, idx in enumerate(draws):
            if len(np.unique(idx)) >= 3:
                fast_samples[b] = compare(layers.subsample_pattern("index", idx),
                                          rois.subsample_pattern("index", idx), "corr")
    t_fast = time.perf_counter() - t0

    # --- emolib: the whole table at once, replaying rsatoolbox's draws
    t0 = time.perf_counter()
    ours = rsa.bootstrap_compare(layers, rois, "corr", pattern_samples=draws)
    t_ours = time.perf_counter() - t0
    # --- and with our own random draws
    t0 = time.perf_counter()
    indep = rsa.bootstrap_compare(layers, rois, "corr", n_bootstrap=n_bootstrap, seed=seed + 1)
    t_indep = time.perf_counter() - t0

    ratio, ratio_fast = t_ref / t_ours, t_fast / t_ours
    print(f"rsatoolbox eval_bootstrap_pattern per ROI: {t_ref:8.3f} s")
    print(f"rsatoolbox subsample + compare per draw:   {t_fast:8.3f} s")
    print(f"emolib bootstrap_compare:                  {t_ours:8.3f} s  "
          f"(own draws: {t_indep:.3f} s)")
    print(f"RATIO bootstrap speed-up emolib / rsatoolbox eval_bootstrap_pattern = {ratio:.2f}")
    print(f"RATIO bootstrap speed-up emolib / rsatoolbox subsample+compare = {ratio_fast:.2f}")

    point_ref = compare(layers, rois, "corr")
    d_point = np.abs(ours.point - point_ref).max()
    d_mean = np.abs(ours.get_means() - ref_samples.mean(axis=0)).max()
    d_se = np.abs(ours.get_se() - ref_se).max()
    d_fast = float(np.nanmax(np.abs(fast_samples - ref_samples)))
    se_ratio = indep.get_se() / ref_se
    # the speed goal is reported, not enforced: the exit status says whether the numbers agree
    _check("speed-up >= 10x (goal at 500 patterns, 100 bootstraps)", ratio >= 10,
           f"{ratio:.1f}x")
    checks = [
        _check("point estimates = rsatoolbox compare", d_point <= 1e-10,
               f"max |diff| = {d_point:.2e}"),
        _check("same draws: bootstrap means (emolib)", d_mean <= 1e-6,
               f"max |diff| = {d_mean:.2e}"),
        _check("same draws: bootstrap SE (emolib)", d_se <= 1e-6, f"max |diff| = {d_se:.2e}"),
        _check("same draws: rsatoolbox's two uses agree", d_fast <= 1e-6,
               f"max |diff| of the samples = {d_fast:.2e}"),
        _check("independent draws: SE within 15 % (median ratio)",
               abs(np.median(se_ratio) - 1) <= 0.15,
               f"median ratio = {np.median(se_ratio):.3f}, range "
               f"{se_ratio.min():.3f}..{se_ratio.max():.3f}, "
               f"{np.mean(np.abs(se_ratio - 1) <= 0.15):.0%} of cells within 15 %"),
    ]
    return all(checks)


def run_full_scale(n_images: int, seed: int) -> bool:
    """Comparison table at BOLD5000's size; report time and peak memory."""
    print(f"full scale: {n_images} images ({n_images * (n_images - 1) // 2:,} pairs per RDM), "
          "5 layers, 10 ROIs, 3 subjects (each in its own image order), float32")
    t0 = time.perf_counter()
    sim = simulate_bold5000_rdms(n_images, seed=seed, dtype=np.float32)
    t_gen = time.perf_counter() - t0
    print(f"generated RDMs in {t_gen:.1f} s; RSS now {_rss_mb():,.0f} MB, "
          f"peak so far {_peak_rss_mb():,.0f} MB")
    rois = list(sim.rois.values())
    t0 = time.perf_counter()
    table = rsa.compare_table(sim.layers, rois, methods=("corr",))
    t_table = time.perf_counter() - t0
    t0 = time.perf_counter()
    joint = rsa.calc_joint_rdms(rois)
    joint_table = rsa.compare_table(sim.layers, joint)
    t_joint = time.perf_counter() - t0
    print(f"per-subject table (150 comparisons, aligned by id): {t_table:.1f} s")
    print(f"joint RDMs + table (50 comparisons):                {t_joint:.1f} s")
    peak = _peak_rss_mb()
    stored = (sim.layers.dissimilarities.nbytes
              + sum(r.dissimilarities.nbytes for r in rois)
              + joint.dissimilarities.nbytes) / 2**20
    print(f"RDM data held: {stored:,.0f} MB; peak RSS of the whole job: {peak:,.0f} MB "
          f"({peak / 1024:.2f} GB)")
    best = joint_table.loc[joint_table.groupby("roi")["value"].idxmax()]
    recovered = dict(zip(best["roi"], best["layer"], strict=True))
    n_ok = sum(recovered[r] == sim.truth["best_layer"][r] for r in recovered)
    return all([
        _check("table complete", len(table) == 150, f"{len(table)} rows"),
        _check("planted best layer recovered (joint)", n_ok == len(recovered),
               f"{n_ok}/{len(recovered)} ROIs"),
        _check("peak memory < 8 GB", peak < 8192, f"{peak:,.0f} MB"),
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-patterns", type=int, default=500)
    parser.add_argument("--n-bootstrap", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--full-scale", action="store_true",
                        help="run the 4916-image comparison table and report peak memory")
    parser.add_argument("--n-images", type=int, default=4916,
                        help="images of the --full-scale job")
    args = parser.parse_args(argv)
    if args.full_scale:
        ok = run_full_scale(args.n_images, args.seed)
    else:
        ok = run_bootstrap(args.n_patterns, args.n_bootstrap, args.seed)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
