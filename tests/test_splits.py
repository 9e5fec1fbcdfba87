import numpy as np
import pytest

from emolib.forrest.dataprep import prepare_dataset
from emolib.forrest.splits import (
    LeakageError,
    assert_no_leak,
    find_leaks,
    make_splits,
    removal_table,
)
from tests.conftest import TINY_TIMING

LAG, TR = 4.0, 2.0


@pytest.fixture(scope="module")
def samples(tiny_dataset, tmp_path_factory):
    """Every volume of the tiny dataset (2 subjects, 3 runs overlapping by 8 s)."""
    out = tmp_path_factory.mktemp("prep") / "all"
    prep = prepare_dataset(tiny_dataset / "ds000113", tiny_dataset / "annotations", out,
                           timing=TINY_TIMING, keep="all", min_count=10, n_per_class=10,
                           progress=False)
    return prep.samples


def brute_force_shared_moments(samples, train, test):
    """Training samples whose stimulus interval [t - lag, t + TR) meets a test sample's."""
    t = samples["movie_time"].to_numpy()
    a = t[train][:, None] - LAG
    b = t[test][None, :] - LAG
    overlap = (a < b + LAG + TR) & (b < a + LAG + TR)
    return int(overlap.any(axis=1).sum())


@pytest.mark.parametrize("kind", ["run", "subject"])
def test_guarded_splits_share_no_moment(samples, kind):
    splits = make_splits(samples, kind, tr=TR, hrf_lag=LAG)
    assert len(splits) == (3 if kind == "run" else 2)
    for split in splits:
        assert brute_force_shared_moments(samples, split.train, split.test) == 0
        assert not find_leaks(samples, split, TR, LAG).leaks
        assert np.intersect1d(split.train, split.test).size == 0
    assert_no_leak(samples, splits, TR, LAG)


def test_guards_remove_the_run_overlaps(samples):
    splits = {s.name: s for s in make_splits(samples, "run", tr=TR, hrf_lag=LAG)}
    # run 2 overlaps runs 1 and 3 by 8 s (4 volumes each side), for 2 subjects: the guards
    # remove those twins from training, and the lag widens the window by 2 volumes each side
    removed = splits["run-2"].removed
    assert removed["same moment, same subject"] == 2 * 2 * 4  # 2 subjects x 2 sides x 4
    assert removed["same moment, other subject"] == 0  # counted once, under same subject
    assert removed["lag window, same subject"] == 2 * 2 * 2  # the lag: 2 more volumes a side
    n_train_all = int((samples["run"] != 2).sum())
    assert splits["run-2"].train.size == n_train_all - sum(removed.values())
    table = removal_table(list(splits.values()))
    assert list(table["fold"]) == ["run-1", "run-2", "run-3"]
    # without the guard the same split would leak: the checker sees it
    unguarded = splits["run-2"]
    unguarded.train = np.flatnonzero(samples["run"].to_numpy() != 2)
    report = find_leaks(samples, unguarded, TR, LAG)
    assert report.same_moment == 2 * 2 * 4
    assert report.lag_window == 2 * 2 * 2
    assert report.same_moment + report.lag_window == brute_force_shared_moments(
        samples, unguarded.train, unguarded.test)


def test_subject_split_holds_out_time_too(samples):
    for split in make_splits(samples, "subject", tr=TR, hrf_lag=LAG):
        test_subjects = set(samples["subject"].iloc[split.test])
        assert len(test_subjects) == 1
        assert not test_subjects & set(samples["subject"].iloc[split.train])
        assert samples["run"].iloc[split.test].nunique() == 1


def test_random_split_leaks_and_the_checker_says_so(samples):
    (split,) = make_splits(samples, "random", seed=0)
    assert split.test.size == round(0.2 * len(samples))
    report = find_leaks(samples, split, TR, LAG)
    assert report.leaks and report.same_moment > 0
    assert report.same_moment + report.lag_window == brute_force_shared_moments(
        samples, split.train, split.test)
    with pytest.raises(LeakageError, match="random"):
        assert_no_leak(samples, [split], TR, LAG)


def test_identical_volume_is_reported(samples):
    (split,) = make_splits(samples, "random", seed=0)
    split.train = np.append(split.train, split.test[0])
    assert find_leaks(samples, split, TR, LAG).same_volume == 1


def test_fold_selection_and_bad_kind(samples):
    assert [s.name for s in make_splits(samples, "run", folds=[0, 2])] == ["run-1", "run-3"]
    with pytest.raises(ValueError, match="kind"):
        make_splits(samples, "time")
