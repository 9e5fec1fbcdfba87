"""Occlusion maps against Captum's ``Occlusion`` (the reference), for both engines."""

from __future__ import annotations

import copy
import re
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from emolib.errors import InputDataError
from emolib.models import EmotionCNN
from emolib.occlusion import (
    class_mean_maps,
    occlusion_map,
    spread_coarse_maps,
    supports_incremental,
    why_not_incremental,
    window_starts,
)
from emolib.occlusion.incremental import IncrementalOcclusion
from emolib.testing import captum_occlusion, seeded_cnn

captum_attr = pytest.importorskip("captum.attr")

TOL = 1e-5


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one thread is faster, and far faster on a busy shared machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _cnn(in_channels: int = 1, seed: int = 0) -> EmotionCNN:
    return seeded_cnn(4, (11, 9, 7), in_channels=in_channels, seed=seed)


def _captum_map(
    model: nn.Module,
    volume: torch.Tensor,
    target: int,
    patch: tuple[int, int, int],
    stride: tuple[int, int, int],
    fill: float = 0.0,
) -> np.ndarray:
    """Captum's occlusion of one volume (C, X, Y, Z) (channels' maps are identical)."""
    return captum_occlusion(model, volume, target, patch, stride, fill, batch_size=32)


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


def test_windows_grouped_by_box_size_partition_the_grid_and_match_the_batched_engine():
    """On a grid deep enough for the strides, windows fall in groups of different box sizes:
    every window is in exactly one group, the groups' deep boxes are smaller than the widest
    plan's, and the maps equal the batched engine's (itself equal to Captum's, above)."""
    shape, patch, stride = (36, 20, 13), (2, 2, 2), (2, 2, 2)
    model = seeded_cnn(4, shape, seed=2).eval()
    starts = window_starts(shape, patch, stride)
    bounds = [(s, np.minimum(s + p, n)) for s, p, n in zip(starts, patch, shape, strict=True)]
    engine = IncrementalOcclusion(model)
    n_groups = []
    for batch_size in (1, 24, 64):  # classes merged up to about batch_size ** (1/3) windows
        plan = engine.plan(shape, bounds, batch_size)
        sel = np.concatenate([s.numpy() for s, _ in plan["groups"]])
        assert np.array_equal(np.sort(sel), np.arange(np.prod([len(s) for s in starts])))
        widest = np.prod(plan["widest"]["m"][-1])
        assert min(np.prod(g["m"][-1]) for _, g in plan["groups"]) < widest
        n_groups.append(len(plan["groups"]))
    assert n_groups[0] > 8 and n_groups == sorted(n_groups, reverse=True)
    x = _volumes(1, (1, *shape), seed=4)
    bat = occlusion_map(model, x, 2, patch, stride, batch_size=24, method="batched",
                        progress=False)  # fmt: skip
    assert np.abs(bat.coarse).max() > 1e-3
    for batch_size in (1, 24):
        inc = occlusion_map(model, x, 2, patch, stride, batch_size=batch_size,
                            method="incremental", progress=False)  # fmt: skip
        np.testing.assert_allclose(inc.coarse, bat.coarse, atol=TOL, rtol=0)


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
    assert supports_incremental(_cnn()) and why_not_incremental(_cnn()) is None

    class Tweaked(EmotionCNN):
        def forward(self, x):
            return super().forward(x) * 2

    assert not supports_incremental(Tweaked(n_classes=3).eval())
    assert "overrides EmotionCNN.forward" in why_not_incremental(Tweaked(n_classes=3).eval())
    odd = EmotionCNN(n_classes=3).eval()
    odd.block2.depthwise_act = nn.ReLU()
    assert not supports_incremental(odd)
    assert "model.block2.depthwise_act is a ReLU" in why_not_incremental(odd)
    assert "not an emolib.models.cnn.EmotionCNN" in why_not_incremental(_TinyNet())


# --------------------------------------------------------------------------------------
# models the incremental engine does not compute exactly: refused, and the batched engine
# (under method="auto") gives Captum's maps
# --------------------------------------------------------------------------------------

SHAPE, PATCH, STRIDE = (17, 7, 6), (2, 2, 2), (2, 2, 2)  # block4 is 2 x 1 x 1


def _plain_maps() -> np.ndarray:
    """Maps of the unmodified network: what the incremental engine, which reads only the
    weights, gives for a modified one if it does not refuse it."""
    res = occlusion_map(_cnn(), _volumes(1, (1, *SHAPE), seed=21), 1, PATCH, STRIDE,
                        progress=False)  # fmt: skip
    assert res.method == "incremental"
    return res.maps[0]


def _refused_but_captums(model: nn.Module, why: str, plain: np.ndarray) -> None:
    """``model`` is refused for ``why`` (a regex): ``method="incremental"`` raises, and
    ``method="auto"`` warns, runs the batched engine and gives Captum's maps, which differ
    from ``plain`` (:func:`_plain_maps`)."""
    assert not supports_incremental(model)
    assert re.search(why, why_not_incremental(model))
    x = _volumes(1, (1, *SHAPE), seed=21)
    with pytest.raises(ValueError, match=why):
        occlusion_map(model, x, 1, PATCH, STRIDE, method="incremental", progress=False)
    with pytest.warns(UserWarning, match=why):
        res = occlusion_map(model, x, 1, PATCH, STRIDE, progress=False)
    assert res.method == "batched"
    ref = _captum_map(model, x[0], 1, PATCH, STRIDE)
    np.testing.assert_allclose(res.maps[0], ref, atol=TOL, rtol=0)
    assert np.abs(plain - ref).max() > 100 * TOL  # the refusal matters


def test_plain_cnn_in_eval_mode_runs_incremental_without_a_warning():
    model = _cnn()
    x = _volumes(1, (1, *SHAPE), seed=21)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = occlusion_map(model, x, 1, PATCH, STRIDE, progress=False)
    assert res.method == "incremental"
    ref = _captum_map(model, x[0], 1, PATCH, STRIDE)
    assert np.abs(ref).max() > 1e-3
    np.testing.assert_allclose(res.maps[0], ref, atol=TOL, rtol=0)


def test_replaced_dropout_is_refused():
    plain, model = _plain_maps(), _cnn()
    model.dropout = nn.Softmax(dim=1)
    _refused_but_captums(model, r"model\.dropout is a Softmax", plain)


def _block_hook(model: EmotionCNN):
    return model.block2.register_forward_hook(lambda mod, args, out: out * 1.1)


def _stem_pre_hook(model: EmotionCNN):
    return model.conv1.register_forward_pre_hook(lambda mod, args: (args[0] + 0.5,))


def _model_hook(model: EmotionCNN):
    return model.register_forward_hook(lambda mod, args, out: out + torch.arange(4.0))


def _global_hook(model: EmotionCNN):
    block = model.block3
    return torch.nn.modules.module.register_module_forward_hook(
        lambda mod, args, out: out - 0.2 if mod is block else None
    )


@pytest.mark.parametrize(("hook", "why"), [
    (_block_hook, r"forward hook is registered on model\.block2"),
    (_stem_pre_hook, r"forward pre hook is registered on model\.conv1"),
    (_model_hook, r"forward hook is registered on model\b"),
    (_global_hook, r"global forward hook"),
], ids=["block", "stem-pre-hook", "model", "global"])  # fmt: skip
def test_forward_hooks_are_refused_until_removed(hook, why):
    plain, model = _plain_maps(), _cnn()
    handle = hook(model)
    try:
        _refused_but_captums(model, why, plain)
    finally:
        handle.remove()
    assert supports_incremental(model)
    x = _volumes(1, (1, *SHAPE), seed=21)
    res = occlusion_map(model, x, 1, PATCH, STRIDE, progress=False)
    assert res.method == "incremental"
    np.testing.assert_allclose(res.maps[0], _captum_map(model, x[0], 1, PATCH, STRIDE),
                               atol=TOL, rtol=0)  # fmt: skip


class _ScaledConv(nn.Conv3d):
    def forward(self, x):
        return super().forward(x) * 1.5


def _scaled_depthwise(model: EmotionCNN) -> None:
    old = model.block1.depthwise
    new = _ScaledConv(old.in_channels, old.out_channels, 3, stride=2, padding=1,
                      groups=old.groups, bias=False)  # fmt: skip
    new.load_state_dict(old.state_dict())
    model.block1.depthwise = new


def _reordered_stem(model: EmotionCNN) -> None:
    conv, bn, act = model.conv1
    model.conv1 = nn.Sequential(conv, act, bn)


def _replicate_padding(model: EmotionCNN) -> None:
    model.block1.depthwise.padding_mode = "replicate"


def _max_pool(model: EmotionCNN) -> None:
    model.pool.avg = nn.AdaptiveMaxPool3d(1)


def _instance_forward(model: EmotionCNN) -> None:
    block = model.block3
    block.forward = lambda x: nn.Sequential.forward(block, x) + 0.1


@pytest.mark.parametrize(("modify", "why"), [
    (_scaled_depthwise, r"model\.block1\.depthwise is a _ScaledConv, not a torch Conv3d"),
    (_reordered_stem, r"model\.conv1\.1 is a ReLU6, not a torch BatchNorm3d"),
    (_replicate_padding, r"model\.block1\.depthwise pads with .*replicate"),
    (_max_pool, r"model\.pool\.avg is a AdaptiveMaxPool3d"),
    (_instance_forward, r"model\.block3 has its own forward"),
], ids=["conv-subclass", "reordered", "padding-mode", "max-pool", "instance-forward"])  # fmt: skip
def test_other_layers_are_refused(modify, why):
    plain, model = _plain_maps(), _cnn()
    modify(model)
    _refused_but_captums(model, why, plain)


def test_batch_norm_without_running_statistics_is_refused():
    model = _cnn()
    bn = model.block2.project_bn
    bn.track_running_stats, bn.running_mean, bn.running_var = False, None, None
    assert re.search(r"model\.block2\.project_bn keeps no running statistics",
                     why_not_incremental(model))  # fmt: skip
    with pytest.raises(ValueError, match="running statistics"):
        occlusion_map(model, _volumes(1, (1, *SHAPE)), 1, method="incremental", progress=False)


class _DropoutStaysInTraining(EmotionCNN):
    """Its ``eval()`` leaves the dropout in training mode (p=0 here, so still the identity:
    Captum's maps are deterministic)."""

    def train(self, mode: bool = True):
        super().train(mode)
        self.dropout.train(True)
        return self


def test_training_mode():
    """The incremental engine computes eval mode: a model in training mode is refused by
    :func:`why_not_incremental`; :func:`occlusion_map` runs every model in eval mode, so the
    plain network is still computed incrementally there (Captum's maps in eval mode), and a
    module that stays in training mode through ``eval()`` sends it to the batched engine."""
    model = _cnn().train()
    assert not supports_incremental(model)
    assert re.search(r"in training mode: model, model\.conv1, \.\.\. \(\d+ of the modules",
                     why_not_incremental(model))  # fmt: skip
    x = _volumes(1, (1, *SHAPE), seed=21)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = occlusion_map(model, x, 1, PATCH, STRIDE, method="incremental", progress=False)
    assert res.method == "incremental" and model.training
    ref = _captum_map(copy.deepcopy(model).eval(), x[0], 1, PATCH, STRIDE)
    np.testing.assert_allclose(res.maps[0], ref, atol=TOL, rtol=0)

    stays = _DropoutStaysInTraining(n_classes=4, in_shape=SHAPE, dropout=0.0)
    stays.load_state_dict(_cnn().state_dict())
    stays.eval()
    assert stays.dropout.training
    why = r"in training mode: model\.dropout \(1 of the modules"
    with pytest.raises(ValueError, match=why):
        occlusion_map(stays, x, 1, PATCH, STRIDE, method="incremental", progress=False)
    with pytest.warns(UserWarning, match=why):
        res = occlusion_map(stays, x, 1, PATCH, STRIDE, progress=False)
    assert res.method == "batched"
    np.testing.assert_allclose(res.maps[0], _captum_map(stays, x[0], 1, PATCH, STRIDE),
                               atol=TOL, rtol=0)  # fmt: skip


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


# --------------------------------------------------------------------------------------
# the chapter's pipeline: selection, per-fold occlusion, NIfTI maps, top voxels, truth
# --------------------------------------------------------------------------------------

import nibabel as nib  # noqa: E402
import pandas as pd  # noqa: E402

from emolib.models import torch_threads  # noqa: E402
from emolib.occlusion import (  # noqa: E402
    analysis_mask,
    class_map_images,
    localisation_matrix,
    localisation_scores,
    occlude_by_fold,
    save_class_maps,
    select_confident,
    top_voxels,
)

CLASSES = ["A", "B", "C"]


def _predictions(n: int = 60, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    p = rng.dirichlet(np.ones(3) * 0.5, size=n)
    rows = pd.DataFrame({"fold": np.where(np.arange(n) < n // 2, "run-1", "run-2"),
                         "sample": np.arange(n), "y": y, "label": np.array(CLASSES)[y]})
    rows[[f"p_{c}" for c in CLASSES]] = p
    chance = rows.assign(model="chance")
    return pd.concat([rows.assign(model="cnn"), chance], ignore_index=True)


def test_select_confident_follows_the_original_rule():
    preds = _predictions()
    table = select_confident(preds, CLASSES, min_prob=0.6, n_per_class=3, seed=1)
    assert len(table) == 60 and set(table["model"]) == {"cnn"}
    p = table[[f"p_{c}" for c in CLASSES]].to_numpy()
    y = table["y"].to_numpy()
    want = (p[np.arange(60), y] >= 0.6) & (p.argmax(1) == y)
    np.testing.assert_array_equal(table["eligible"], want)
    assert not (table["selected"] & ~table["eligible"]).any()
    for c in range(3):
        assert table["selected"][y == c].sum() == min(3, want[y == c].sum())
    again = select_confident(preds, CLASSES, min_prob=0.6, n_per_class=3, seed=1)
    pd.testing.assert_frame_equal(table, again)
    # without the correctness rule every volume above the threshold is eligible
    loose = select_confident(preds, CLASSES, min_prob=0.0, n_per_class=100,
                             correct_only=False)
    assert loose["selected"].all()
    assert set(table["rule"][table["selected"]]) == {"original"}
    with pytest.raises(ValueError, match="no predictions"):
        select_confident(preds, CLASSES, model="linear")
    # filling up: classes short of eligible volumes get their most confident others
    strict = select_confident(preds, CLASSES, min_prob=0.9, n_per_class=8, seed=1)
    full = select_confident(preds, CLASSES, min_prob=0.9, n_per_class=8, seed=1, fill_up=True)
    for c in range(3):
        of_c = full[full["y"] == c]
        assert of_c["selected"].sum() == 8
        orig = of_c["rule"] == "original"
        assert orig.sum() == strict["selected"][strict["y"] == c].sum()
        added = of_c[of_c["rule"] == "filled up"]["p_true"]
        left = of_c[~of_c["selected"]]["p_true"]
        assert added.min() >= left.max()
    assert (full["rule"][~full["selected"]] == "").all()


def _fold_models() -> dict[str, EmotionCNN]:
    return {"run-1": _cnn(seed=3), "run-2": _cnn(seed=4)}


def test_occlude_by_fold_uses_each_volumes_own_model(tmp_path):
    models = _fold_models()
    vols = _volumes(6, (11, 9, 7), seed=5).numpy()
    sel = pd.DataFrame({"fold": ["run-2", "run-1", "run-2", "run-1"], "sample": [5, 0, 2, 3],
                        "y": [1, 0, 3, 2]})
    res = occlude_by_fold(sel, vols, models.__getitem__, patch=3, stride=2, batch_size=16,
                          progress=False)
    assert res.maps.shape == (4, 11, 9, 7)
    for row, (fold, s, t) in enumerate(sel[["fold", "sample", "y"]].itertuples(index=False)):
        ref = occlusion_map(models[fold], vols[s:s + 1], t, patch=3, stride=2, progress=False)
        np.testing.assert_allclose(res.maps[row], ref.maps[0], atol=1e-6)
        assert res.base_prob[row] == pytest.approx(float(ref.base_prob[0]), abs=1e-6)
    np.testing.assert_array_equal(res.targets, sel["y"])
    # a path to a checkpoint in the format of emolib.models.train works as well
    m = models["run-1"]
    path = tmp_path / "best.pt"
    torch.save({"model": m.state_dict(), "n_classes": 4, "in_shape": (11, 9, 7),
                "dropout": 0.3}, path)
    sub = sel[sel["fold"] == "run-1"]
    by_path = occlude_by_fold(sub, vols, lambda fold: path, patch=3, stride=2,
                              progress=False)
    np.testing.assert_allclose(by_path.maps, res.maps[[1, 3]], atol=1e-6)
    with pytest.raises(ValueError, match="empty"):
        occlude_by_fold(sel.iloc[:0], vols, models.__getitem__, progress=False)


def _store_job(tmp_path):
    """Volumes, a selection of 7 over two folds and the folds' checkpoints on disk."""
    vols = _volumes(8, (11, 9, 7), seed=5).numpy()
    sel = pd.DataFrame({"fold": ["run-2", "run-1", "run-2", "run-1", "run-1", "run-2", "run-1"],
                        "sample": [5, 0, 2, 3, 7, 6, 1], "y": [1, 0, 3, 2, 1, 0, 3]})
    paths = {}
    for fold, m in _fold_models().items():
        paths[fold] = tmp_path / f"{fold}.pt"
        torch.save({"model": m.state_dict(), "n_classes": 4, "in_shape": (11, 9, 7),
                    "dropout": 0.3}, paths[fold])
    return vols, sel, paths


def _occlude(vols, sel, paths, store=None, **kw):
    kw = {"patch": 3, "stride": 2, "batch_size": 16, "part_size": 2, "progress": False, **kw}
    return occlude_by_fold(sel, vols, lambda fold: paths[fold], store_dir=store, **kw)


def _same_result(a, b):
    for name in ("maps", "coarse", "base_prob", "targets"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.method == b.method and a.patch == b.patch


def _parts(store):
    """``fold/part`` of every file in an occlusion store (named ``<fold>-<hash>-<part>.npz``)."""
    names = sorted(p.name for p in store.iterdir())
    assert all(re.fullmatch(r".+-[0-9a-f]{8}-\d{4}\.npz", n) for n in names), names
    return [f"{n[:-18]}/{n[-8:-4]}" for n in names]


def _store_contents(store):
    out = {}
    for p in sorted(store.iterdir()):
        with np.load(p) as f:
            out[p.name] = {k: f[k] for k in f.files}
    return out


def test_occlusion_store_reuses_only_parts_made_from_the_same_inputs(tmp_path):
    vols, sel, paths = _store_job(tmp_path)
    plain = _occlude(vols, sel, paths)
    assert plain.reuse is None
    store = tmp_path / "store"
    first = _occlude(vols, sel, paths, store)
    _same_result(first, plain)  # the store does not change the numbers
    # run-1 has 4 volumes (2 parts), run-2 has 3 (2 parts)
    assert list(first.reuse["status"]) == ["new"] * 4
    assert _parts(store) == ["run-1/0000", "run-1/0001", "run-2/0000", "run-2/0001"]
    again = _occlude(vols, sel, paths, store)
    assert list(again.reuse["status"]) == ["reuse"] * 4
    _same_result(again, plain)

    # other weights for one fold: its parts are recomputed, the other fold's reused
    torch.save({"model": _cnn(seed=9).state_dict(), "n_classes": 4, "in_shape": (11, 9, 7),
                "dropout": 0.3}, paths["run-2"])
    changed = _occlude(vols, sel, paths, store)
    assert dict(zip(changed.reuse["fold"] + "/" + changed.reuse["part"].astype(str),
                    changed.reuse["status"], strict=True)) == {
        "run-2/0": "stale", "run-2/1": "stale", "run-1/0": "reuse", "run-1/1": "reuse"}
    _same_result(changed, _occlude(vols, sel, paths))
    # another volume content, target or occlusion parameter: stale as well
    vols2 = vols.copy()
    vols2[7] += 0.5  # sample 7 is in run-1's second part
    status = _occlude(vols2, sel, paths, store).reuse.set_index(["fold", "part"])["status"]
    assert status[("run-1", 1)] == "stale" and status[("run-1", 0)] == "reuse"
    assert set(_occlude(vols2, sel, paths, store, fill=0.5).reuse["status"]) == {"stale"}
    # a smaller job: parts that no longer belong to it are removed
    small = _occlude(vols2, sel[sel["fold"] == "run-1"], paths, store, fill=0.5)
    assert set(small.reuse["status"]) == {"reuse"}
    assert _parts(store) == ["run-1/0000", "run-1/0001"]
    # a damaged part is recomputed
    next(store.glob("run-1-*-0000.npz")).write_bytes(b"not a zip file")
    redone = _occlude(vols2, sel[sel["fold"] == "run-1"], paths, store, fill=0.5)
    assert list(redone.reuse["status"]) == ["stale", "reuse"]
    _same_result(redone, small)
    with pytest.raises(ValueError, match="part_size"):
        _occlude(vols, sel, paths, store, part_size=0)


KILLED_OCCLUSION = """
import sys, time
import numpy as np, pandas as pd
import emolib.occlusion.maps as maps

real, calls = maps.occlusion_map, []


def slow(*args, **kwargs):
    calls.append(1)
    if len(calls) == 3:  # parts 1-2 are stored
        print("third part", flush=True)
        time.sleep(600)
    return real(*args, **kwargs)


maps.occlusion_map = slow
vols = np.load(sys.argv[1])
sel = pd.read_csv(sys.argv[2])
paths = {"run-1": sys.argv[3], "run-2": sys.argv[4]}
maps.occlude_by_fold(sel, vols, paths.__getitem__, patch=3, stride=2, batch_size=16,
                     part_size=2, progress=False, store_dir=sys.argv[5])
"""


def test_killed_occlusion_resumes_to_the_uninterrupted_result(tmp_path):
    """SIGKILL while the third part is being computed: the two finished parts are reused,
    the rest computed, and the store and the maps end as after an uninterrupted run."""
    from emolib.testing import kill_when

    vols, sel, paths = _store_job(tmp_path)
    whole = _occlude(vols, sel, paths, tmp_path / "whole")
    np.save(tmp_path / "vols.npy", vols)
    sel.to_csv(tmp_path / "sel.csv", index=False)
    store = tmp_path / "store"
    kill_when(KILLED_OCCLUSION, "third part", [tmp_path / "vols.npy", tmp_path / "sel.csv",
                                              paths["run-1"], paths["run-2"], store])
    assert len(list(store.glob("*.npz"))) == 2
    resumed = _occlude(vols, sel, paths, store)
    assert list(resumed.reuse["status"]) == ["reuse", "reuse", "new", "new"]
    _same_result(resumed, whole)
    a, b = _store_contents(store), _store_contents(tmp_path / "whole")
    assert list(a) == list(b)
    for name in a:
        assert a[name].keys() == b[name].keys()
        for k in a[name]:
            np.testing.assert_array_equal(a[name][k], b[name][k], err_msg=f"{name}: {k}")


def test_torch_threads_is_restored():
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with torch_threads(None):
        assert torch.get_num_threads() == before


def test_class_maps_are_saved_in_the_data_space(tmp_path):
    affine = np.diag([3.0, 3.0, 3.3, 1.0])
    affine[:3, 3] = [-10, -20, -5]
    maps = np.random.default_rng(0).normal(size=(3, 4, 5, 6)).astype(np.float32)
    maps[1] = np.nan  # a class without selected volumes
    images = class_map_images(maps, CLASSES, affine)
    assert list(images) == ["A", "C"]
    paths = save_class_maps(images, tmp_path / "maps")
    back = nib.load(paths["C"])
    np.testing.assert_allclose(back.affine, affine)
    np.testing.assert_allclose(back.get_fdata(), maps[2], atol=1e-6)
    assert paths["A"].name == "occlusion_A.nii.gz"


def test_top_voxels_are_the_largest_inside_the_mask():
    maps = np.zeros((2, 4, 4, 4), np.float32)
    maps[0, 1, 2, 3], maps[0, 0, 0, 0], maps[0, 3, 3, 3] = 3.0, 2.0, 5.0
    maps[1] = np.nan
    mask = np.ones((4, 4, 4), bool)
    mask[3, 3, 3] = False
    table = top_voxels(maps, ["A", "B"], k=2, mask=mask, affine=np.diag([2.0, 2, 2, 1]))
    assert list(table["class"]) == ["A", "A"]
    assert table[["i", "j", "k"]].values.tolist() == [[1, 2, 3], [0, 0, 0]]
    assert table["x"].tolist() == [2.0, 0.0] and table["drop"].tolist() == [3.0, 2.0]
    assert len(top_voxels(maps, ["A", "B"], k=1000, mask=mask)) == mask.sum()


def test_localisation_of_perfect_and_uninformative_maps():
    rng = np.random.default_rng(0)
    shape = (8, 8, 6)
    brain = np.ones(shape, bool)
    brain[0] = False
    regions = {}
    for i, c in enumerate(CLASSES):
        r = np.zeros(shape, bool)
        r[1 + 2 * i: 3 + 2 * i, 2:4, 2:4] = True
        regions[c] = r
    maps = np.stack([regions[c] + 0.01 * rng.random(shape) for c in CLASSES]).astype(np.float32)
    maps[2] = rng.random(shape)  # C: noise
    scores = localisation_scores(maps, CLASSES, regions, brain, top_k=8).set_index("class")
    assert scores.loc["A", "auc"] == pytest.approx(1.0)
    assert scores.loc["A", "precision_at_k"] == 1.0 and scores.loc["A", "peak_in_region"]
    assert scores.loc["A", "chance"] == pytest.approx(8 / brain.sum())
    assert scores.loc["B", "argmax_agreement"] == 1.0
    assert 0.2 < scores.loc["C", "auc"] < 0.8
    matrix = localisation_matrix(maps, CLASSES, regions, brain)
    assert matrix.loc["A", "A"] == pytest.approx(1.0)
    assert matrix.loc["A", "B"] < 0.6
    # a class without a map gets NaN, and the others are unaffected
    maps[1] = np.nan
    partial = localisation_scores(maps, CLASSES, regions, brain, top_k=8).set_index("class")
    assert np.isnan(partial.loc["B", "auc"]) and partial.loc["A", "auc"] == pytest.approx(1.0)
    assert "B" not in localisation_matrix(maps, CLASSES, regions, brain).index


def test_analysis_mask_prefers_the_data_mask():
    mask = np.zeros((6, 6, 6), bool)
    mask[1:5, 1:5, 1:5] = True
    np.testing.assert_array_equal(analysis_mask(mask), mask)
    data = np.zeros((10, 10, 10), np.float32)
    data[2:8, 2:8, 2:8] = 1000 + np.random.default_rng(0).random((6, 6, 6))
    epi = analysis_mask(np.ones((10, 10, 10), bool), nib.Nifti1Image(data, np.eye(4)))
    assert epi[5, 5, 5] and not epi[0, 0, 0]


# --------------------------------------------------------------------------------------
# ground truth: planted regions are found on planted data, not on null data
# --------------------------------------------------------------------------------------


class _SmallNet(nn.Module):
    """A small 3-D network that learns a planted signal in a few seconds: one 3x3x3
    convolution (4 channels), ReLU and a linear read-out of all its voxels."""

    def __init__(self, shape: tuple[int, int, int], n_classes: int):
        super().__init__()
        self.conv = nn.Conv3d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * int(np.prod(shape)), n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def _localise(tmp_path_factory, null: bool) -> pd.DataFrame:
    """Generate tiny data, train on two runs, occlude held-out volumes of the third, score."""
    from emolib.forrest.dataprep import prepare_dataset
    from emolib.forrest.splits import make_splits
    from emolib.forrest.timing import RunTiming
    from emolib.synthetic import generate_studyforrest, read_truth

    timing = RunTiming(starts=(0.0, 292.0, 584.0), n_volumes=(150, 150, 150), tr=2.0)
    root = tmp_path_factory.mktemp("occ_truth")
    # one grid for both subjects and no scene signal: this checks the occlusion maps against
    # the planted regions, not how a voxel-wise group map blurs unaligned native-space
    # subjects, nor what a small network trained on 2 subjects picks up of the scenes (with
    # the default 1 % scene signal one class of four scored 0.89, the others 0.93-1.0)
    ds = generate_studyforrest(root / "ds", n_subjects=2, shape=(12, 12, 10), timing=timing,
                               effect_size=0.15, null=null, seed=5, native_space=False,
                               scene_size=0.0, progress=False)
    prep = prepare_dataset(ds / "ds000113", ds / "annotations", root / "prep", timing=timing,
                           min_count=20, n_per_class=20, progress=False)
    split = make_splits(prep.samples, "run", folds=[0])[0]
    x = torch.from_numpy(np.array(prep.volumes, dtype=np.float32))[:, None]
    y = torch.as_tensor(np.array(prep.y))
    torch.manual_seed(0)
    model = _SmallNet(x.shape[2:], len(prep.classes))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-3)
    for _ in range(150):  # full-batch training on the two other runs
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[split.train]), y[split.train]).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        probs = torch.softmax(model(x[split.test]), 1).numpy()
    rows = prep.samples.iloc[split.test].assign(fold=split.name, sample=split.test,
                                                model="cnn")
    rows[[f"p_{c}" for c in prep.classes]] = probs
    # the same selection for both (a null network is rarely confident): 6 per class
    table = select_confident(rows, prep.classes, min_prob=0.0, n_per_class=6,
                             correct_only=False)
    occ = occlude_by_fold(table[table["selected"]], prep.volumes, {split.name: model}.get,
                          patch=2, stride=1, progress=False)
    maps = class_mean_maps(occ.maps, occ.targets, len(prep.classes))
    truth = read_truth(ds)
    scores = localisation_scores(maps, prep.classes, truth["regions"], truth["brain_mask"],
                                 top_k=20)
    return scores.dropna(subset=["auc"])  # classes absent from the held-out run


@pytest.mark.slow
def test_planted_regions_are_found_and_null_data_find_nothing(tmp_path_factory):
    planted = _localise(tmp_path_factory, null=False)
    null = _localise(tmp_path_factory, null=True)
    assert len(planted) >= 3 and len(null) == len(planted)
    assert (planted["auc"] > 0.9).all(), planted
    assert (planted["precision_at_k"] > 5 * planted["chance"]).all(), planted
    assert abs(null["auc"].mean() - 0.5) < 0.2, null
    assert planted["auc"].mean() - null["auc"].mean() > 0.3


def test_find_truth_and_label_voxels(tiny_dataset, tmp_path):
    from emolib.occlusion import label_voxels
    from emolib.synthetic import find_truth

    truth = find_truth(tiny_dataset / "ds000113", (12, 12, 10))
    assert truth is not None and set(truth["regions"]) == set(truth["classes"])
    with pytest.raises(ValueError, match="grid"):
        find_truth(tiny_dataset / "ds000113", (80, 80, 35))
    assert find_truth(tmp_path / "ds000113") is None
    assert find_truth(None) is None
    regions = {"A": np.zeros((3, 3, 3), bool), "B": np.zeros((3, 3, 3), bool)}
    regions["A"][0, 0, 0] = regions["B"][1, 1, 1] = regions["B"][0, 0, 0] = True
    vox = pd.DataFrame({"i": [0, 1, 2], "j": [0, 1, 2], "k": [0, 1, 2]})
    assert list(label_voxels(vox, regions)) == ["A", "B", "none"]
