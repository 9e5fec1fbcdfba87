"""Ground truth: null data decode at chance, planted data clearly above it (small, seeded)."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from emolib.decoding import (
    cyclic_shift_labels,
    ground_truth_check,
    load_decoding,
    retrained_null,
    run_decoding,
    split_inflation,
)
from emolib.decoding.evaluate import (
    auc_per_class,
    classification_metrics,
    cluster_bootstrap,
    fold_metrics,
    macro_auc,
    roc_curves,
    time_blocks,
)
from emolib.models.train import TrainConfig

CFG = TrainConfig(epochs=8, batch_size=16, t_max=8, patience=10, augment_noise=1.0, seed=0)


@pytest.fixture(scope="module")
def truth_check(tmp_path_factory):
    """Planted and null twins decoded with the run split, the null twin also with the random
    split (see ground_truth_check)."""
    root = tmp_path_factory.mktemp("truth")
    table = ground_truth_check(root, CFG, n_permutations=199, random_split=True)
    return root, table.set_index(["data", "model"])


@pytest.fixture(scope="module")
def planted(truth_check):
    return load_decoding(truth_check[0] / "planted" / "decoding")


def test_planted_signal_is_decoded_above_chance(truth_check):
    """Trained end to end on subjects in their own native spaces (the generator's default)."""
    from emolib.forrest.dataprep import load_prepared

    prep = load_prepared(truth_check[0] / "planted" / "prep")
    assert not np.allclose(prep.affines["01"], prep.affines["02"], atol=0.1)
    table = truth_check[1]
    for model in ("cnn", "linear"):  # a 5 % response on 300 samples, as the book plants it
        row = table.loc[("planted", model)]
        assert row["p_value"] <= 0.01
        assert row["macro_auc"] > row["null_mean"] + 2 * row["null_sd"]
    assert table.loc[("planted", "linear"), "macro_auc"] > 0.7


def test_null_twin_stays_within_its_null(truth_check):
    """One null realisation: not an outlier of its own permutation null (4 sd: a calibrated
    test fails this about once in 10^4 datasets). Calibration itself is shown by simulation
    in tests/test_nulls.py, not by one seed."""
    table = truth_check[1]
    for model in ("cnn", "linear"):
        row = table.loc[("null", model)]
        assert row["null_sd"] > 0
        assert abs(row["macro_auc"] - row["null_mean"]) <= 4 * row["null_sd"]


def test_split_inflation_on_the_null_twin(truth_check):
    """The random split of the null twin against its run split: same volumes, one row per
    model, the difference inside its jackknife interval (the leak's size is measured over
    many datasets in tests/test_synthetic.py, not asserted on one)."""
    root = truth_check[0]
    random_result = load_decoding(root / "null" / "random")
    run_result = load_decoding(root / "null" / "decoding")
    assert random_result.kind == "random" and run_result.kind == "run"
    table = split_inflation(random_result, run_result).set_index("model")
    assert list(table.index) == ["cnn", "linear", "chance"]
    for model, row in table.iterrows():
        y, p, meta = random_result.probs(model)
        assert row["auc_leaky"] == pytest.approx(macro_auc(y, p, 5, meta["fold"].to_numpy()))
        assert row["inflation"] == pytest.approx(row["auc_leaky"] - row["auc_honest"])
        assert row["low"] < row["inflation"] < row["high"]
        assert row["dof"] >= 10


def test_retrained_null_on_the_known_answers(truth_check):
    """The linear baseline retrained under shifted labels: on the planted twin no shifted
    training reaches the true one (p at its floor, 1/10); every shift scores the true held-out
    labels, so the observed AUC is the run_decoding baseline's."""
    from emolib.forrest.dataprep import load_prepared

    root, table = truth_check
    res = retrained_null(load_prepared(root / "planted" / "prep"), "run", "linear", 9, seed=0)
    assert res.observed == pytest.approx(table.loc[("planted", "linear"), "macro_auc"])
    assert res.null.shape == (9,) and res.shifts.shape == (9,)
    assert res.p_value == pytest.approx(1 / 10)
    assert abs(res.null.mean() - 0.5) < 0.1  # shifted labels teach (almost) nothing
    assert res.seconds_per_shift > 0
    with pytest.raises(ValueError, match="random split"):
        retrained_null(load_prepared(root / "planted" / "prep"), "random")


def test_fold_metrics_per_fold(planted):
    y, p, rows = planted.probs("linear")
    per_fold = fold_metrics(y, p, rows["fold"].to_numpy(), planted.classes)
    assert list(per_fold["fold"]) == ["run-1", "run-2", "run-3"]
    assert per_fold["n_test"].sum() == len(y)
    weighted = np.average(per_fold["macro_auc"], weights=per_fold["n_test"])
    assert weighted == pytest.approx(macro_auc(y, p, len(planted.classes),
                                               rows["fold"].to_numpy()))


def test_outputs_on_disk_and_resume(planted):
    again = load_decoding(planted.folder)
    assert again.kind == "run"
    assert set(again.predictions["model"]) == {"cnn", "linear", "chance"}
    assert (again.folder / "fold-run-1" / "best.pt").is_file()
    assert list(again.folds["fold"]) == ["run-1", "run-2", "run-3"]
    # every selected sample is predicted exactly once per model
    cnn = again.predictions[again.predictions["model"] == "cnn"]
    assert cnn["sample"].is_unique
    # a finished run is not recomputed: done folds are read back
    before = (again.folder / "fold-run-1" / "best.pt").stat().st_mtime_ns
    from emolib.forrest.dataprep import load_prepared

    prep = load_prepared(planted.folder.parent / "prep")
    rerun = run_decoding(prep, planted.folder, "run", CFG, progress=False)
    assert (again.folder / "fold-run-1" / "best.pt").stat().st_mtime_ns == before
    np.testing.assert_allclose(rerun.probs("cnn")[1], planted.probs("cnn")[1])


def test_stale_folds_are_recomputed_and_say_why(tiny_dataset, tmp_path):
    """A fold is reused only when made from the same configuration, prepared data and
    samples; otherwise it is recomputed and the reason recorded (issue: stale results came
    back as new after changing epochs or re-preparing)."""
    from emolib.forrest import prepare_dataset
    from tests.conftest import TINY_TIMING

    def prep(seed, out):
        return prepare_dataset(tiny_dataset / "ds000113", tiny_dataset / "annotations",
                               tmp_path / out, timing=TINY_TIMING, min_count=10,
                               n_per_class=10, seed=seed, progress=False)

    cfg = TrainConfig(epochs=1, batch_size=16, t_max=1, patience=5, seed=0)
    first = prep(0, "prep")
    out = tmp_path / "dec"
    a = run_decoding(first, out, "run", cfg, folds=[0], progress=False)
    assert a.reuse[["status"]].to_dict("list") == {"status": ["new"]}
    same = run_decoding(first, out, "run", cfg, folds=[0], progress=False)
    assert list(same.reuse["status"]) == ["reuse"]
    pd.testing.assert_frame_equal(same.predictions, a.predictions)
    # another configuration: recomputed, and the reason names what changed
    longer = TrainConfig(**{**cfg.to_dict(), "epochs": 2, "t_max": 2})
    b = run_decoding(first, out, "run", longer, folds=[0], progress=False)
    assert list(b.reuse["status"]) == ["stale"]
    assert "config.epochs: 1 -> 2" in b.reuse["reason"].iloc[0]
    assert len(b.history) == 2
    # the same data re-prepared with another balancing seed: other samples, recomputed
    other = prep(5, "prep-other")
    c = run_decoding(other, out, "run", longer, folds=[0], progress=False)
    assert list(c.reuse["status"]) == ["stale"]
    assert "data:" in c.reuse["reason"].iloc[0]
    rows = c.predictions[c.predictions["model"] == "cnn"]
    sel = other.samples.iloc[rows["sample"]]
    np.testing.assert_array_equal(rows["y"].to_numpy(), sel["y"].to_numpy())
    # a fold folder from before inputs were recorded is not trusted
    (out / "fold-run-1" / "inputs.json").unlink()
    d = run_decoding(other, out, "run", longer, folds=[0], progress=False)
    assert list(d.reuse["status"]) == ["stale"]
    assert "before its inputs were recorded" in d.reuse["reason"].iloc[0]


def test_metrics_match_sklearn(rng):
    y = rng.integers(0, 3, 60)
    p = rng.dirichlet(np.ones(3), size=60)
    m = classification_metrics(y, p, ["a", "b", "c"])
    for c, name in enumerate("abc"):
        assert m["auc"][name] == pytest.approx(roc_auc_score(y == c, p[:, c]))
    assert m["macro_auc"] == pytest.approx(roc_auc_score(y, p, multi_class="ovr"))
    # scores are ranked as they are: tiny differences count, exact ties score 0.5
    flat = np.tile([0.3, 0.3, 0.4], (60, 1))
    assert classification_metrics(y, flat, ["a", "b", "c"])["macro_auc"] == 0.5
    tiny = flat + 1e-9 * p
    assert classification_metrics(y, tiny, ["a", "b", "c"])["macro_auc"] == pytest.approx(
        m["macro_auc"])
    assert m["confusion"].to_numpy().sum() == 60
    curves = roc_curves(y, p, ["a", "b", "c"])
    assert set(curves["class"]) == {"a", "b", "c"}


def test_cluster_bootstrap_contains_estimate(rng):
    y = np.repeat(rng.integers(0, 2, 40), 3)
    p = np.stack([1 - (y + rng.normal(0, 1, y.size)) / 3, (y + rng.normal(0, 1, y.size)) / 3], 1)
    clusters = np.repeat(np.arange(40), 3)
    ci = cluster_bootstrap(y, p, clusters, 2, n_boot=200, seed=0).set_index("metric")
    row = ci.loc["macro_auc"]
    assert row["low"] <= row["estimate"] <= row["high"]
    assert row["se"] > 0


def test_cyclic_shift_keeps_moments_together(rng):
    times = np.repeat(np.arange(30.0), 2)  # two subjects per moment
    y = np.repeat(np.arange(30) // 5 % 3, 2)
    shifted = cyclic_shift_labels(y, times, rng)
    assert (shifted[::2] == shifted[1::2]).all()  # a moment keeps one label
    assert sorted(shifted) == sorted(y)  # same label counts
    # runs of equal labels (the autocorrelation) survive, up to the wrap-around
    changes = lambda v: int((np.diff(v[::2]) != 0).sum())  # noqa: E731
    assert abs(changes(shifted) - changes(y)) <= 1


def test_linear_baseline_with_one_training_class_predicts_it(rng):
    """A tiny dataset's fold may train on a single class: the baseline then predicts that
    class (constant outputs, a collapsed fold for the null) instead of failing."""
    from emolib.decoding import linear_baseline

    x = rng.standard_normal((12, 6))
    p = linear_baseline(x, np.full(12, 2), x, np.arange(12) % 3, x[:4], 3)
    np.testing.assert_array_equal(p, np.tile([0.0, 0.0, 1.0], (4, 1)))


def test_auc_per_class_equals_sklearn_with_ties(rng):
    """The rank (Mann-Whitney) AUC equals scikit-learn's roc_auc_score, ties included."""
    for n_classes, n in ((2, 7), (5, 200), (3, 60)):
        y = rng.integers(0, n_classes, n)
        p = np.round(rng.dirichlet(np.ones(n_classes), n), 1)  # many ties
        got = auc_per_class(y, p, n_classes)
        for c in range(n_classes):
            if 0 < (y == c).sum() < n:
                assert got[c] == pytest.approx(roc_auc_score(y == c, p[:, c]), abs=1e-12)
            else:
                assert np.isnan(got[c])
    assert np.isnan(auc_per_class(np.array([], int), np.empty((0, 3)), 3)).all()


def test_time_blocks_group_stretches_of_movie_time():
    t = np.array([0.0, 2.0, 58.0, 60.0, 61.9, 119.9, 120.0, 1000.0])
    assert time_blocks(t, 60.0).tolist() == [0, 0, 0, 1, 1, 1, 2, 16]
    with pytest.raises(ValueError, match="positive"):
        time_blocks(t, 0.0)


KILLED_DECODING = """
import sys, time
import emolib.decoding.crossval as cv
from emolib.forrest.dataprep import load_prepared
from emolib.models.train import TrainConfig

real, folds = cv.train_model, []


def train(*args, **kwargs):
    folds.append(1)

    def hook(epoch, row):
        if len(folds) == 2 and epoch == 0:  # fold 1 finished, fold 2 one epoch in
            print("fold 2 epoch 0", flush=True)
            time.sleep(600)

    return real(*args, **kwargs, on_epoch_end=hook)


cv.train_model = train
cfg = TrainConfig(epochs=2, batch_size=16, t_max=2, patience=5, seed=0)
cv.run_decoding(load_prepared(sys.argv[1]), sys.argv[2], "run", cfg, folds=[0, 1, 2],
                progress=False)
"""


def test_killed_decoding_resumes_to_the_same_result(tiny_dataset, tmp_path):
    """A finished decoding with other settings is redone and killed during its second fold:
    the folder is no longer taken for a finished decoding, and the rerun reuses fold 1,
    resumes fold 2 from its checkpoint, recomputes the stale fold 3, and ends with the
    predictions of an uninterrupted run."""
    from emolib.forrest import prepare_dataset
    from emolib.testing import kill_when
    from tests.conftest import TINY_TIMING

    prep = prepare_dataset(tiny_dataset / "ds000113", tiny_dataset / "annotations",
                           tmp_path / "prep", timing=TINY_TIMING, min_count=10,
                           n_per_class=10, seed=0, progress=False)
    cfg = TrainConfig(epochs=2, batch_size=16, t_max=2, patience=5, seed=0)
    reference = run_decoding(prep, tmp_path / "reference", "run", cfg, folds=[0, 1, 2],
                             progress=False)
    out = tmp_path / "dec"
    one_epoch = TrainConfig(**{**cfg.to_dict(), "epochs": 1, "t_max": 1})
    run_decoding(prep, out, "run", one_epoch, folds=[0, 1, 2], progress=False)
    kill_when(KILLED_DECODING, "fold 2 epoch 0", [prep.folder, out])
    with pytest.raises(FileNotFoundError, match="no finished decoding"):
        load_decoding(out)
    resumed = run_decoding(prep, out, "run", cfg, folds=[0, 1, 2], progress=False)
    assert list(resumed.reuse["status"]) == ["reuse", "resume", "stale"]
    pd.testing.assert_frame_equal(resumed.predictions, reference.predictions)
    again = load_decoding(out)
    pd.testing.assert_frame_equal(again.predictions, reference.predictions)
    assert list(again.reuse["status"]) == ["reuse", "resume", "stale"]
