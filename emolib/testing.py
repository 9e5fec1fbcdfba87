"""Helpers shared by the test suite and the benchmarks (one place, as ``numpy.testing``).

- :func:`randomise_batchnorm` / :func:`seeded_cnn`: an :class:`emolib.models.EmotionCNN` with
  non-trivial batch-norm statistics, so that folding them (the incremental occlusion engine)
  is really exercised.
- :func:`smooth_volume`: a smooth z-scored random volume.
- :func:`captum_occlusion`: the reference occlusion map, Captum's ``Occlusion`` with the
  target's softmax probability as forward function (Captum is a test requirement only).
- :func:`kill_when`: run Python code in a subprocess and SIGKILL it when it prints a marker
  (the kill-and-resume tests: no clean-up of any kind happens).
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from emolib.models.cnn import EmotionCNN

__all__ = ["captum_occlusion", "child_env", "kill_when", "randomise_batchnorm", "seeded_cnn",
           "smooth_volume"]


def randomise_batchnorm(model: nn.Module, generator: torch.Generator) -> nn.Module:
    """Give every 3-D batch norm of ``model`` non-trivial running statistics and affine
    parameters (in place; returns ``model``)."""
    for mod in model.modules():
        if isinstance(mod, nn.BatchNorm3d):
            c = mod.num_features
            mod.running_mean.copy_(0.1 * torch.randn(c, generator=generator))
            mod.running_var.copy_(0.05 + 0.15 * torch.rand(c, generator=generator))
            mod.weight.data.copy_(0.5 + torch.rand(c, generator=generator))
            mod.bias.data.copy_(0.1 * torch.randn(c, generator=generator))
    return model


def seeded_cnn(
    n_classes: int, in_shape: Sequence[int], in_channels: int = 1, seed: int = 0
) -> EmotionCNN:
    """An :class:`~emolib.models.EmotionCNN` initialised from ``seed`` with randomised batch
    norms, in eval mode."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = EmotionCNN(n_classes=n_classes, in_shape=tuple(in_shape), in_channels=in_channels)
    return randomise_batchnorm(model, gen).eval()


def smooth_volume(shape: Sequence[int], seed: int = 1) -> torch.Tensor:
    """A random volume smoothed by a 3x3x3 box filter and z-scored, shape (1, 1, *shape)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 1, *shape, generator=gen)
    x = nn.functional.avg_pool3d(x, 3, stride=1, padding=1)
    return (x - x.mean()) / x.std()


def captum_occlusion(
    model: nn.Module,
    volume: torch.Tensor,
    target: int,
    patch: Sequence[int],
    stride: Sequence[int],
    fill: float = 0.0,
    *,
    region: tuple[slice, slice, slice] | None = None,
    batch_size: int = 32,
) -> np.ndarray:
    """Captum's occlusion map of one volume, the reference of the occlusion engines.

    Parameters
    ----------
    model : torch.nn.Module
        Classifier returning logits, in eval mode.
    volume : torch.Tensor, shape (C, X, Y, Z)
        The volume.
    target : int
        Class whose softmax probability is scored.
    patch, stride : sequence of 3 int
        Window shape and step (``sliding_window_shapes=(C, *patch)``, ``strides=(1, *stride)``).
    fill : float, default=0.0
        Baseline written into the window.
    region : tuple of slice, optional
        Occlude only windows of this box; the model still sees the whole volume.
    batch_size : int, default=32
        Captum's ``perturbations_per_eval``.

    Returns
    -------
    numpy.ndarray, shape (X, Y, Z) or the region's shape
        The map of the first channel (all channels' maps are identical).
    """
    from captum.attr import Occlusion

    c = volume.shape[0]
    if region is None:
        inputs = volume[None]

        def forward(z: torch.Tensor) -> torch.Tensor:
            return torch.softmax(model(z), dim=1)
    else:
        inputs = volume[:, region[0], region[1], region[2]][None]

        def forward(sub: torch.Tensor) -> torch.Tensor:
            z = volume.expand(sub.shape[0], *volume.shape).clone()
            z[:, :, region[0], region[1], region[2]] = sub
            return torch.softmax(model(z), dim=1)

    with torch.inference_mode():
        attr = Occlusion(forward).attribute(
            inputs, sliding_window_shapes=(c, *patch), strides=(1, *stride), baselines=fill,
            target=target, perturbations_per_eval=batch_size,
        )  # fmt: skip
    return attr[0, 0].numpy()


def child_env() -> dict[str, str]:
    """The environment for a child Python process whose numbers a test compares with its own.

    The repository root is put on ``PYTHONPATH`` (so that the child can import ``tests``),
    and the math libraries get this process's torch thread count: convolutions round
    differently with other thread counts, and a test may run with fewer threads than the
    machine has (``make test`` splits the cores between pytest-xdist workers).
    """
    root = Path(__file__).resolve().parents[1]
    threads = str(torch.get_num_threads())
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(root), *filter(None, [os.environ.get("PYTHONPATH")])]),
        "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}


def kill_when(code: str, marker: str, args: Sequence[str] = (), timeout: float = 300.0,
              cwd: str | os.PathLike | None = None) -> str:
    """Run ``code`` with ``python -c`` and kill it with SIGKILL once it prints ``marker``.

    The child's ``sys.argv[1:]`` is ``args``; its environment is :func:`child_env` (the
    repository root on ``PYTHONPATH``, this process's thread count). Returns the child's
    output up to the marker.

    Raises
    ------
    RuntimeError
        If the child ends, or ``timeout`` seconds pass, before the marker.
    """
    proc = subprocess.Popen([sys.executable, "-c", code, *map(str, args)], env=child_env(),
                            cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    lines: queue.Queue = queue.Queue()

    def read() -> None:  # a thread, so that a silent child cannot block the deadline
        for line in proc.stdout:
            lines.put(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    try:
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = lines.get(timeout=min(left, 1.0))
            except queue.Empty:
                if proc.poll() is not None and not reader.is_alive() and lines.empty():
                    break
                continue
            seen.append(line)
            if marker in line:
                proc.send_signal(signal.SIGKILL)  # no clean-up of any kind
                proc.wait()
                return "".join(seen)
        raise RuntimeError(f"the child ended or timed out before printing {marker!r}:\n"
                           + "".join(seen)[-2000:])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
