"""Ground truth: null data decode at chance, planted data clearly above it (small, seeded)."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from emolib.dataprep import prepare_dataset
from emolib.decoding import load_decoding, run_decoding
from emolib.evaluate import (
    classification_metrics,
    cluster_bootstrap,
    cyclic_shift_labels,
    fold_metrics,
    macro_auc,
    permutation_test,
    roc_curves,
)
from emolib.synthetic import generate_studyforrest
from emolib.timing import RunTiming
from emolib.train import TrainConfig

CFG = TrainConfig(epochs=8, batch_size=16, t_max=8, patience=10, seed=0)
#: 3 overlapping runs of 5 minutes: enough labelled moments for all 5 generated classes.
TIMING = RunTiming(starts=(0.0, 292.0, 584.0), n_volumes=(150, 150, 150), tr=2.0)


def prepared(tmp_path_factory, null):
    root = tmp_path_factory.mktemp("dec")
    ds = generate_studyforrest(root / "ds", n_subjects=3, shape=(12, 12, 10), timing=TIMING,
                               effect_size=0.15, null=null, seed=4, progress=False)
    return prepare_dataset(ds / "ds000113", ds / "annotations", root / "prep",
                           timing=TIMING, min_count=20, n_per_class=20, progress=False)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    prep = prepared(tmp_path_factory, null=False)
    return run_decoding(prep, prep.folder.parent / "dec", "run", CFG, progress=False)


@pytest.fixture(scope="module")
def null(tmp_path_factory):
    prep = prepared(tmp_path_factory, null=True)
    return run_decoding(prep, prep.folder.parent / "dec", "run", CFG, progress=False)


def pooled(result, model):
    y, p, rows = result.probs(model)
    return y, p, rows


def test_planted_signal_is_decoded_above_chance(planted):
    y, p, rows = pooled(planted, "cnn")
    folds = rows["fold"].to_numpy()
    assert macro_auc(y, p, len(planted.classes), folds) > 0.75
    test = permutation_test(y, p, rows["movie_time"].to_numpy(), rows["fold"].to_numpy(),
                            len(planted.classes), n_permutations=199, seed=0)
    assert test.p_value <= 0.01
    y, p, _ = pooled(planted, "linear")
    assert macro_auc(y, p, len(planted.classes), folds) > 0.7
    per_fold = fold_metrics(y, p, folds, planted.classes)
    assert list(per_fold["fold"]) == ["run-1", "run-2", "run-3"]


def test_null_data_stay_at_chance(null):
    y, p, rows = pooled(null, "cnn")
    auc = macro_auc(y, p, len(null.classes), rows["fold"].to_numpy())
    test = permutation_test(y, p, rows["movie_time"].to_numpy(), rows["fold"].to_numpy(),
                            len(null.classes), n_permutations=199, seed=0)
    assert abs(auc - 0.5) < 0.15
    assert test.p_value > 0.05


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
    from emolib.dataprep import load_prepared

    prep = load_prepared(planted.folder.parent / "prep")
    rerun = run_decoding(prep, planted.folder, "run", CFG, progress=False)
    assert (again.folder / "fold-run-1" / "best.pt").stat().st_mtime_ns == before
    np.testing.assert_allclose(rerun.probs("cnn")[1], planted.probs("cnn")[1])


def test_metrics_match_sklearn(rng):
    y = rng.integers(0, 3, 60)
    p = rng.dirichlet(np.ones(3), size=60)
    m = classification_metrics(y, p, ["a", "b", "c"])
    for c, name in enumerate("abc"):
        assert m["auc"][name] == pytest.approx(roc_auc_score(y == c, p[:, c]))
    assert m["macro_auc"] == pytest.approx(roc_auc_score(y, p, multi_class="ovr"))
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
