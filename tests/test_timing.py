import numpy as np
import pytest

from emolib.forrest.timing import STUDYFORREST, RunTiming
from tests.conftest import TINY_TIMING


def test_real_timing_facts():
    assert STUDYFORREST.n_volumes == (451, 441, 438, 488, 462, 439, 542, 338)
    assert sum(STUDYFORREST.n_volumes) == 3599
    overlaps = STUDYFORREST.overlaps()
    assert [(a, b) for a, b, _ in overlaps] == [(r, r + 1) for r in range(1, 8)]
    assert all(15.9 <= s <= 16.0 for _, _, s in overlaps)


@pytest.mark.parametrize("timing", [STUDYFORREST, TINY_TIMING])
def test_round_trip_every_volume(timing):
    for run, n in zip(timing.runs, timing.n_volumes, strict=True):
        for v in range(n):
            t = timing.movie_time(run, v)
            assert (run, v) in timing.run_volumes(t)
            assert (run, v) in timing.run_volumes(t + 0.5 * timing.tr)


def test_overlap_moment_is_in_both_runs():
    # 890 s: run 1 volume 445 (starts at 0) and run 2 volume 2 (starts at 886)
    assert STUDYFORREST.run_volumes(890.0) == [(1, 445), (2, 2)]
    assert STUDYFORREST.run_volumes(100.0) == [(1, 50)]
    assert STUDYFORREST.run_volumes(1e6) == []
    # a fractional start: run 3 starts at 1752.08
    assert STUDYFORREST.movie_time(3, 10) == pytest.approx(1772.08)
    assert (3, 10) in STUDYFORREST.run_volumes(1772.08)


def test_volume_table_tracks_overlaps_and_lag():
    vt = TINY_TIMING.volume_table(hrf_lag=4.0)
    assert len(vt) == 180
    assert np.allclose(vt["stim_time"], vt["movie_time"] - 4.0)
    # runs of 120 s starting 112 s apart overlap by 8 s = 4 volumes on each side
    assert (vt["overlap_run"] > 0).sum() == 2 * 4 * 2
    twins = vt[vt["overlap_run"] > 0]
    for _, row in twins.iterrows():
        others = [r for r, _ in TINY_TIMING.run_volumes(row["movie_time"]) if r != row["run"]]
        assert others == [row["overlap_run"]]
    # label step of the stimulus time; -1 before the movie starts
    first = vt.iloc[0]
    assert first["label_tr"] == -1
    assert vt.iloc[5]["label_tr"] == 3  # (10 - 4) / 2


def test_first_volumes_of_every_run_get_no_label():
    """Runs 2-8 start after a break: their first volumes show what was on screen before the
    run began (the end of the previous run), so, as in run 1, they get no label."""
    for timing in (TINY_TIMING, STUDYFORREST):
        for lag in (4.0, 5.0, 6.0):
            vt = timing.volume_table(hrf_lag=lag)
            for run, start in zip(timing.runs, timing.starts, strict=True):
                r = vt[vt["run"] == run]
                before = r["stim_time"] < start - 1e-9
                assert before.sum() == int(np.ceil(lag / timing.tr - 1e-9))
                assert (r.loc[before, "label_tr"] == -1).all()
                assert (r.loc[~before, "label_tr"] >= 0).all()
                # the first labelled volume reads the step holding its run's start
                first = r.loc[~before].iloc[0]
                assert first["label_tr"] == int(np.floor(first["stim_time"] / 2.0 + 1e-9))


def test_invalid_timing_and_indices():
    with pytest.raises(ValueError, match="increase"):
        RunTiming((0.0, 0.0), (3, 3))
    with pytest.raises(ValueError, match="run starts"):
        RunTiming((0.0,), (3, 3))
    with pytest.raises(ValueError, match="run must be"):
        STUDYFORREST.movie_time(9, 0)
    with pytest.raises(ValueError, match="volume out of range"):
        STUDYFORREST.movie_time(8, 338)


def test_vectorised_movie_time_matches_scalar():
    runs = np.array([1, 2, 8])
    vols = np.array([0, 5, 337])
    got = STUDYFORREST.movie_time(runs, vols)
    assert got.tolist() == [STUDYFORREST.movie_time(r, v) for r, v in zip(runs, vols, strict=True)]


@pytest.mark.parametrize("tr", [1.0, 2.0, 2.5])
def test_volumes_read_the_label_grid_by_time_whatever_the_tr(tr):
    """The labels are agreed on the annotations' 2-s grid (LABEL_STEP_S), not the TR's: a
    volume reads the step that holds its stimulus time, at any TR."""
    import pandas as pd

    from emolib.forrest.labels import LABEL_STEP_S
    from emolib.forrest.timing import label_volumes

    timing = RunTiming(starts=(0.0,), n_volumes=(int(60 / tr),), tr=tr)
    steps = int(60 / LABEL_STEP_S)
    labels = pd.DataFrame({"tr": np.arange(steps), "label": [f"L{i}" for i in range(steps)]})
    vt = label_volumes(timing, labels, labels.iloc[::3], hrf_lag=4.0)
    stim = np.arange(len(vt)) * tr - 4.0
    step = np.floor(stim / LABEL_STEP_S + 1e-9).astype(int)
    labelled = stim >= 0
    assert (vt["label_tr"].to_numpy()[labelled] == step[labelled]).all()
    assert vt["label"][labelled].tolist() == [f"L{s}" for s in step[labelled]]
    assert vt["label"][~labelled].isna().all()
    assert (vt["selected"] == (labelled & (step % 3 == 0))).all()
