"""Exact ResNet-50 layer RDMs at BOLD5000's scale with bounded memory: time, memory, disk.

The job: N images (default 4916, BOLD5000's number) of 224 x 224, random smooth colour
textures written as JPEG files to a temporary folder (or ``--images DIR``), through
:func:`emolib.bold5000.calc_resnet50_rdms` with ``store_dir`` (activations streamed to disk,
:func:`emolib.rsa.calc_rdms_streamed`), all five layers (``conv1``, ``layer1`` .. ``layer4``,
flattened: 2,308,096 units per image), random-init weights, correlation distance.

Measured and printed: wall time of each phase (forward pass + store, Gram matrices; from the
function's log records), total wall time, peak resident memory of the process and of any
children (``resource.getrusage`` ``ru_maxrss``), disk used by the store (allocated blocks),
torch threads and the device. The goal is a peak memory under 6 GB at N = 4916, where the
in-memory path (:func:`emolib.rsa.calc_rdms_from_model`) needs about 45 GB.

Usage::

    python benchmarks/bench_resnet_rdms.py                 # N = 4916 (45 GB of disk, float32)
    python benchmarks/bench_resnet_rdms.py --n 64          # quick check
    python benchmarks/bench_resnet_rdms.py --device cuda --store-dtype float16
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from emolib.bold5000 import LAYERS, calc_resnet50_rdms  # noqa: E402


class PhaseTimes(logging.Handler):
    """Collects the ``phase``/``seconds`` attributes of the streamed engine's log records."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.seconds: dict[str, float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        if hasattr(record, "phase"):
            self.seconds[record.phase] = record.seconds


def write_textures(folder: Path, n: int, size: int = 224, seed: int = 0) -> None:
    """Write ``n`` random smooth colour textures (sum of three octaves) as JPEG files."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        img = np.zeros((size, size, 3))
        for cells, weight in ((4, 1.0), (14, 0.5), (56, 0.25)):
            low = Image.fromarray(rng.integers(0, 256, (cells, cells, 3), dtype=np.uint8))
            img += weight * np.asarray(low.resize((size, size), Image.BICUBIC), dtype=float)
        img = np.clip(img / 1.75, 0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"texture_{i:05d}.jpg", quality=90)


def disk_used(folder: Path) -> int:
    """Bytes allocated by the files under ``folder`` (sparse files count what is written)."""
    return sum(p.stat().st_blocks * 512 for p in folder.rglob("*") if p.is_file())


def peak_rss_gb() -> tuple[float, float]:
    """Peak resident memory (GB) of this process and of its children; ru_maxrss is in KB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024 / 1e9
    return own, children


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4916, help="images to generate")
    parser.add_argument("--images", type=Path, default=None,
                        help="use this folder of images instead of generated ones")
    parser.add_argument("--store", type=Path, default=None,
                        help="store folder (default: a temporary folder, removed after)")
    parser.add_argument("--store-dtype", default="float32", choices=["float32", "float16"])
    parser.add_argument("--memory-limit-gb", type=float, default=2.0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--progress", action="store_true", help="show progress bars")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device is available")

    handler = PhaseTimes()
    log = logging.getLogger("emolib.rsa.streamed")
    log.addHandler(handler)
    log.setLevel(logging.INFO)

    with tempfile.TemporaryDirectory(prefix="bench_resnet_rdms_") as tmp:
        tmp = Path(tmp)
        if args.images is None:
            images = tmp / "images"
            images.mkdir()
            t0 = time.perf_counter()
            write_textures(images, args.n)
            print(f"generated {args.n} textures (224 x 224 JPEG) in "
                  f"{time.perf_counter() - t0:.1f} s")
        else:
            images = args.images
        store = args.store or tmp / "store"
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
              f"{os.cpu_count()} CPUs, device {device} ({name})")
        print(f"layers {', '.join(LAYERS)}; store_dtype {args.store_dtype}, memory limit "
              f"{args.memory_limit_gb} GiB, batch {args.batch_size}")

        _, children_before = peak_rss_gb()
        t0 = time.perf_counter()
        rdms = calc_resnet50_rdms(
            images, weights=None, seed=0, batch_size=args.batch_size, device=args.device,
            store_dir=store, store_dtype=args.store_dtype,
            memory_limit_gb=args.memory_limit_gb, progress=args.progress,
        )
        total = time.perf_counter() - t0
        used = disk_used(store)
        own, children = peak_rss_gb()
        fwd, gram = handler.seconds.get("forward", np.nan), handler.seconds.get("gram", np.nan)
        print(f"RDMs: {rdms.n_rdm} layers x {rdms.n_cond} images "
              f"({rdms.dissimilarities.shape[1]:,} pairs each)")
        print(f"forward + store: {fwd:8.1f} s  ({rdms.n_cond / fwd:.1f} images/s)")
        print(f"Gram matrices:   {gram:8.1f} s")
        print(f"total:           {total:8.1f} s  (incl. model set-up and hashing the images)")
        print(f"peak RSS: {own:.2f} GB (process; goal < 6 GB at N = 4916), largest child "
              f"{children:.2f} GB ({children_before:.2f} GB before the job: subprocesses "
              "run while importing torch and its libraries)")
        print(f"disk used by the store: {used / 1e9:.2f} GB")
        if device.type == "cuda":
            print(f"peak GPU memory: {torch.cuda.max_memory_allocated(device) / 1e9:.2f} GB")


if __name__ == "__main__":
    main()
