"""Occlusion speed: ``emolib.occlusion.occlusion_map`` (both engines) against Captum.

The job, identical for all three: the original network (``EmotionCNN``, 5 classes, random
weights with non-trivial batch-norm statistics, seeded) on one z-scored 80 x 80 x 35 volume,
patch 2 x 2 x 2, stride 2, fill 0, score = softmax probability of class 0, 64 windows per
forward pass (``batch_size=64`` for us, ``perturbations_per_eval=64`` for Captum).

Captum needs 0.15-0.25 s per window on 2 CPU cores (2 or 1 threads), so the 28,800 windows of
the full volume (40 x 40 x 18, the last z window cut off) would take over an hour per repeat. All
three therefore occlude only the windows tiling a central box of voxels (by default 16 x 16 x
4 voxels: 8 x 8 x 2 = 128 windows, two full batches; ``--small``: 32 windows), while the
network always sees the whole 80 x 80 x 35 volume:

- ours: ``occlusion_map(..., region=box, method="incremental" | "batched")``;
- Captum: ``Occlusion`` on the box's sub-volume, with a forward function that pastes the
  (occluded) sub-volume into the full volume and runs the model on it. Its windows are then
  exactly ours (its grid on the box is our grid on the region); the paste is one copy per
  batch, negligible next to a forward pass of 64 full volumes.

Like for like:

- the same memory format: our batched engine runs a ``channels_last_3d`` copy of the model on
  contiguous inputs; Captum is given the same kind of copy (so both pay the same layout
  conversion); the incremental engine runs the model as given;
- the same threads: each thread count of ``--threads`` (default 1 and 2) is set with
  ``torch.set_num_threads`` for all three in turn;
- the same warm-up: one untimed call of each on one batch of windows at each thread count;
- the same repeats: ``--repeats`` timed calls each, interleaved, the best kept;
- everything each call does is timed (for us also the unoccluded forward pass and the
  per-volume caches of the incremental engine).

The script prints windows per second for all three, ``RATIO`` lines (incremental / Captum and
batched / Captum, per thread count) and the largest absolute difference of each map from
Captum's on the box; then, for scale, the incremental engine's time for all 28,800 windows of
the full volume at the last thread count (``--full-volumes N`` volumes in one call, and the
original's selection of 50 volumes, measured with ``--full-volumes 50``, else extrapolated).

Run ``python benchmarks/bench_occlusion.py`` (about 5 minutes on 2 CPU cores) or with
``--small`` (32 windows, no full-volume run) for a quick check; ``--shape X Y Z`` puts the same
central box of windows in a volume of another grid (the smoke book's 40 x 40 x 20: it checks
that the script runs, its ratios are not the issue's job).
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch

from emolib.occlusion import occlusion_map, window_starts
from emolib.testing import captum_occlusion, seeded_cnn, smooth_volume

ENGINES = ("incremental", "batched", "captum")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="quick run: 32 windows")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                        help="torch thread counts, each used by all three engines")
    parser.add_argument("--repeats", type=int, default=2, help="timed calls of each (best kept)")
    parser.add_argument("--full-volumes", type=int, default=1,
                        help="full volumes occluded at the end (50: the original's selection)")
    parser.add_argument("--shape", type=int, nargs=3, default=(80, 80, 35),
                        help="volume grid (default the real 80 x 80 x 35; smaller only to "
                             "check that the script runs: its ratios are not the issue's)")
    args = parser.parse_args()

    patch, stride, target, bs = (2, 2, 2), (2, 2, 2), 0, args.batch_size
    shape = tuple(args.shape)
    if min(shape[:2]) < 16 or shape[2] < 6:
        parser.error(f"--shape {shape}: at least 16 x 16 x 6 (the box of windows must fit)")
    cx, cy, cz = (n // 2 for n in shape)  # the box is central: (40, 40, 17) at 80 x 80 x 35
    half = 4 if args.small else 8  # 4 x 4 x 2 windows (--small) or 8 x 8 x 2
    region = (slice(cx - half, cx + half), slice(cy - half, cy + half), slice(cz - 1, cz + 3))
    warm_region = (slice(cx - 4, cx + 4), slice(cy - 4, cy + 4), slice(cz - 1, cz + 1))  # 16
    model = seeded_cnn(5, shape, seed=0)
    captum_model = copy.deepcopy(model).to(memory_format=torch.channels_last_3d)
    volume = smooth_volume(shape, seed=1)

    def run(engine: str, box) -> tuple[np.ndarray, float]:
        t0 = time.perf_counter()
        if engine == "captum":
            out = captum_occlusion(captum_model, volume[0], target, patch, stride, region=box,
                                   batch_size=bs)
        else:
            res = occlusion_map(model, volume, target, patch, stride, batch_size=bs, region=box,
                                method=engine, progress=False)  # fmt: skip
            out = res.maps[0][box]
        return out, time.perf_counter() - t0

    n_win = int(np.prod([len(s) for s in window_starts(shape, patch, stride, region)]))
    grid = "x".join(map(str, shape))
    print(f"torch {torch.__version__}, device cpu; job: {grid} volume, patch {patch}, "
          f"stride {stride}, {n_win} windows (region {[(s.start, s.stop) for s in region]}), "
          f"batch {bs}, best of {args.repeats} after one warm-up call each")  # fmt: skip
    for threads in args.threads:
        torch.set_num_threads(threads)
        for engine in ENGINES:
            run(engine, warm_region)
        best = dict.fromkeys(ENGINES, np.inf)
        maps: dict[str, np.ndarray] = {}
        for _ in range(args.repeats):
            for engine in ENGINES:
                out, seconds = run(engine, region)
                if engine in maps:
                    assert np.array_equal(maps[engine], out), f"{engine}: not deterministic"
                maps[engine] = out
                best[engine] = min(best[engine], seconds)
        rate = {e: n_win / best[e] for e in ENGINES}
        print(f"\n{threads} thread(s):")
        for engine in ENGINES:
            diff = float(np.abs(maps[engine] - maps["captum"]).max())
            print(f"  {engine:<11}: {best[engine]:8.3f} s  {rate[engine]:10.2f} windows/s  "
                  f"max |map - captum| {diff:.2e}")
        for engine in ("incremental", "batched"):
            print(f"RATIO occlusion {engine} / captum, {threads} thread(s) = "
                  f"{rate[engine] / rate['captum']:.2f}")
        print(f"  (max |captum map| {np.abs(maps['captum']).max():.2e})")

    if not args.small:
        n_vol = args.full_volumes
        volumes = torch.cat([smooth_volume(shape, seed=1 + i) for i in range(n_vol)])
        t0 = time.perf_counter()
        full = occlusion_map(model, volumes, target, patch, stride, batch_size=bs, progress=False)
        t_full = time.perf_counter() - t0
        n_full = full.coarse[0].size
        per_volume = t_full / n_vol
        print(f"\nfull volume, incremental, {torch.get_num_threads()} thread(s): {n_vol} "
              f"volume(s) of {n_full} windows in {t_full:.1f} s ({per_volume:.1f} s per volume, "
              f"{n_full / per_volume:.1f} windows/s); Captum at the rate above would need "
              f"{n_full / rate['captum'] / 3600:.2f} h per volume")  # fmt: skip
        how = "measured" if n_vol == 50 else f"extrapolated from {n_vol} volume(s)"
        print(f"the original's selection (50 volumes, full maps): {50 * per_volume / 60:.1f} min "
              f"({how}; goal: under 2 min on 2 cores)")


if __name__ == "__main__":
    main()
