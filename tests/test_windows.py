"""Samples that are windows of consecutive volumes (emolib.forrest.windows) and the networks
that read them (time as channels; the factorised (2+1)D SpaceTimeCNN)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from emolib.forrest import (
    as_offsets,
    assert_no_leak,
    find_leaks,
    gather_windows,
    make_splits,
    window_cache_bytes,
    window_samples,
)
from emolib.forrest.timing import RunTiming
from emolib.models import EmotionCNN, SpaceTimeCNN, count_parameters


def _table(n_subjects=3, timing=None, every=3):
    """A prepared-style sample table: every volume of every run cached (keep="all"), every
    ``every``-th one selected, with its class."""
    timing = timing or RunTiming(starts=(0.0, 112.0, 224.0), n_volumes=(60, 60, 60), tr=2.0)
    vt = timing.volume_table(hrf_lag=0.0)
    rows = []
    for s in range(1, n_subjects + 1):
        t = vt.assign(subject=f"{s:02d}")
        t["selected"] = (t["volume"] % every == 1)
        t["y"] = np.where(t["selected"], (t["volume"] // every) % 5, -1)
        rows.append(t)
    return pd.concat(rows, ignore_index=True)


def test_windows_stay_in_their_run_and_point_at_the_right_volumes():
    samples = _table()
    w = window_samples(samples, offsets=(-1, 0, 1, 2))
    assert w.rows.shape == (len(w.samples), 4)
    for (_, row), rows in zip(w.samples.iterrows(), w.rows, strict=True):
        got = samples.iloc[rows]
        assert (got["subject"] == row["subject"]).all() and (got["run"] == row["run"]).all()
        assert got["volume"].tolist() == [row["volume"] + o for o in (-1, 0, 1, 2)]
        assert samples.iloc[row["sample"]]["volume"] == row["volume"]
    # the selected volumes whose window would leave the run: volume 1's -1 is 0 (kept),
    # the last selected volume of a run (58) needs 60, which is not in a 60-volume run
    n_sel = int(samples["selected"].sum())
    last = samples[samples["selected"] & (samples["volume"] + 2 > 59)]
    assert w.dropped == len(last) and len(w.samples) == n_sel - len(last)
    # movie time of the window's last volume; the labelled one's kept
    assert np.allclose(w.samples["movie_time"] - w.samples["label_time"], 2 * 2.0)
    assert w.span_s == pytest.approx(20.0 + 3 * 2.0)


def test_windows_need_their_neighbours_in_the_cache():
    """With only the selected volumes cached (keep="selected"), no window of more than one
    volume is whole: all are dropped, none is made up."""
    samples = _table()
    selected_only = samples[samples["selected"]].reset_index(drop=True)
    w = window_samples(selected_only, offsets=(0, 1))
    assert len(w.samples) == 0 and w.dropped == len(selected_only)
    single = window_samples(selected_only, offsets=(0,))
    assert len(single.samples) == len(selected_only) and single.span_s == 20.0


@pytest.mark.parametrize("offsets", [(), (0, 2), (1, 0), (0, 0, 1), (0.5, 1.5), "ab"])
def test_bad_offsets_are_refused(offsets):
    with pytest.raises(ValueError, match="offsets"):
        window_samples(_table(), offsets=offsets)
    with pytest.raises(ValueError, match="offsets"):
        as_offsets(offsets)


def test_offsets_from_a_profile_become_integers():
    """What a YAML profile or papermill hands over (floats, a list, numpy integers) is the
    same window; one conversion serves the chapter, the preparation and the decoding."""
    assert as_offsets([-1.0, 0, 1, 2]) == (-1, 0, 1, 2)
    assert as_offsets(np.arange(0, 3)) == (0, 1, 2)
    assert all(type(o) is int for o in as_offsets(np.arange(2)))


def test_gathered_windows_are_the_cached_volumes_in_offset_order():
    samples = _table(n_subjects=1)
    rng = np.random.default_rng(0)
    volumes = rng.standard_normal((len(samples), 3, 4, 2)).astype(np.float32)
    w = window_samples(samples, offsets=(0, 1, 2))
    x = gather_windows(volumes, w.rows, np.arange(5, 12))
    assert x.shape == (7, 3, 3, 4, 2) and x.dtype == np.float32
    np.testing.assert_array_equal(x, volumes[w.rows[5:12]])
    with pytest.raises(IndexError, match="outside the cache"):
        gather_windows(volumes[:10], w.rows)


def test_guards_and_checker_see_the_whole_window():
    """Run split of windows: with the window's span the checker finds nothing; told the
    single-volume span instead, it would find training windows that overlap test windows
    (what a guard ignorant of the window would leave)."""
    samples = _table()
    w = window_samples(samples, offsets=(0, 1, 2, 3, 4, 5))
    splits = make_splits(w.samples, "run", span_s=w.span_s)
    assert_no_leak(w.samples, splits, span_s=w.span_s)
    naive = make_splits(w.samples.assign(movie_time=w.samples["label_time"]), "run")
    found = [find_leaks(w.samples, s, span_s=w.span_s) for s in naive]
    assert sum(r.same_volume + r.same_moment + r.response_window for r in found) > 0


def test_cache_cost_at_the_real_size():
    # 15 subjects x 3599 volumes of 80 x 80 x 35, float32: every volume (keep="all")
    assert window_cache_bytes(15 * 3599) == 15 * 3599 * 80 * 80 * 35 * 4


def test_time_as_channels_and_space_time_networks():
    """Time as channels: the original with T input channels ((T - 1) x 32 x 27 weights more).
    (2+1)D: the original plus a 32 x 32 x kt temporal convolution and its batch norm; both
    take (N, T, X, Y, Z) windows and give logits."""
    torch.manual_seed(0)
    x = torch.randn(2, 4, 12, 12, 6)
    base = count_parameters(EmotionCNN(5, (80, 80, 35)))
    assert base == 424_549
    channels = EmotionCNN(5, (12, 12, 6), in_channels=4).eval()
    assert count_parameters(channels) == base + 3 * 32 * 27
    assert channels(x).shape == (2, 5)
    for kt in (1, 2, 4):
        net = SpaceTimeCNN(5, (12, 12, 6), n_frames=4, temporal_kernel=kt).eval()
        assert count_parameters(net) == base + 32 * 32 * kt + 64
        assert net(x).shape == (2, 5) and net.features(x).shape == (2, 256)
        assert net.space_time(x).shape == (2, 32, 4 - kt + 1, 12, 12, 6)
    with pytest.raises(ValueError, match="temporal_kernel"):
        SpaceTimeCNN(n_frames=3, temporal_kernel=4)
    with pytest.raises(ValueError, match=r"expected windows \(N, 4"):
        SpaceTimeCNN(5, (12, 12, 6), n_frames=4)(torch.randn(2, 3, 12, 12, 6))


def test_space_time_convolves_each_voxels_time_series_after_the_stem():
    """The factorisation computed by hand: the stem on each volume alone, then at every voxel
    a 1-D convolution over the window's volumes with the temporal weights, batch norm (eval)
    and ReLU6: equal to SpaceTimeCNN.space_time."""
    torch.manual_seed(1)
    net = SpaceTimeCNN(5, (10, 9, 7), n_frames=5, temporal_kernel=3).eval()
    with torch.no_grad():
        for bn in (net.conv1.bn, net.temporal.bn):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.2, 0.2)
        x = torch.randn(3, 5, 10, 9, 7)
        frames = torch.stack([net.conv1(x[:, t:t + 1]) for t in range(5)], dim=2)
        w = net.temporal.conv.weight[:, :, :, 0, 0]  # (out, in, kt)
        conv = torch.stack([torch.einsum("oik,nikxyz->noxyz", w, frames[:, :, t:t + 3])
                            for t in range(3)], dim=2)
        bn = net.temporal.bn
        scale = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).view(1, -1, 1, 1, 1, 1)
        shift = (bn.bias - bn.running_mean * scale.flatten()).view(1, -1, 1, 1, 1, 1)
        expected = torch.clamp(conv * scale + shift, 0, 6)
        torch.testing.assert_close(net.space_time(x), expected, rtol=1e-5, atol=1e-5)
        # and the order of the volumes matters to it
        assert not torch.allclose(net(x), net(x.flip(1)))
