"""One place that builds the decoding networks from their names (training, loading, the
chapters): single volumes or windows of volumes, the original network or the (2+1)D one."""

from __future__ import annotations

from torch import nn

from emolib.models.cnn import EmotionCNN
from emolib.models.spacetime import SpaceTimeCNN

__all__ = ["ARCHITECTURES", "build_model"]

ARCHITECTURES = ("cnn", "spacetime")


def build_model(architecture: str = "cnn", n_classes: int = 5,
                in_shape: tuple[int, int, int] = (80, 80, 35), n_frames: int | None = None,
                temporal_kernel: int | None = None, dropout: float = 0.3) -> nn.Module:
    """The network of ``architecture`` for inputs of ``n_frames`` volumes of ``in_shape``.

    Parameters
    ----------
    architecture : {"cnn", "spacetime"}, default="cnn"
        ``"cnn"``: :class:`~emolib.models.cnn.EmotionCNN`, the original network: on single
        volumes (``n_frames`` None, input ``(N, X, Y, Z)``) or with the window's T volumes as
        its input channels (input ``(N, T, X, Y, Z)``). ``"spacetime"``:
        :class:`~emolib.models.spacetime.SpaceTimeCNN`, the factorised (2+1)D network, for
        windows only.
    n_classes : int, default=5
        Number of classes.
    in_shape : tuple of int, default=(80, 80, 35)
        Spatial shape of a volume.
    n_frames : int, optional
        Volumes per window (T); None for single volumes.
    temporal_kernel : int, optional
        Length of the (2+1)D network's temporal convolution (default: the whole window);
        only with ``"spacetime"``.
    dropout : float, default=0.3
        Dropout before the read-out.
    """
    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {architecture!r}")
    if n_frames is not None and int(n_frames) < 1:
        raise ValueError(f"n_frames must be a positive number of volumes, got {n_frames}")
    if architecture == "cnn":
        if temporal_kernel is not None:
            raise ValueError("temporal_kernel applies to the spacetime architecture only")
        return EmotionCNN(n_classes=n_classes, in_shape=tuple(in_shape),
                          in_channels=1 if n_frames is None else int(n_frames), dropout=dropout)
    if n_frames is None:
        raise ValueError("the spacetime architecture reads windows: give n_frames")
    return SpaceTimeCNN(n_classes=n_classes, in_shape=tuple(in_shape), n_frames=int(n_frames),
                        temporal_kernel=temporal_kernel, dropout=dropout)
