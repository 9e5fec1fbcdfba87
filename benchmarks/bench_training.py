"""Benchmark: training throughput of ``emolib.models.train`` against the original's plain loop.

The job: full-size volumes (1 x 80 x 80 x 35), the original model (``EmotionCNN``, 5 classes),
batch 16, AdamW + cross-entropy; one training epoch over ``--n`` volumes, then one evaluation
pass. Both sides use the same model initialisation and the same data.

- *plain*: the original's loop: in-memory tensors in a ``TensorDataset``, a shuffling
  ``DataLoader`` (batch 16), contiguous (NCDHW) tensors, evaluation under ``torch.no_grad``.
- *emolib*: :func:`emolib.models.train.train_model`: one contiguous tensor, batches by
  ``index_select``, channels-last 3D memory format, evaluation under ``torch.inference_mode``.

Like for like:

- the same job: the same volumes, labels, model initialisation, batch size and optimiser;
- the same precision: float32 on both sides by default; ``--amp`` gives both bf16 autocast
  (CUDA only: on the CPU both stay float32);
- model building and the copy of the data to the device are timed on neither side: the plain
  loop gets its tensors already on the device, ours is timed by its own per-epoch clock
  (``history["seconds"]``: the epoch's batches plus a one-volume validation pass);
- both are warmed up by one untimed epoch on the same data, then run ``--repeats`` times,
  interleaved, in one process with the same torch threads; the best time of each is kept;
- evaluation: ``--n`` should be a multiple of 64, the evaluation batch of both: ours pads a
  last, smaller batch to 64 volumes (so that a volume's outputs do not depend on its
  neighbours), which costs up to 63 wasted volumes on a remainder.

Prints volumes/s and the ratios. CPU by default; ``--device cuda`` on a GPU machine.

    .venv/bin/python benchmarks/bench_training.py [--n 64] [--repeats 2] [--shape 80 80 35]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from emolib.models.cnn import EmotionCNN
from emolib.models.train import TrainConfig, autocast, evaluate_batches, to_tensor, train_model


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def plain(x: np.ndarray, y: np.ndarray, device: str, seed: int, amp: bool
          ) -> tuple[float, float]:
    """The original's loop; the data are on the device before the clock starts."""
    torch.manual_seed(seed)
    model = EmotionCNN(n_classes=5, in_shape=x.shape[1:]).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    ds = TensorDataset(torch.from_numpy(x).unsqueeze(1).to(device),
                       torch.from_numpy(y).to(device))
    loader = DataLoader(ds, batch_size=16, shuffle=True,
                        generator=torch.Generator(device="cpu").manual_seed(seed))
    _sync(device)
    t0 = time.perf_counter()
    model.train()
    for xb, yb in loader:
        opt.zero_grad()
        with autocast(device, amp):
            logits = model(xb)
        loss = nn.functional.cross_entropy(logits.float(), yb)
        loss.backward()
        opt.step()
    _sync(device)
    t_train = time.perf_counter() - t0
    t0 = time.perf_counter()
    model.eval()
    with torch.no_grad(), autocast(device, amp):
        for xb, _ in DataLoader(ds, batch_size=64):
            torch.softmax(model(xb).float(), dim=1).cpu()
    _sync(device)
    return t_train, time.perf_counter() - t0


def ours(x: np.ndarray, y: np.ndarray, device: str, seed: int, amp: bool
         ) -> tuple[float, float]:
    """train_model for one epoch, timed by its own epoch clock (after building and copying)."""
    cfg = TrainConfig(epochs=1, batch_size=16, t_max=1, patience=10, seed=seed, device=device,
                      amp=amp)
    # the validation set is one volume, so that the epoch's time is the training batches
    res = train_model(x, y, x[:1], y[:1], 5, cfg, progress=False)
    t_train = float(res.history["seconds"].iloc[0])
    xt = to_tensor(x, torch.device(device), True)
    _sync(device)
    t0 = time.perf_counter()
    evaluate_batches(res.model, xt, None, amp=amp)
    _sync(device)
    return t_train, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--shape", type=int, nargs=3, default=(80, 80, 35))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", action="store_true",
                        help="bf16 autocast on both sides (CUDA only)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.n, *args.shape), dtype=np.float32)
    y = rng.integers(0, 5, args.n)
    amp = bool(args.amp and args.device.startswith("cuda"))
    print(f"job: {args.n} volumes of {tuple(args.shape)}, batch 16, device {args.device}, "
          f"{torch.get_num_threads()} threads, {'bf16 autocast' if amp else 'float32'} "
          "on both sides")
    for fn in (plain, ours):  # warm-up: one untimed epoch each
        fn(x, y, args.device, seed=0, amp=amp)
    best = {"plain": [np.inf, np.inf], "emolib": [np.inf, np.inf]}
    for r in range(args.repeats):
        for name, fn in (("plain", plain), ("emolib", ours)):
            t_train, t_eval = fn(x, y, args.device, seed=r, amp=amp)
            best[name] = [min(best[name][0], t_train), min(best[name][1], t_eval)]
            print(f"repeat {r + 1} {name:>6}: train {args.n / t_train:6.2f} vol/s, "
                  f"eval {args.n / t_eval:6.2f} vol/s", flush=True)
    (pt, pe), (ot, oe) = best["plain"], best["emolib"]
    print(f"\nplain : train {args.n / pt:.2f} vol/s, eval {args.n / pe:.2f} vol/s")
    print(f"emolib: train {args.n / ot:.2f} vol/s, eval {args.n / oe:.2f} vol/s")
    print(f"MEASURED training volumes/s emolib = {args.n / ot:.3f}")
    print(f"MEASURED training volume voxels = {int(np.prod(args.shape))}")
    print(f"RATIO training throughput emolib / plain = {pt / ot:.2f}")
    print(f"RATIO evaluation throughput emolib / plain = {pe / oe:.2f}")


if __name__ == "__main__":
    main()
