"""Benchmark: training throughput of ``emolib.models.train`` against the original's plain loop.

The job: full-size volumes (1 x 80 x 80 x 35), the original model (``EmotionCNN``, 5 classes),
batch 16, AdamW + cross-entropy; one training epoch over ``--n`` volumes, then one evaluation
pass. Both sides use the same model initialisation and the same data.

- *plain*: the original's loop: in-memory tensors in a ``TensorDataset``, a shuffling
  ``DataLoader`` (batch 16), contiguous (NCDHW) tensors, evaluation under ``torch.no_grad``.
- *emolib*: :func:`emolib.models.train.train_model`: one contiguous tensor, batches by
  ``index_select``, channels-last 3D memory format, evaluation under ``torch.inference_mode``.

Each side runs ``--repeats`` times, interleaved; the best time is kept. Prints volumes/s and
the ratio. CPU by default; ``--device cuda`` on a GPU machine.

    .venv/bin/python benchmarks/bench_training.py [--n 48] [--repeats 2] [--shape 80 80 35]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from emolib.models.cnn import EmotionCNN
from emolib.models.train import TrainConfig, evaluate_batches, to_tensor, train_model


def plain(x: np.ndarray, y: np.ndarray, device: str, seed: int) -> tuple[float, float]:
    torch.manual_seed(seed)
    model = EmotionCNN(n_classes=5, in_shape=x.shape[1:]).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    ds = TensorDataset(torch.from_numpy(x).unsqueeze(1), torch.from_numpy(y))
    loader = DataLoader(ds, batch_size=16, shuffle=True)
    t0 = time.perf_counter()
    model.train()
    for xb, yb in loader:
        xb, yb = xb.to(device), yb.to(device)
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
    if device == "cuda":
        torch.cuda.synchronize()
    t_train = time.perf_counter() - t0
    t0 = time.perf_counter()
    model.eval()
    with torch.no_grad():
        for xb, _ in DataLoader(ds, batch_size=64):
            torch.softmax(model(xb.to(device)), dim=1).cpu()
    t_eval = time.perf_counter() - t0
    return t_train, t_eval


def ours(x: np.ndarray, y: np.ndarray, device: str, seed: int) -> tuple[float, float]:
    cfg = TrainConfig(epochs=1, batch_size=16, t_max=1, patience=10, seed=seed, device=device)
    t0 = time.perf_counter()
    # train_model also evaluates the validation set each epoch: give it one volume so that the
    # timing is the training epoch; evaluation is timed separately below
    res = train_model(x, y, x[:1], y[:1], 5, cfg, progress=False)
    t_train = time.perf_counter() - t0
    xt = to_tensor(x, torch.device(device), True)
    t0 = time.perf_counter()
    evaluate_batches(res.model, xt, None)
    if device == "cuda":
        torch.cuda.synchronize()
    return t_train, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--shape", type=int, nargs=3, default=(80, 80, 35))
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.n, *args.shape), dtype=np.float32)
    y = rng.integers(0, 5, args.n)
    print(f"job: {args.n} volumes of {tuple(args.shape)}, batch 16, device {args.device}, "
          f"{torch.get_num_threads()} threads")
    best = {"plain": [np.inf, np.inf], "emolib": [np.inf, np.inf]}
    for r in range(args.repeats):
        for name, fn in (("plain", plain), ("emolib", ours)):
            t_train, t_eval = fn(x, y, args.device, seed=r)
            best[name] = [min(best[name][0], t_train), min(best[name][1], t_eval)]
            print(f"repeat {r + 1} {name:>6}: train {args.n / t_train:6.2f} vol/s, "
                  f"eval {args.n / t_eval:6.2f} vol/s", flush=True)
    (pt, pe), (ot, oe) = best["plain"], best["emolib"]
    print(f"\nplain : train {args.n / pt:.2f} vol/s, eval {args.n / pe:.2f} vol/s")
    print(f"emolib: train {args.n / ot:.2f} vol/s, eval {args.n / oe:.2f} vol/s")
    print(f"RATIO training throughput emolib / plain = {pt / ot:.2f}")
    print(f"RATIO evaluation throughput emolib / plain = {pe / oe:.2f}")


if __name__ == "__main__":
    main()
