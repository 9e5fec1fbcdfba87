"""Occlusion speed: ``emolib.occlusion.occlusion_map`` against Captum's ``Occlusion``.

The job, identical for both: the original network (``EmotionCNN``, 5 classes, random
weights with non-trivial batch-norm statistics, seeded) on one z-scored 80 x 80 x 35 volume,
patch 2 x 2 x 2, stride 2, fill 0, score = softmax probability of class 0, 64 windows per
forward pass (``batch_size=64`` for us, ``perturbations_per_eval=64`` for Captum).

Captum needs about a third of a second per window on a CPU, so the 28,800 windows of the full
volume (40 x 40 x 18, the last z window cut off) would take hours. Both therefore occlude only
the windows tiling a central box of voxels (by default 16 x 16 x 4 voxels: 8 x 8 x 2 = 128
windows, two full batches), while the network always sees the whole 80 x 80 x 35 volume:

- ours: ``occlusion_map(..., region=box)``;
- Captum: ``Occlusion`` on the box's sub-volume, with a forward function that pastes the
  (occluded) sub-volume into the full volume and runs the model on it. Its windows are then
  exactly ours (its grid on the box is our grid on the region); the paste is one copy per
  batch, negligible next to a forward pass of 64 full volumes.

Both timings include everything each call does (the unoccluded forward pass, for us also
the per-volume caches). Ours is timed before and after Captum (the machine is shared and
noisy) and the mean is used. The script prints windows per second for both, their ratio and
the largest absolute difference between the two maps on the box; then, for scale, our time
for all 28,800 windows of the full volume.

Run ``python benchmarks/bench_occlusion.py`` (about 1-3 minutes on 2 CPU cores) or with
``--small`` for a quick check (32 windows, no full-volume run).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from emolib.occlusion import occlusion_map
from emolib.testing import captum_occlusion, seeded_cnn, smooth_volume


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="quick run: 32 windows")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (both)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    patch, stride, target, bs = (2, 2, 2), (2, 2, 2), 0, args.batch_size
    if args.small:
        region = (slice(36, 44), slice(36, 44), slice(16, 20))  # 4 x 4 x 2 windows
    else:
        region = (slice(32, 48), slice(32, 48), slice(16, 20))  # 8 x 8 x 2 windows
    model = seeded_cnn(5, (80, 80, 35), seed=0)
    volume = smooth_volume((80, 80, 35), seed=1)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device cpu")

    def ours():
        t0 = time.perf_counter()
        res = occlusion_map(model, volume, target, patch, stride, batch_size=bs, region=region,
                            progress=False)  # fmt: skip
        return res, time.perf_counter() - t0

    ours()  # warm-up (allocator, kernels); Captum's first call is slow enough to need none
    res, t_ours1 = ours()
    t0 = time.perf_counter()
    ref = captum_occlusion(model, volume[0], target, patch, stride, region=region, batch_size=bs)
    t_captum = time.perf_counter() - t0
    res2, t_ours2 = ours()
    t_ours = (t_ours1 + t_ours2) / 2

    n_win = res.coarse.size
    ours_rate, captum_rate = n_win / t_ours, n_win / t_captum
    diff = float(np.abs(res.maps[0][region] - ref).max())
    print(f"job: 80x80x35 volume, patch {patch}, stride {stride}, {n_win} windows "
          f"(region {[(s.start, s.stop) for s in region]}), batch {bs}")  # fmt: skip
    print(f"ours   ({res.method}): {t_ours:8.3f} s  ({t_ours1:.3f}, {t_ours2:.3f})  "
          f"{ours_rate:10.1f} windows/s")  # fmt: skip
    print(f"captum Occlusion     : {t_captum:8.3f} s  {captum_rate:10.2f} windows/s")
    print(f"ratio (ours faster)  : {ours_rate / captum_rate:.1f}x")
    print(f"RATIO occlusion speed-up emolib / captum = {ours_rate / captum_rate:.2f}")
    print(f"max |map diff|       : {diff:.2e}  (max |map| {np.abs(ref).max():.2e}, "
          f"base p {res.base_prob[0]:.4f})")  # fmt: skip
    assert np.all(res2.maps == res.maps)

    if not args.small:
        t0 = time.perf_counter()
        full = occlusion_map(model, volume, target, patch, stride, batch_size=bs, progress=False)
        t_full = time.perf_counter() - t0
        n_full = full.coarse.size
        print(f"full volume, ours    : {n_full} windows in {t_full:.1f} s "
              f"({n_full / t_full:.1f} windows/s); Captum at the rate above would need "
              f"{n_full / captum_rate / 3600:.1f} h")  # fmt: skip


if __name__ == "__main__":
    main()
