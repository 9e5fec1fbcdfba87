import numpy as np
import pytest

from emolib.forrest.dataprep import prepare_dataset
from emolib.forrest.leaks import HRF_SPAN_S, LeakageError, assert_no_leak, find_leaks, leak_table
from emolib.forrest.splits import make_splits, removal_table
from tests.conftest import TINY_TIMING

TR = 2.0
SPANS = (4.0, HRF_SPAN_S)  # a short window, and the default (the canonical HRF's length)


@pytest.fixture(scope="module")
def samples(tiny_dataset, tmp_path_factory):
    """Every volume of the tiny dataset (2 subjects, 3 runs overlapping by 8 s)."""
    out = tmp_path_factory.mktemp("prep") / "all"
    prep = prepare_dataset(tiny_dataset / "ds000113", tiny_dataset / "annotations", out,
                           timing=TINY_TIMING, keep="all", min_count=10, n_per_class=10,
                           progress=False)
    return prep.samples


def brute_force_shared_moments(samples, train, test, span):
    """Training samples whose stimulus interval [t - span, t + TR) meets a test sample's."""
    t = samples["movie_time"].to_numpy()
    a = t[train][:, None] - span
    b = t[test][None, :] - span
    overlap = (a < b + span + TR) & (b < a + span + TR)
    return int(overlap.any(axis=1).sum())


def test_default_span_covers_the_canonical_hrf():
    from nilearn.glm.first_level import glover_hrf

    h = glover_hrf(1.0, oversampling=100, time_length=40.0)
    t = np.arange(h.size) / 100
    assert t[np.abs(h) > 0.05 * np.abs(h).max()].max() <= HRF_SPAN_S


@pytest.mark.parametrize("span", SPANS)
@pytest.mark.parametrize("kind", ["run", "subject"])
def test_guarded_splits_share_no_moment(samples, kind, span):
    splits = make_splits(samples, kind, tr=TR, span_s=span)
    assert len(splits) == (3 if kind == "run" else 2)
    for split in splits:
        assert brute_force_shared_moments(samples, split.train, split.test, span) == 0
        assert not find_leaks(samples, split, tr=TR, span_s=span).leaks
        assert np.intersect1d(split.train, split.test).size == 0
    assert_no_leak(samples, splits, tr=TR, span_s=span)


@pytest.mark.parametrize("span", SPANS)
def test_guards_remove_the_run_overlaps(samples, span):
    splits = {s.name: s for s in make_splits(samples, "run", tr=TR, span_s=span)}
    # run 2 overlaps runs 1 and 3 by 8 s (4 volumes each side), for 2 subjects: the guards
    # remove those twins from training, and the response widens the window by span / TR
    # volumes each side (volumes 2, 4, ..., span s away from the nearest test volume)
    removed = splits["run-2"].removed
    assert removed["same moment, same subject"] == 2 * 2 * 4  # 2 subjects x 2 sides x 4
    assert removed["same moment, other subject"] == 0  # counted once, under same subject
    assert removed["response window, same subject"] == 2 * 2 * int(span / TR)
    n_train_all = int((samples["run"] != 2).sum())
    assert splits["run-2"].train.size == n_train_all - sum(removed.values())
    table = removal_table(list(splits.values()))
    assert list(table["fold"]) == ["run-1", "run-2", "run-3"]
    # without the guard the same split would leak: the checker sees it
    unguarded = splits["run-2"]
    unguarded.train = np.flatnonzero(samples["run"].to_numpy() != 2)
    report = find_leaks(samples, unguarded, tr=TR, span_s=span)
    assert report.same_moment == 2 * 2 * 4
    assert report.response_window == 2 * 2 * int(span / TR)
    assert report.same_moment + report.response_window == brute_force_shared_moments(
        samples, unguarded.train, unguarded.test, span)


def test_checker_does_not_trust_the_guards(samples):
    """Folds guarded with a window shorter than one response leak by the checker's count."""
    short = make_splits(samples, "run", tr=TR, span_s=4.0)
    with pytest.raises(LeakageError, match="within 22 s"):
        assert_no_leak(samples, short, tr=TR)
    table = leak_table(samples, short, tr=TR)
    assert list(table["split"]) == ["run-1", "run-2", "run-3"]
    # run 2 keeps 8 volumes a side (2 subjects) that one response still links to run 1 or 3
    assert table.set_index("split").loc["run-2", "within 22 s"] == 2 * 2 * (10 - 2)
    assert (table["same volume"] == 0).all() and (table["same moment"] == 0).all()


def test_subject_split_holds_out_time_too(samples):
    for split in make_splits(samples, "subject", tr=TR):
        test_subjects = set(samples["subject"].iloc[split.test])
        assert len(test_subjects) == 1
        assert not test_subjects & set(samples["subject"].iloc[split.train])
        assert samples["run"].iloc[split.test].nunique() == 1


def test_random_split_leaks_and_the_checker_says_so(samples):
    (split,) = make_splits(samples, "random", seed=0)
    assert split.test.size == round(0.2 * len(samples))
    for span in SPANS:
        report = find_leaks(samples, split, tr=TR, span_s=span)
        assert report.leaks and report.same_moment > 0
        assert report.same_moment + report.response_window == brute_force_shared_moments(
            samples, split.train, split.test, span)
    with pytest.raises(LeakageError, match="random"):
        assert_no_leak(samples, [split], tr=TR)


def test_identical_volume_is_reported(samples):
    (split,) = make_splits(samples, "random", seed=0)
    split.train = np.append(split.train, split.test[0])
    assert find_leaks(samples, split, tr=TR).same_volume == 1


def test_fold_selection_and_bad_kind(samples):
    assert [s.name for s in make_splits(samples, "run", folds=[0, 2])] == ["run-1", "run-3"]
    with pytest.raises(ValueError, match="kind"):
        make_splits(samples, "time")
