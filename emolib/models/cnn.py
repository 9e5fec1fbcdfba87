"""The 3D CNN of the original project (``Bigger3DCNN``), layer for layer.

Architecture (DESIGN.md): a 3x3x3 stem convolution (1 -> 32, no bias) with batch norm and
ReLU6, four depthwise-separable blocks (1x1x1 expansion x2, BN, ReLU6, 3x3x3 depthwise
convolution with stride 2, BN, ReLU6, 1x1x1 projection, BN), channels 32 -> 64 -> 128 ->
256 -> 256, global average pooling, dropout 0.3 and a linear read-out. For 5 classes at
80 x 80 x 35 it has 424,549 parameters, the original's count.

The model expects volumes already z-scored by their own mean and std (the original's
preprocessing, done once by :mod:`emolib.forrest.dataprep` when it builds the volume cache). Keeping
the normalisation out of ``forward`` keeps every layer local: occluding a patch changes only
the activations that the patch can reach, which :mod:`emolib.occlusion` relies on.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

__all__ = ["EmotionCNN", "SeparableBlock3d", "count_parameters"]

#: Stable names of the layers whose activations later chapters read (RSA, UMAP).
LAYER_NAMES = ("conv1", "block1", "block2", "block3", "block4", "pool", "fc")


class SeparableBlock3d(nn.Sequential):
    """Depthwise-separable 3D block: expand x2, depthwise 3x3x3 stride 2, project.

    Parameters
    ----------
    in_channels, out_channels : int
        Channels in and out.
    expansion : int, default=2
        Channel multiplier of the 1x1x1 expansion.
    stride : int, default=2
        Stride of the depthwise convolution.
    """

    def __init__(self, in_channels: int, out_channels: int, expansion: int = 2, stride: int = 2):
        hidden = in_channels * expansion
        super().__init__(
            OrderedDict(
                expand=nn.Conv3d(in_channels, hidden, kernel_size=1, bias=False),
                expand_bn=nn.BatchNorm3d(hidden),
                expand_act=nn.ReLU6(inplace=True),
                depthwise=nn.Conv3d(
                    hidden, hidden, kernel_size=3, stride=stride, padding=1,
                    groups=hidden, bias=False,
                ),
                depthwise_bn=nn.BatchNorm3d(hidden),
                depthwise_act=nn.ReLU6(inplace=True),
                project=nn.Conv3d(hidden, out_channels, kernel_size=1, bias=False),
                project_bn=nn.BatchNorm3d(out_channels),
            )
        )


class EmotionCNN(nn.Module):
    """The original ``Bigger3DCNN`` for single BOLD volumes.

    Parameters
    ----------
    n_classes : int, default=5
        Number of emotion classes.
    in_shape : tuple of int, default=(80, 80, 35)
        Spatial shape of a volume (the network is fully convolutional up to the global
        pooling, so this is only recorded for checks and summaries).
    in_channels : int, default=1
        Input channels.
    dropout : float, default=0.3
        Dropout probability before the read-out.

    Notes
    -----
    Layers are named ``conv1``, ``block1`` .. ``block4``, ``pool``, ``fc`` (see
    :data:`LAYER_NAMES`); :meth:`features` returns the 256-d pooled features.
    """

    def __init__(
        self,
        n_classes: int = 5,
        in_shape: tuple[int, int, int] = (80, 80, 35),
        in_channels: int = 1,
        dropout: float = 0.3,
    ):
        super().__init__()
        self.n_classes = int(n_classes)
        self.in_shape = tuple(int(s) for s in in_shape)
        self.in_channels = int(in_channels)
        self.conv1 = nn.Sequential(
            OrderedDict(
                conv=nn.Conv3d(in_channels, 32, kernel_size=3, padding=1, bias=False),
                bn=nn.BatchNorm3d(32),
                act=nn.ReLU6(inplace=True),
            )
        )
        self.block1 = SeparableBlock3d(32, 64)
        self.block2 = SeparableBlock3d(64, 128)
        self.block3 = SeparableBlock3d(128, 256)
        self.block4 = SeparableBlock3d(256, 256)
        self.pool = nn.Sequential(
            OrderedDict(avg=nn.AdaptiveAvgPool3d(1), flatten=nn.Flatten(1))
        )
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(256, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Return the 256-d globally pooled features (before dropout and read-out)."""
        x = self.conv1(x)
        x = self.block1(x)
        x = self.block2(x)
        x = self.block3(x)
        x = self.block4(x)
        return self.pool(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return class logits for a batch ``(N, in_channels, X, Y, Z)`` of z-scored volumes."""
        return self.fc(self.dropout(self.features(x)))


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
