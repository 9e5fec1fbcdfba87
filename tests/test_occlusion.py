"""Occlusion maps against Captum's ``Occlusion`` (the reference), for both engines."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from emolib.errors import InputDataError
from emolib.model import EmotionCNN
from emolib.occlusion import (
    class_mean_maps,
    occlusion_map,
    spread_coarse_maps,
    supports_incremental,
    window_starts,
)

captum_attr = pytest.importorskip("captum.attr")

TOL = 1e-5


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one thread is faster, and far faster on a busy shared machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _randomise_bn(model: nn.Module, gen: torch.Generator) -> None:
    """Give every batch norm non-trivial running statistics and affine parameters."""
    for mod in model.modules():
        if isinstance(mod, nn.BatchNorm3d):
            c = mod.num_features
            mod.running_mean.copy_(0.1 * torch.randn(c, generator=gen))
            mod.running_var.copy_(0.05 + 0.15 * torch.rand(c, generator=gen))
            mod.weight.data.copy_(0.5 + torch.rand(c, generator=gen))
            mod.bias.data.copy_(0.1 * torch.randn(c, generator=gen))


def _cnn(in_channels: int = 1, seed: int = 0) -> EmotionCNN:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = EmotionCNN(n_classes=4, in_shape=(11, 9, 7), in_channels=in_channels)
    _randomise_bn(model, gen)
    return model.eval()


def _captum_map(
    model: nn.Module,
    volume: torch.Tensor,
    target: int,
    patch: tuple[int, int, int],
    stride: tuple[int, int, int],
    fill: float = 0.0,
) -> np.ndarray:
    """Captum's occlusion of one volume (C, X, Y, Z), summed over channels' identical maps."""
    occ = captum_attr.Occlusion(lambda z: torch.softmax(model(z), dim=1))
    c = volume.shape[0]
    with torch.no_grad():
        attr = occ.attribute(
            volume[None], sliding_window_shapes=(c, *patch), strides=(1, *stride),
            baselines=fill, target=target, perturbations_per_eval=32,
        )  # fmt: skip
    return attr[0, 0].numpy()


def _volumes(n: int, shape: tuple[int, ...], seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=gen)


CASES = [
    # shape, patch, stride: odd shapes (cut windows), overlap, mixed, single voxels
    ((11, 9, 7), (2, 2, 2), (2, 2, 2)),
    ((10, 8, 6), (3, 3, 3), (1, 2, 2)),
    ((9, 12, 5), (4, 2, 3), (3, 1, 2)),
    ((6, 5, 4), (1, 1, 1), (1, 1, 1)),
]


@pytest.mark.parametrize(("shape", "patch", "stride"), CASES)
@pytest.mark.parametrize("method", ["incremental", "batched"])
def test_maps_match_captum(shape, patch, stride, method):
    model = _cnn()
    x = _volumes(2, (1, *shape))
    targets = [1, 3]
    res = occlusion_map(model, x, targets, patch, stride, batch_size=16, method=method,
                        progress=False)  # fmt: skip
    assert res.method == method
    assert res.maps.shape == (2, *shape) and res.maps.dtype == np.float32
    for i, t in enumerate(targets):
        ref = _captum_map(model, x[i], t, patch, stride)
        assert np.abs(ref).max() > 1e-3  # the comparison is not vacuous
        np.testing.assert_allclose(res.maps[i], ref, atol=TOL, rtol=0)
        with torch.no_grad():
            p = torch.softmax(model(x[i : i + 1]), 1)[0, t].item()
        assert res.base_prob[i] == pytest.approx(p, abs=1e-6)


def test_grid_is_captums_and_coarse_is_the_drop_per_window():
    model = _cnn()
    shape, patch = (11, 9, 7), (2, 3, 2)
    x = _volumes(1, (1, *shape), seed=5)
    res = occlusion_map(model, x, 2, patch, patch, progress=False)
    # Captum: ceil((n - patch) / stride) + 1 windows per axis, the last one cut off
    expected = tuple(int(np.ceil((n - p) / p)) + 1 for n, p in zip(shape, patch, strict=True))
    assert res.grid_shape == expected == res.coarse.shape[1:]
    assert [s.tolist() for s in res.starts] == [
        list(range(0, n, p)) for n, p in zip(shape, patch, strict=True)
    ]
    # non-overlapping windows: Captum's map on a window's voxels is that window's drop
    ref = _captum_map(model, x[0], 2, patch, patch)
    corner = ref[:: patch[0], :: patch[1], :: patch[2]]
    np.testing.assert_allclose(res.coarse[0], corner, atol=TOL, rtol=0)


def test_stride_larger_than_patch_leaves_gaps_at_zero():
    """Captum refuses stride > patch; both engines agree and uncovered voxels get 0."""
    model = _cnn()
    x = _volumes(1, (1, 10, 9, 7), seed=13)
    inc = occlusion_map(model, x, 2, (1, 2, 1), (3, 3, 2), progress=False)
    bat = occlusion_map(model, x, 2, (1, 2, 1), (3, 3, 2), method="batched", progress=False)
    np.testing.assert_allclose(inc.maps, bat.maps, atol=TOL, rtol=0)
    assert [s.tolist() for s in inc.starts] == [[0, 3, 6, 9], [0, 3, 6], [0, 2, 4, 6]]
    covered = np.zeros((10, 9, 7), bool)
    covered[np.ix_([0, 3, 6, 9], [0, 1, 3, 4, 6, 7], [0, 2, 4, 6])] = True
    assert np.all(inc.maps[0][~covered] == 0) and np.abs(inc.maps[0][covered]).max() > 1e-3


def test_region_matches_captum_on_the_region():
    """Occluding only a box = Captum on that box with the rest of the volume held fixed."""
    model = _cnn()
    shape, patch, stride = (11, 9, 7), (2, 2, 2), (2, 2, 2)
    region = (slice(2, 9), slice(4, 9), slice(1, 6))
    x = _volumes(1, (1, *shape), seed=7)
    full = x[0]

    def forward(sub: torch.Tensor) -> torch.Tensor:
        z = full.expand(sub.shape[0], *full.shape).clone()
        z[:, :, region[0], region[1], region[2]] = sub
        return torch.softmax(model(z), dim=1)

    occ = captum_attr.Occlusion(forward)
    with torch.no_grad():
        ref = occ.attribute(
            full[:, region[0], region[1], region[2]][None], sliding_window_shapes=(1, *patch),
            strides=(1, *stride), baselines=0.0, target=0, perturbations_per_eval=16,
        )[0, 0].numpy()  # fmt: skip
    for method in ("incremental", "batched"):
        res = occlusion_map(model, x, 0, patch, stride, region=region, method=method,
                            progress=False)  # fmt: skip
        np.testing.assert_allclose(res.maps[0][region], ref, atol=TOL, rtol=0)
        outside = np.ones(shape, bool)
        outside[region] = False
        assert np.all(res.maps[0][outside] == 0)
        assert res.starts[0][0] == 2 and res.starts[2][-1] == 5


def test_two_channels_and_a_nonzero_fill_match_captum():
    model = _cnn(in_channels=2, seed=3)
    shape, patch, stride = (7, 8, 5), (3, 2, 2), (2, 2, 1)
    x = _volumes(1, (2, *shape), seed=9)
    res = occlusion_map(model, x, 1, patch, stride, fill=0.5, progress=False)
    assert res.method == "incremental"
    ref = _captum_map(model, x[0], 1, patch, stride, fill=0.5)
    np.testing.assert_allclose(res.maps[0], ref, atol=TOL, rtol=0)


class _TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(1, 6, 3, padding=1)
        self.bn = nn.BatchNorm3d(6)
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        h = torch.relu(self.bn(self.conv(x)))
        return self.head(h.amax(dim=(2, 3, 4)))


def test_generic_model_uses_the_batched_engine_and_matches_captum():
    torch.manual_seed(0)
    model = _TinyNet().eval()
    shape, patch, stride = (9, 7, 6), (3, 2, 2), (2, 2, 2)
    x = _volumes(2, shape, seed=11)  # (N, X, Y, Z) without a channel axis
    assert not supports_incremental(model)
    res = occlusion_map(model, x, [0, 2], patch, stride, progress=False)
    assert res.method == "batched"
    for i, t in enumerate([0, 2]):
        ref = _captum_map(model, x[i][None], t, patch, stride)
        assert np.abs(ref).max() > 1e-3
        np.testing.assert_allclose(res.maps[i], ref, atol=TOL, rtol=0)
    with pytest.raises(ValueError, match="incremental"):
        occlusion_map(model, x, 0, method="incremental", progress=False)


def test_incremental_engine_is_only_for_the_plain_emotion_cnn():
    assert supports_incremental(_cnn())

    class Tweaked(EmotionCNN):
        def forward(self, x):
            return super().forward(x) * 2

    assert not supports_incremental(Tweaked(n_classes=3))
    odd = EmotionCNN(n_classes=3)
    odd.block2.depthwise_act = nn.ReLU()
    assert not supports_incremental(odd)


def test_training_flags_are_restored():
    model = _cnn()
    model.train()
    model.block3.eval()  # mixed flags survive too
    flags = {name: m.training for name, m in model.named_modules()}
    x = _volumes(1, (1, 6, 5, 4))
    occlusion_map(model, x, 0, progress=False)
    assert {name: m.training for name, m in model.named_modules()} == flags


def test_bad_input_is_rejected():
    model = _cnn()
    x = _volumes(2, (1, 6, 5, 4))
    with pytest.raises(ValueError, match="targets"):
        occlusion_map(model, x, [0, 1, 2], progress=False)
    with pytest.raises(ValueError, match="targets"):
        occlusion_map(model, x, [0, 4], progress=False)
    x[1, 0, 2, 2, 2] = float("nan")
    with pytest.raises(InputDataError, match="NaN"):
        occlusion_map(model, x, [0, 1], progress=False)


def test_spread_of_a_known_grid():
    # 1-D along x: windows [0, 3), [2, 5), [4, 6) (cut) of a 6-voxel axis, stride 2
    starts = window_starts((6, 1, 1), (3, 1, 1), (2, 1, 1))
    assert starts[0].tolist() == [0, 2, 4]
    coarse = np.array([1.0, 2.0, 4.0]).reshape(1, 3, 1, 1)
    maps = spread_coarse_maps(coarse, (6, 1, 1), starts, (3, 1, 1))
    np.testing.assert_allclose(maps[0, :, 0, 0], [1, 1, 1.5, 2, 3, 4])


def test_class_mean_maps():
    rng = np.random.default_rng(0)
    maps = rng.normal(size=(5, 3, 2, 2)).astype(np.float32)
    targets = [0, 2, 0, 2, 2]
    means = class_mean_maps(maps, targets, 4)
    np.testing.assert_allclose(means[0], maps[[0, 2]].mean(0), rtol=1e-6)
    np.testing.assert_allclose(means[2], maps[[1, 3, 4]].mean(0), rtol=1e-6)
    assert np.isnan(means[1]).all() and np.isnan(means[3]).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    model = _cnn()
    x = _volumes(1, (1, 11, 9, 7))
    cpu = occlusion_map(model, x, 1, (2, 2, 2), (1, 1, 1), progress=False)
    gpu = occlusion_map(model.cuda(), x, 1, (2, 2, 2), (1, 1, 1), progress=False)
    assert gpu.method == "incremental"
    np.testing.assert_allclose(gpu.maps, cpu.maps, atol=TOL, rtol=0)
