"""Benchmark: preparing one full-size subject against the floor of decompressing its files.

The job: one generated subject at the real size (8 runs, 3599 volumes of 80 x 80 x 35, gzipped
int16 NIfTI, ~1.6 GB uncompressed), prepared twice: with the default settings (the selected
volumes cached) and with every volume cached (``prepare_dataset(keep="all")``: header checks,
inflate, SHA-256 of the inputs, per-volume z-scoring, float32 memory-mapped cache of 3.2 GB,
mean image, manifest). Our reader inflates with ISA-L (``isal``) on up to two threads, so the
ratio compares both cores against one ``gzip`` stream: the floor of a one-stream reader.

The floor: ``gzip -dc`` of the same 8 files to /dev/null, one after the other, which only
inflates. A naive peer is timed too: ``nibabel.load(f).get_fdata()`` per run, z-scoring in
float64 and ``np.save`` (what a first script would do).

Each job runs ``--repeats`` times, interleaved, after one warm-up read of every file (so the
page cache holds the inputs for all); the best time of each is reported.

    .venv/bin/python benchmarks/bench_dataprep.py [--repeats 2] [--skip-naive]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np

from emolib.forrest.dataprep import prepare_dataset
from emolib.paths import get_data_dir
from emolib.synthetic import generate_studyforrest


def dataset(root: Path, shape: tuple[int, int, int]) -> Path:
    """The one-subject dataset, all 8 real runs (generated once, then reused)."""
    out = root / f"bench_{'x'.join(map(str, shape))}"
    generate_studyforrest(out, n_subjects=1, shape=shape, progress=True, seed=0,
                          overwrite="changed")
    return out


def floor(files: list[Path]) -> float:
    t0 = time.perf_counter()
    for f in files:
        subprocess.run(f"gzip -dc '{f}' > /dev/null", shell=True, check=True)
    return time.perf_counter() - t0


def ours(ds: Path, work: Path, keep: str) -> float:
    out = work / "prep"
    t0 = time.perf_counter()
    with warnings.catch_warnings():  # the generated tree's subject without a movie session
        warnings.filterwarnings("ignore", message=r"sub-\d+ skipped", category=UserWarning)
        prepare_dataset(ds / "ds000113", ds / "annotations", out, keep=keep, progress=False,
                        min_count=70, n_per_class=70)
    dt = time.perf_counter() - t0
    shutil.rmtree(out)
    return dt


def naive(files: list[Path], work: Path) -> float:
    t0 = time.perf_counter()
    for i, f in enumerate(files):
        data = nib.load(f).get_fdata()  # float64 (x, y, z, t)
        mean = data.mean(axis=(0, 1, 2), keepdims=True)
        std = data.std(axis=(0, 1, 2), keepdims=True)
        z = np.moveaxis((data - mean) / std, -1, 0).astype(np.float32)
        np.save(work / f"run{i}.npy", z)
    dt = time.perf_counter() - t0
    for p in work.glob("run*.npy"):
        p.unlink()
    return dt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument("--data-dir", default=None, help="where to generate (default: data/)")
    parser.add_argument("--shape", type=int, nargs=3, default=(80, 80, 35),
                        help="voxel grid (the real one by default)")
    args = parser.parse_args()
    root = get_data_dir(args.data_dir) / "benchmarks"
    ds = dataset(root, tuple(args.shape))
    files = sorted((ds / "ds000113").rglob("*_bold.nii.gz"))
    size = sum(f.stat().st_size for f in files)
    n_vol = sum(nib.load(f).shape[3] for f in files)
    grid = "x".join(map(str, args.shape))
    print(f"job: {len(files)} runs, {n_vol} volumes of {grid}, {size / 1e6:.0f} MB gzipped")
    for f in files:  # warm the page cache
        f.read_bytes()
    best = {"floor (gzip -dc)": np.inf, "emolib prepare_dataset": np.inf,
            "emolib keep=all": np.inf}
    if not args.skip_naive:
        best["naive nibabel script"] = np.inf
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        work = Path(tmp)
        for r in range(args.repeats):
            best["floor (gzip -dc)"] = min(best["floor (gzip -dc)"], floor(files))
            best["emolib prepare_dataset"] = min(best["emolib prepare_dataset"],
                                                 ours(ds, work, "selected"))
            best["emolib keep=all"] = min(best["emolib keep=all"], ours(ds, work, "all"))
            if not args.skip_naive:
                best["naive nibabel script"] = min(best["naive nibabel script"],
                                                   naive(files, work))
            print(f"repeat {r + 1}: " + ", ".join(f"{k} {v:.1f} s" for k, v in best.items()))
    base = best["floor (gzip -dc)"]
    print()
    for k, v in best.items():
        print(f"{k:>24}: {v:6.1f} s  ({n_vol / v:6.0f} volumes/s)  ratio to floor {v / base:.2f}")
    print(f"\nRATIO dataprep time emolib / gzip floor = "
          f"{best['emolib prepare_dataset'] / base:.2f}")
    print(f"RATIO dataprep time emolib keep=all / gzip floor = "
          f"{best['emolib keep=all'] / base:.2f}")


if __name__ == "__main__":
    main()
