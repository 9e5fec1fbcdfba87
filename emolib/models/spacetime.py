"""Networks for windows of T consecutive volumes (input ``(N, T, X, Y, Z)``).

torch has no ``Conv4d``. Two ways to see time, both built on the original network:

- **time as channels**: :class:`~emolib.models.cnn.EmotionCNN` with ``in_channels=T``; its
  3x3x3 stem mixes the T volumes at once (the cheapest: ``(T - 1) x 32 x 27`` weights more
  than the original's 424,549 for 5 classes).
- **factorised (2+1)D**, :class:`SpaceTimeCNN`: the original's 3x3x3 stem applied to every
  volume with the same weights (space), then a convolution across the T volumes at every
  voxel (time, ``temporal_kernel`` volumes long), batch norm and ReLU6, the mean over the
  remaining time steps, and the original's four separable blocks, pooling and read-out. As
  in R(2+1)D video networks (Tran et al., 2018), space and time are separate convolutions
  with a nonlinearity between them.

Both are occluded with the plain batched engine (:mod:`emolib.occlusion.spacetime`); their
convolutions are local in space (the factorised one's also in time, up to its mean over the
remaining time steps).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from emolib.models.cnn import EmotionCNN

__all__ = ["SpaceTimeCNN"]


class SpaceTimeCNN(EmotionCNN):
    """The original network with a temporal convolution after its stem: (2+1)D.

    Parameters
    ----------
    n_classes : int, default=5
        Number of emotion classes.
    in_shape : tuple of int, default=(80, 80, 35)
        Spatial shape of a volume.
    n_frames : int, default=4
        Volumes per window (T).
    temporal_kernel : int, optional
        Length of the temporal convolution (valid, no padding), at most ``n_frames``;
        default ``n_frames`` (every volume of the window at once).
    dropout : float, default=0.3
        Dropout probability before the read-out.

    Notes
    -----
    Layers: ``conv1`` (per volume), ``temporal``, ``block1`` .. ``block4``, ``pool``, ``fc``.
    The parameters are those of :class:`~emolib.models.cnn.EmotionCNN` plus the temporal
    convolution's ``32 x 32 x temporal_kernel`` weights and its batch norm's 64.
    """

    def __init__(self, n_classes: int = 5, in_shape: tuple[int, int, int] = (80, 80, 35),
                 n_frames: int = 4, temporal_kernel: int | None = None, dropout: float = 0.3):
        super().__init__(n_classes=n_classes, in_shape=in_shape, in_channels=1,
                         dropout=dropout)
        self.n_frames = int(n_frames)
        kt = self.n_frames if temporal_kernel is None else int(temporal_kernel)
        if not 1 <= kt <= self.n_frames:
            raise ValueError(f"temporal_kernel must be in 1..n_frames ({self.n_frames}), "
                             f"got {temporal_kernel}")
        self.temporal_kernel = kt
        self.temporal = nn.Sequential(OrderedDict(
            # over (time, x*y, z): a kernel (kt, 1, 1) convolves each voxel's time series
            conv=nn.Conv3d(32, 32, kernel_size=(kt, 1, 1), bias=False),
            bn=nn.BatchNorm3d(32),
            act=nn.ReLU6(inplace=True),
        ))

    def space_time(self, x: torch.Tensor) -> torch.Tensor:
        """Stem on every volume, then the temporal convolution: ``(N, 32, T', X, Y, Z)``
        with ``T' = T - temporal_kernel + 1``."""
        if x.ndim != 5 or x.shape[1] != self.n_frames:
            raise ValueError(f"expected windows (N, {self.n_frames}, X, Y, Z), got shape "
                             f"{tuple(x.shape)}")
        n, t, *space = x.shape
        h = self.conv1(x.reshape(n * t, 1, *space))  # (N*T, 32, X, Y, Z)
        c = h.shape[1]
        h = h.reshape(n, t, c, *space).transpose(1, 2)  # (N, 32, T, X, Y, Z)
        h = self.temporal(h.reshape(n, c, t, space[0] * space[1], space[2]))
        return h.reshape(n, c, h.shape[2], *space)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The 256-d pooled features of windows ``(N, T, X, Y, Z)``."""
        x = self.space_time(x).mean(dim=2)
        x = self.block1(x)
        x = self.block2(x)
        x = self.block3(x)
        x = self.block4(x)
        return self.pool(x)
