"""Training the decoding networks: seeded, deterministic on CPU, checkpointed, resumable.

As the original: AdamW (lr 1e-3, weight decay 1e-4), a cosine learning-rate schedule
(``T_max`` 50), batch 16, up to 50 epochs, early stopping (patience 10) on validation accuracy;
all are parameters (:class:`TrainConfig`).

Reproducibility: the model is initialised from ``seed``; the order of the training samples in
epoch ``e`` comes from a generator seeded by ``(seed, e)``; dropout draws from torch's global
generator, whose state is saved in every checkpoint. A checkpoint is written atomically
(temporary file, then ``os.replace``) at the end of every epoch, so a run that is killed
resumes from its last complete epoch and ends with the same numbers as a run that was never
interrupted (a test kills one with SIGKILL).

Speed on CPU: the training volumes are held in one contiguous tensor and batches are
gathered with ``index_select`` (no DataLoader, no per-sample collation); channels-last 3D
memory format; evaluation under ``torch.inference_mode``. On a GPU, bf16 autocast.

Inputs are single volumes ``(N, X, Y, Z)`` or windows of T volumes ``(N, T, X, Y, Z)``
(:mod:`emolib.forrest.windows`); :attr:`TrainConfig.architecture` names the network
(:func:`emolib.models.build_model`), and ``best.pt`` records what it takes to rebuild it.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from emolib.models.factory import build_model

__all__ = ["TrainConfig", "TrainResult", "autocast", "config_from_dict", "evaluate_batches",
           "load_trained",
           "resolve_device", "to_tensor", "train_model"]

CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"
HISTORY = "history.csv"


@dataclass(frozen=True)
class TrainConfig:
    """Training parameters (defaults: the original project's).

    ``augment_noise`` (ours, 0 = the original) adds Gaussian noise of that standard
    deviation, in units of the standardised input, to every training batch: a regulariser
    (equivalent to a Tikhonov penalty for small noise) against memorising each volume's own
    noise, drawn from a generator seeded by ``(seed, epoch)`` so that runs and resumed runs
    repeat.

    ``architecture`` (:func:`emolib.models.build_model`): ``"cnn"``, the original network
    (on windows, their volumes are its input channels), or ``"spacetime"``, the (2+1)D one
    for windows, whose temporal convolution is ``temporal_kernel`` volumes long (None: the
    whole window).
    """

    epochs: int = 50
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    t_max: int = 50
    patience: int = 10
    dropout: float = 0.3
    augment_noise: float = 0.0
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    channels_last: bool = True
    architecture: str = "cnn"
    temporal_kernel: int | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class TrainResult:
    """A trained model (its best epoch's weights) and how it got there."""

    model: nn.Module
    history: pd.DataFrame
    best_epoch: int
    best_val_accuracy: float
    stopped_early: bool
    resumed_from: int | None


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"`` gives CUDA when available, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def to_tensor(volumes: np.ndarray, device: torch.device, channels_last: bool) -> torch.Tensor:
    """Volumes ``(N, X, Y, Z)`` -> ``(N, 1, X, Y, Z)``, windows ``(N, T, X, Y, Z)`` as they
    are: a float32 tensor on ``device``."""
    if volumes.ndim not in (4, 5):
        raise ValueError(f"expected volumes (N, X, Y, Z) or windows (N, T, X, Y, Z), got "
                         f"shape {volumes.shape}")
    x = torch.from_numpy(np.ascontiguousarray(volumes, dtype=np.float32))
    if x.ndim == 4:
        x = x.unsqueeze(1)
    x = x.to(device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last_3d)
    return x


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _load_checkpoint(path: Path, device: torch.device | str) -> dict:
    """Read a checkpoint with ``weights_only=True``: tensors and plain Python values only.

    A checkpoint somebody shares cannot run code when it is read; a file that needs more than
    that (arbitrary pickled objects) is refused with an error naming it.
    """
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"{path}: not a plain checkpoint (it holds objects beyond tensors and plain values, "
            f"which are refused rather than unpickled): {str(err).splitlines()[0]}") from None


def autocast(device: torch.device | str, amp: bool = True):
    """The precision policy of training and evaluation: bf16 autocast on CUDA when ``amp``,
    float32 elsewhere (a context manager; the benchmarks give the peer the same one)."""
    device = torch.device(device)
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


@torch.inference_mode()
def evaluate_batches(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None,
                     batch_size: int = 64, amp: bool = True) -> tuple[np.ndarray, float, float]:
    """Softmax probabilities (float64), mean loss and accuracy of ``model`` on ``x`` (eval mode).

    Deterministic per volume: every forward pass has exactly ``batch_size`` volumes (the last
    batch is padded with zeros, whose outputs are dropped), because convolution kernels round
    differently for different batch shapes (1e-7 here); a volume's probabilities are then the
    same whichever other volumes are evaluated with it, and in whatever order. The softmax is
    taken in float64 from the logits, so that ranking probabilities (AUC) ranks logit
    differences rather than float32 rounding.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    probs, loss_sum = [], 0.0
    n = len(x)
    with autocast(device, amp):
        for a in range(0, n, batch_size):
            xb = x[a:a + batch_size]
            real = len(xb)
            if real < batch_size:
                pad = xb.new_zeros((batch_size - real, *xb.shape[1:]))
                xb = torch.cat([xb, pad]).contiguous(memory_format=_memory_format(xb))
            logits = model(xb).float()[:real]
            if y is not None:
                loss_sum += nn.functional.cross_entropy(
                    logits, y[a:a + batch_size], reduction="sum").item()
            probs.append(torch.softmax(logits.double(), dim=1).cpu())
    model.train(was_training)
    p = torch.cat(probs).numpy() if probs else np.zeros((0, 0), np.float64)
    if y is None or n == 0:
        return p, float("nan"), float("nan")
    acc = float((p.argmax(1) == y.cpu().numpy()).mean())
    return p, loss_sum / n, acc


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    if x.dim() == 5 and x.is_contiguous(memory_format=torch.channels_last_3d) and not \
            x.is_contiguous():
        return torch.channels_last_3d
    return torch.contiguous_format


def train_model(
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    n_classes: int,
    config: TrainConfig = TrainConfig(),
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = True,
    progress: bool = True,
    on_epoch_end: Callable[[int, dict], None] | None = None,
) -> TrainResult:
    """Train the network of ``config.architecture`` with early stopping on validation accuracy.

    Parameters
    ----------
    train_x, val_x : numpy.ndarray
        Z-scored volumes ``(N, X, Y, Z)`` (a memory map is fine), or windows of T volumes
        ``(N, T, X, Y, Z)`` (:func:`emolib.forrest.gather_windows`).
    train_y, val_y : numpy.ndarray
        Class indices.
    n_classes : int
        Number of classes.
    config : TrainConfig
        Training parameters.
    checkpoint_dir : str or path-like, optional
        Where ``checkpoint.pt`` (every epoch), ``best.pt`` and ``history.csv`` are written.
        Without it nothing is saved and nothing can be resumed.
    resume : bool, default=True
        Continue from ``checkpoint_dir/checkpoint.pt`` when it exists (its configuration
        and data sizes must match, else ``ValueError``).
    progress : bool, default=True
        A progress bar over epochs (with the latest losses and accuracies).
    on_epoch_end : callable, optional
        Called as ``on_epoch_end(epoch, row)`` after each epoch's checkpoint is written.

    Returns
    -------
    TrainResult
        The model with its best epoch's weights, in eval mode.
    """
    device = resolve_device(config.device)
    if train_x.ndim not in (4, 5) or val_x.shape[1:] != train_x.shape[1:]:
        raise ValueError(f"expected training and validation volumes (N, X, Y, Z) or windows "
                         f"(N, T, X, Y, Z) of one shape, got {train_x.shape} and {val_x.shape}")
    n_frames = int(train_x.shape[1]) if train_x.ndim == 5 else None
    spec = {"architecture": config.architecture, "n_classes": n_classes,
            "in_shape": [int(s) for s in train_x.shape[-3:]], "n_frames": n_frames,
            "temporal_kernel": config.temporal_kernel, "dropout": config.dropout}
    torch.manual_seed(config.seed)
    model = build_model(**spec).to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last_3d)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=config.t_max)
    xt = to_tensor(train_x, device, config.channels_last)
    yt = torch.as_tensor(np.asarray(train_y), dtype=torch.long, device=device)
    xv = to_tensor(val_x, device, config.channels_last)
    yv = torch.as_tensor(np.asarray(val_y), dtype=torch.long, device=device)
    sizes = {"n_train": int(len(xt)), "n_val": int(len(xv)), "shape": list(train_x.shape[1:])}

    history: list[dict] = []
    best = {"acc": -1.0, "epoch": -1, "state": None}
    bad_epochs, start, resumed_from = 0, 0, None
    ckpt_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
    if ckpt_dir is not None:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        if resume and (ckpt_dir / CHECKPOINT).is_file():
            ck = _load_checkpoint(ckpt_dir / CHECKPOINT, device)
            if ck["config"] != config.to_dict() or ck["sizes"] != sizes:
                raise ValueError(f"{ckpt_dir / CHECKPOINT} was written with another "
                                 "configuration or other data; delete it or pass resume=False")
            model.load_state_dict(ck["model"])
            opt.load_state_dict(ck["optimizer"])
            sched.load_state_dict(ck["scheduler"])
            torch.set_rng_state(ck["torch_rng"])
            if device.type == "cuda" and ck.get("cuda_rng") is not None:
                torch.cuda.set_rng_state(ck["cuda_rng"])
            history, best, bad_epochs = ck["history"], ck["best"], ck["bad_epochs"]
            start = resumed_from = ck["epoch"] + 1

    stopped = bad_epochs >= config.patience
    bar = tqdm(range(start, config.epochs), desc="training", unit="epoch",
               disable=not progress, initial=start, total=config.epochs)
    for epoch in bar:
        if stopped:
            break
        t0 = time.perf_counter()
        model.train()
        gen = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
        order = torch.randperm(len(xt), generator=gen).to(device)
        noise_gen = (torch.Generator(device=device).manual_seed(config.seed * 999_983 + epoch)
                     if config.augment_noise > 0 else None)
        loss_sum, correct = 0.0, 0
        for a in range(0, len(order), config.batch_size):
            idx = order[a:a + config.batch_size]
            xb, yb = xt.index_select(0, idx), yt.index_select(0, idx)
            if noise_gen is not None:
                xb = xb + torch.empty_like(xb).normal_(0.0, config.augment_noise,
                                                      generator=noise_gen)
            with autocast(device, config.amp):
                logits = model(xb)
                loss = nn.functional.cross_entropy(logits.float(), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(idx)
            correct += int((logits.argmax(1) == yb).sum())
        lr = opt.param_groups[0]["lr"]
        sched.step()
        _, val_loss, val_acc = evaluate_batches(model, xv, yv, amp=config.amp)
        row = {"epoch": epoch, "train_loss": loss_sum / len(xt), "train_acc": correct / len(xt),
               "val_loss": val_loss, "val_acc": val_acc, "lr": lr,
               "seconds": time.perf_counter() - t0}
        history.append(row)
        if val_acc > best["acc"]:
            best = {"acc": val_acc, "epoch": epoch,
                    "state": {k: v.detach().clone() for k, v in model.state_dict().items()}}
            bad_epochs = 0
            if ckpt_dir is not None:
                _atomic_save({"model": best["state"], **spec, "epoch": epoch,
                              "val_acc": val_acc}, ckpt_dir / BEST)
        else:
            bad_epochs += 1
        stopped = bad_epochs >= config.patience
        if ckpt_dir is not None:
            _atomic_save({
                "epoch": epoch, "model": model.state_dict(), "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(), "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state() if device.type == "cuda" else None,
                "history": history, "best": best, "bad_epochs": bad_epochs,
                "config": config.to_dict(), "sizes": sizes,
            }, ckpt_dir / CHECKPOINT)
            pd.DataFrame(history).to_csv(ckpt_dir / HISTORY, index=False)
        bar.set_postfix(loss=f"{row['train_loss']:.3f}", val_acc=f"{val_acc:.3f}")
        if on_epoch_end is not None:
            on_epoch_end(epoch, row)
    bar.close()
    if best["state"] is not None:
        model.load_state_dict(best["state"])
    model.eval()
    return TrainResult(model, pd.DataFrame(history), int(best["epoch"]), float(best["acc"]),
                       bool(stopped), resumed_from)


def load_trained(path: str | os.PathLike, device: str = "cpu") -> nn.Module:
    """Load a ``best.pt`` written by :func:`train_model` (eval mode): the network it names
    (:func:`emolib.models.build_model`; a file without a name holds the original CNN).

    Read with ``weights_only=True``: a file holding anything but tensors and plain values is
    refused (``ValueError``), never unpickled.
    """
    ck = _load_checkpoint(Path(path), device)
    model = build_model(ck.get("architecture", "cnn"), ck["n_classes"], tuple(ck["in_shape"]),
                        ck.get("n_frames"), ck.get("temporal_kernel"), ck["dropout"])
    model.load_state_dict(ck["model"])
    return model.to(device).eval()


def config_from_dict(spec: dict) -> TrainConfig:
    """A :class:`TrainConfig` from a dict, rejecting unknown keys with their names."""
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(spec) - known)
    if unknown:
        raise ValueError(f"unknown training parameter(s) {unknown}; known: {sorted(known)}")
    return TrainConfig(**spec)


