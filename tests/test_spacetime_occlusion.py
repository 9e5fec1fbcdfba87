"""Occlusion in space and time (emolib.occlusion.spacetime): Captum's Occlusion on 4-D input
to 1e-5, and the temporal profile of a model whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from emolib.models import EmotionCNN, SpaceTimeCNN
from emolib.occlusion import spacetime_occlusion, temporal_profile
from emolib.testing import randomise_batchnorm

pytest.importorskip("captum")


def _captum(model, window, target, patch, stride, fill=0.0):
    from captum.attr import Occlusion

    with torch.inference_mode():
        attr = Occlusion(lambda z: torch.softmax(model(z), dim=1)).attribute(
            window[None], sliding_window_shapes=tuple(patch), strides=tuple(stride),
            baselines=fill, target=target, perturbations_per_eval=16)
    return attr[0].numpy()


@pytest.mark.parametrize("kind", ["space-time", "time as channels"])
@pytest.mark.parametrize("patch,stride", [((1, 2, 2, 2), (1, 2, 2, 2)),
                                          ((2, 3, 2, 2), (1, 2, 1, 2))])
def test_maps_equal_captum_on_windows(kind, patch, stride):
    """Both window networks, tiling and overlapping boxes that stick out of the window:
    the maps equal Captum's to 1e-5."""
    gen = torch.Generator().manual_seed(3)
    torch.manual_seed(3)
    shape = (9, 8, 5)
    model = (SpaceTimeCNN(3, shape, n_frames=4, temporal_kernel=2) if kind == "space-time"
             else EmotionCNN(3, shape, in_channels=4))
    model = randomise_batchnorm(model, gen).eval()
    windows = torch.randn(2, 4, *shape, generator=gen)
    targets = [0, 2]
    ours = spacetime_occlusion(model, windows, targets, patch=patch, stride=stride)
    assert ours.shape == (2, 4, *shape)
    for k in range(2):
        ref = _captum(model, windows[k], targets[k], patch, stride)
        np.testing.assert_allclose(ours[k], ref, rtol=0, atol=1e-5)
    assert np.abs(ours).max() > 1e-4  # the maps are not trivially zero


class _LooksAtOneVolume(nn.Module):
    """Logits from one region of one volume of the window: the only moment that matters."""

    def __init__(self, frame: int):
        super().__init__()
        self.frame = frame
        self.scale = nn.Parameter(torch.tensor(4.0))

    def forward(self, x):
        signal = x[:, self.frame, 2:5, 2:5, 1:3].mean(dim=(1, 2, 3))
        return torch.stack([self.scale * signal, -self.scale * signal], dim=1)


def test_temporal_profile_peaks_at_the_volume_the_model_reads():
    """A model that reads volume 2 of 5 only: the maps are zero elsewhere in time and in
    space, and the class's temporal profile peaks at offset 2."""
    rng = np.random.default_rng(0)
    windows = rng.standard_normal((6, 5, 7, 7, 4)).astype(np.float32)
    windows[:, 2, 2:5, 2:5, 1:3] += 2.0  # class 0 is confident: its signal is high
    model = _LooksAtOneVolume(frame=2)
    maps = spacetime_occlusion(model, windows, [0] * 6, patch=(1, 1, 1, 1))
    assert np.abs(np.delete(maps, 2, axis=1)).max() == 0
    outside = maps[:, 2].copy()
    outside[:, 2:5, 2:5, 1:3] = 0
    assert np.abs(outside).max() == 0
    profile = temporal_profile(maps, [0] * 6, n_classes=2)
    assert np.argmax(profile[0]) == 2 and profile[0, 2] > 0
    assert np.isnan(profile[1]).all()  # no window of class 1


def test_bad_inputs_are_refused():
    model = SpaceTimeCNN(2, (6, 6, 4), n_frames=3).eval()
    with pytest.raises(ValueError, match=r"windows must be \(N, T, X, Y, Z\)"):
        spacetime_occlusion(model, np.zeros((3, 6, 6, 4)), [0, 0, 0])
    with pytest.raises(ValueError, match="2 targets for 1 windows"):
        spacetime_occlusion(model, np.zeros((1, 3, 6, 6, 4)), [0, 1])
    with pytest.raises(ValueError, match="patch must be 4 positive integers"):
        spacetime_occlusion(model, np.zeros((1, 3, 6, 6, 4)), [0], patch=(2, 2, 2))
    with pytest.raises(ValueError, match="mask has shape"):
        temporal_profile(np.zeros((1, 3, 6, 6, 4)), [0], 2, mask=np.ones((6, 6), bool))
