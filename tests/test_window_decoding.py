"""Decoding windows of volumes end to end: what preparation keeps, the samples and folds a
window decoding shares with the single-volume one, the networks it builds and reloads, the
planted response a window holds, and space-time occlusion finding *when* the response is."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from emolib.decoding import decoding_samples, run_decoding
from emolib.forrest import (
    assert_no_leak,
    make_splits,
    prepare_dataset,
    prepare_variant,
    window_samples,
    window_support,
)
from emolib.io import bold_path
from emolib.models import (
    EmotionCNN,
    SpaceTimeCNN,
    TrainConfig,
    build_model,
    count_parameters,
    load_trained,
    train_model,
)
from emolib.occlusion.spacetime import spacetime_occlusion, temporal_profile
from emolib.synthetic import (
    find_truth,
    generate_studyforrest,
    planted_profile,
    planted_responses,
    read_truth,
)
from emolib.synthetic.forrest import class_regressors
from tests.conftest import TINY_TIMING

WINDOW = (-1, 0, 1, 2)


@pytest.fixture(scope="module")
def windowed(tiny_dataset, tmp_path_factory):
    """The tiny dataset prepared for single volumes, and its variant with the neighbours
    WINDOW needs (the same inputs and parameters otherwise)."""
    root = tmp_path_factory.mktemp("windowed")
    common = dict(timing=TINY_TIMING, min_count=10, n_per_class=10, seed=0, progress=False)
    single = prepare_dataset(tiny_dataset / "ds000113", tiny_dataset / "annotations",
                             root / "single", **common)
    return single, prepare_variant(single, root / "window", window=WINDOW, progress=False)


def test_window_support_against_brute_force():
    rng = np.random.default_rng(3)
    table = pd.DataFrame([(s, r, v) for s in ("01", "02") for r in (1, 2) for v in range(25)
                          if rng.random() > 0.2], columns=["subject", "run", "volume"])
    centres = rng.random(len(table)) < 0.15
    for offsets in [(0,), (-2, -1, 0), (1, 2, 3), (-1, 0, 1, 2)]:
        want = np.zeros(len(table), bool)
        for i in np.flatnonzero(centres):
            s, r, v = table.iloc[i]
            for o in offsets:
                want |= ((table["subject"] == s) & (table["run"] == r)
                         & (table["volume"] == v + o)).to_numpy()
        np.testing.assert_array_equal(window_support(table, centres, offsets), want)
    with pytest.raises(ValueError, match="centres must flag"):
        window_support(table, centres[:-1], (0,))


def test_preparing_windows_keeps_the_neighbours_and_the_same_selection(windowed, tmp_path):
    single, window = windowed
    assert window.manifest["parameters"]["window"] == list(WINDOW)
    assert {k: v for k, v in window.manifest["parameters"].items() if k != "window"} == {
        k: v for k, v in single.manifest["parameters"].items() if k != "window"}
    with pytest.raises(ValueError, match="not parameters of prepare_dataset"):
        prepare_variant(single, tmp_path / "bad", windw=WINDOW)
    sel_s = single.samples[single.samples["selected"]].reset_index(drop=True)
    sel_w = window.samples[window.samples["selected"]].reset_index(drop=True)
    cols = ["subject", "run", "volume", "movie_time", "label", "y"]
    pd.testing.assert_frame_equal(sel_s[cols], sel_w[cols])
    np.testing.assert_array_equal(
        np.asarray(single.volumes), np.asarray(window.volumes)[window.samples["selected"]])
    # exactly the volumes the windows read are cached, and every window fits its run
    support = window_support(window.samples, window.samples["selected"].to_numpy(), WINDOW)
    assert support.all()
    ws = window_samples(window.samples, WINDOW)
    n_vol = dict(zip(TINY_TIMING.runs, TINY_TIMING.n_volumes, strict=True))
    edge = sel_w["volume"].to_numpy() + WINDOW[0] < 0
    edge |= sel_w["volume"].to_numpy() + WINDOW[-1] >= sel_w["run"].map(n_vol).to_numpy()
    assert ws.dropped == int(edge.sum()) and len(ws.samples) == len(sel_w) - ws.dropped


def test_prepared_data_give_their_own_repetition_time(windowed):
    """The TR a window's span and the book's seconds come from is the one the data were
    prepared with (a variant's too); a manifest without it is an error naming the file."""
    import dataclasses

    single, prep = windowed
    assert single.tr == prep.tr == TINY_TIMING.tr
    bare = dataclasses.replace(prep, manifest={"parameters": {}})
    with pytest.raises(ValueError, match=r"window/manifest.json records no repetition time"):
        _ = bare.tr


def test_single_and_window_models_share_samples_and_folds(windowed, tmp_path):
    """A single-volume decoding given the window as its sample window and the two window
    networks: the same test samples in the same folds, no fold sharing a moment with its
    training samples over a window's span, and each fold's best.pt reloads its network."""
    _, prep = windowed
    cfg = dict(epochs=1, t_max=1, batch_size=16, patience=5, seed=0)
    runs = {
        "single": dict(config=TrainConfig(**cfg), window=None),
        "channels": dict(config=TrainConfig(**cfg), window=WINDOW),
        "spacetime": dict(config=TrainConfig(**cfg, architecture="spacetime"), window=WINDOW),
    }
    out = {name: run_decoding(prep, tmp_path / name, "run", folds=[0, 1], progress=False,
                              sample_window=WINDOW, **kw) for name, kw in runs.items()}
    key = ["fold", "sample", "y"]
    ref = out["single"].predictions.query("model == 'cnn'")[key].reset_index(drop=True)
    for name in ("channels", "spacetime"):
        got = out[name].predictions.query("model == 'cnn'")[key].reset_index(drop=True)
        pd.testing.assert_frame_equal(got, ref)
    samples, ids, rows, span = decoding_samples(prep, WINDOW)
    assert rows.shape == (len(samples), len(WINDOW))
    assert span == pytest.approx(window_samples(prep.samples, WINDOW).span_s)
    # the folds are the window-aware run split: its test sets, proven leak-free over the span
    splits = {s.name: s for s in make_splits(samples, "run", span_s=span)}
    assert_no_leak(samples, list(splits.values()), span_s=span)
    folds = out["spacetime"].folds
    test_ids = out["spacetime"].predictions.query("model == 'cnn'")
    for fold in folds["fold"]:
        got = np.sort(test_ids.loc[test_ids["fold"] == fold, "sample"].to_numpy())
        np.testing.assert_array_equal(got, np.sort(ids[splits[fold].test]))
    expected = {"single": EmotionCNN, "channels": EmotionCNN, "spacetime": SpaceTimeCNN}
    for name, res in out.items():
        model = load_trained(res.fold_model_path(str(folds["fold"].iloc[0])))
        assert type(model) is expected[name]
        frames = 1 if name == "single" else len(WINDOW)
        x = torch.zeros(1, frames, *prep.volumes.shape[1:])
        assert model(x).shape == (1, len(prep.classes))


def test_build_model_names_and_errors():
    assert count_parameters(build_model("cnn", 5, (12, 12, 6))) == count_parameters(
        EmotionCNN(5, (12, 12, 6)))
    assert count_parameters(build_model("cnn", 5, (12, 12, 6), n_frames=4)) == \
        count_parameters(EmotionCNN(5, (12, 12, 6), in_channels=4))
    st = build_model("spacetime", 3, (12, 12, 6), n_frames=4, temporal_kernel=2)
    assert isinstance(st, SpaceTimeCNN) and count_parameters(st) == count_parameters(
        SpaceTimeCNN(3, (12, 12, 6), n_frames=4, temporal_kernel=2))
    with pytest.raises(ValueError, match="architecture must be one of"):
        build_model("conv4d")
    with pytest.raises(ValueError, match="reads windows"):
        build_model("spacetime", 5, (12, 12, 6))
    with pytest.raises(ValueError, match="spacetime architecture only"):
        build_model("cnn", 5, (12, 12, 6), n_frames=3, temporal_kernel=2)
    with pytest.raises(ValueError, match="positive number"):
        build_model("cnn", 5, (12, 12, 6), n_frames=0)


def test_planted_responses_are_what_the_generator_planted(tmp_path):
    """Without noise, scene signal or head motion, the mean BOLD of each class's region
    follows planted_responses of that class (r > 0.95), and no other class's as well or the
    same response shifted by two volumes."""
    out = generate_studyforrest(tmp_path / "gen", n_subjects=1, shape=(12, 12, 10),
                                timing=TINY_TIMING, effect_size=0.5, noise=0.0,
                                scene_size=0.0, native_space=False, seed=2, progress=False)
    truth = read_truth(tmp_path / "gen")
    for run, n_vol in zip(TINY_TIMING.runs, TINY_TIMING.n_volumes, strict=True):
        path = bold_path(out / "ds000113", truth["subjects"][0], run)
        data = np.asanyarray(nib.load(path).dataobj)
        table = pd.DataFrame({"run": run, "volume": np.arange(n_vol)})
        resp = planted_responses(truth, table)
        for k, c in enumerate(truth["classes"]):
            if resp[:, k].std() < 1e-3:
                continue  # the class is not shown in this run
            bold = data[truth["regions"][c]].mean(axis=0)
            r = np.corrcoef(bold, resp[:, k])[0, 1]
            assert r > 0.95, (run, c, r)
            shifted = np.corrcoef(bold[2:], resp[:-2, k])[0, 1]
            assert shifted < r
    null = dict(truth, parameters={**truth["parameters"], "null": True})
    assert not planted_responses(null, table).any()
    with pytest.raises(ValueError, match="outside run"):
        planted_responses(truth, pd.DataFrame({"run": [1], "volume": [TINY_TIMING.n_volumes[0]]}))


def test_planted_profile_of_windows(windowed):
    """The planted contrast of each class at each offset of its windows, computed from
    planted_responses by hand for one class."""
    _, prep = windowed
    truth = find_truth(prep.manifest["parameters"]["bids_dir"], prep.volumes.shape[1:])
    ws = window_samples(prep.samples, WINDOW)
    y = ws.samples["y"].to_numpy()
    prof = planted_profile(truth, prep.samples, ws.rows, y, prep.classes)
    assert prof.shape == (len(prep.classes), len(WINDOW))
    order = [list(truth["classes"]).index(c) for c in prep.classes]
    resp = planted_responses(truth, prep.samples)[:, order]
    w = resp[ws.rows[y == 0]]
    want = (w[:, :, 0] - w[:, :, 1:].mean(axis=2)).mean(axis=0)
    np.testing.assert_allclose(prof[0], want)


# --- occlusion in time finds the planted lag ---------------------------------------------------

OFFSETS = np.arange(-1, 8)  # volumes relative to the labelled moment
SHAPE = (8, 8, 6)


def _hrf_windows(n, rng, amplitude=2.0, tr=2.0):
    """Windows of white noise in which a labelled 2-s moment (onset uniform within its label
    step, as the movie's are) evokes the generator's HRF-convolved response
    (class_regressors) in its class's box of voxels. Returns windows, classes and each
    window's planted response at the offsets."""
    phase = rng.uniform(0, tr, n)
    y = rng.integers(0, 3, n)
    resp = np.stack([class_regressors(pd.DataFrame({"onset": [p], "label": ["c"]}), ["c"],
                                      OFFSETS * tr, tr)[0] for p in phase])
    resp /= resp.max()
    x = rng.standard_normal((n, len(OFFSETS), *SHAPE)).astype(np.float32)
    for c in range(3):
        box = np.zeros(SHAPE, bool)
        box[2 * c:2 * c + 2, 2:5, 2:4] = True
        x[y == c] += (amplitude * resp[y == c])[:, :, None, None, None] * box
    return x, y, resp


@pytest.mark.parametrize(("architecture", "seed"), [("spacetime", 0), ("cnn", 1)])
def test_temporal_profile_peaks_at_the_planted_lag(architecture, seed):
    """Trained on windows whose class response is the generator's HRF, a window network's
    temporal occlusion profile (each volume of the window blanked whole) peaks within one
    volume of the planted response's peak and stays low before the response starts.

    Tolerance: the response is sampled every TR = 2 s and a 2-s step's Glover response is
    broad at that rate: it peaks 6-7 s after onset, and across windows (the onset's phase
    uniform in 0-2 s) the volume at that peak holds 0.93 of the largest response on average,
    the ones before and after it about 0.7 and 0.5, so a network that reads the strongest
    volumes may rank a neighbour of the peak first;
    one volume is that sampling's resolution, and the offsets before the response (under 5 %
    of its peak) are required to hold less than half the peak's importance.
    """
    rng = np.random.default_rng(seed)
    train, val, test = (_hrf_windows(n, rng) for n in (300, 90, 60))
    cfg = TrainConfig(epochs=15, t_max=15, patience=15, batch_size=16, seed=seed,
                      architecture=architecture)
    model = train_model(*train[:2], *val[:2], 3, cfg, progress=False).model
    x, y, resp = test
    with torch.no_grad():
        accuracy = float((model(torch.from_numpy(x)).argmax(1).numpy() == y).mean())
    assert accuracy > 0.6  # chance is 1/3
    maps = spacetime_occlusion(model, x, y, patch=(1, *SHAPE))
    profile = np.nanmean(temporal_profile(maps, y, 3), axis=0)
    planted = resp.mean(axis=0)
    peak, planted_peak = int(np.argmax(profile)), int(np.argmax(planted))
    assert abs(peak - planted_peak) <= 1, (profile.round(3), planted.round(3))
    before = planted < 0.05 * planted.max()  # before the response rises (the first 3 offsets)
    assert before[:3].all() and profile[before].max() < 0.5 * profile[peak]
