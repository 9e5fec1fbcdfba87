import hashlib

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from emolib.errors import InputDataError
from emolib.forrest.dataprep import label_volumes, load_prepared, prepare_dataset, zscore_volumes
from emolib.forrest.labels import consensus_labels, select_classes
from emolib.io.annotations import read_observers
from tests.conftest import TINY_TIMING


def prepare(dataset, out, **kw):
    kw = {"timing": TINY_TIMING, "min_count": 10, "n_per_class": 10, "progress": False, **kw}
    return prepare_dataset(dataset / "ds000113", dataset / "annotations", out, **kw)


def test_zscore_volumes_matches_numpy(rng):
    chunk = rng.normal(5, 3, size=(4, 5, 3, 6)).astype(np.float32)
    out = zscore_volumes(chunk)
    assert out.shape == (6, 4, 5, 3)
    for t in range(6):
        v = chunk[..., t]
        np.testing.assert_allclose(out[t], (v - v.mean()) / v.std(), rtol=1e-5, atol=1e-5)
    mask = np.zeros((4, 5, 3), bool)
    mask[1:3, 1:4, :] = True
    out = zscore_volumes(chunk, mask)
    v = chunk[..., 2]
    np.testing.assert_allclose(out[2][mask], (v[mask] - v[mask].mean()) / v[mask].std(),
                               rtol=1e-5, atol=1e-5)
    assert (out[:, ~mask] == 0).all()
    const = np.ones((2, 2, 2, 1), np.float32)
    assert (zscore_volumes(const) == 0).all()


def test_samples_are_labelled_from_the_stimulus_time(tiny_dataset, tmp_path):
    prep = prepare(tiny_dataset, tmp_path / "prep")
    s = prep.samples
    ann = read_observers(tiny_dataset / "annotations")
    labels = consensus_labels(ann)
    grid = labels.set_index("tr")["label"]
    # each sample's label is the consensus label at floor((movie time - lag) / 2)
    for _, row in s.iterrows():
        step = int(np.floor((row["movie_time"] - 4.0) / 2.0))
        assert row["label_tr"] == step
        assert grid[step] == row["label"]
        assert row["movie_time"] == TINY_TIMING.movie_time(row["run"], row["volume"])
    assert s["selected"].all()
    assert sorted(s["subject"].unique()) == ["01", "02"]
    # both subjects have the same volumes, and y indexes the sorted classes
    assert (s.groupby("subject").size().nunique()) == 1
    assert [prep.classes[y] for y in s["y"]] == s["label"].tolist()
    selected = select_classes(labels, min_count=10, n_per_class=10, seed=0)
    assert set(s["label_tr"]) <= set(selected["tr"])


def test_volumes_are_zscored_copies_of_the_data(tiny_dataset, tmp_path):
    prep = prepare(tiny_dataset, tmp_path / "prep")
    assert prep.volumes.shape == (len(prep.samples), 12, 12, 10)
    assert prep.volumes.dtype == np.float32
    assert isinstance(prep.volumes, np.memmap)
    row = prep.samples.iloc[7]
    path = (tiny_dataset / "ds000113" / f"sub-{row['subject']}" / "ses-movie" / "func" /
            f"sub-{row['subject']}_ses-movie_task-movie_run-{row['run']}_bold.nii.gz")
    vol = nib.load(path).get_fdata()[..., row["volume"]]
    np.testing.assert_allclose(prep.volumes[7], (vol - vol.mean()) / vol.std(), atol=1e-5)


def test_overlap_twins_are_kept_and_marked(tiny_dataset, tmp_path):
    prep = prepare(tiny_dataset, tmp_path / "prep", keep="all")
    s = prep.samples
    assert len(s) == 2 * sum(TINY_TIMING.n_volumes)
    twins = s[(s["overlap_run"] > 0) & (s["subject"] == "01")]
    assert len(twins) == 16
    # a moment seen in two runs carries the same label step in both
    for _, row in twins.iterrows():
        other = twins[(twins["run"] == row["overlap_run"]) &
                      (twins["movie_time"] == row["movie_time"])]
        assert len(other) == 1 and other["label_tr"].iloc[0] == row["label_tr"]


def test_manifest_records_inputs_and_parameters(tiny_dataset, tmp_path):
    prep = prepare(tiny_dataset, tmp_path / "prep")
    m = prep.manifest
    assert m["stage"] == "01_dataprep"
    assert m["parameters"]["hrf_lag"] == 4.0
    assert m["outputs"]["n_samples"] == len(prep.samples)
    bold = sorted((tiny_dataset / "ds000113").rglob("*_bold.nii.gz"))
    assert len([p for p in m["inputs"] if p.endswith(".nii.gz")]) == len(bold)
    assert m["inputs"][str(bold[0])] == hashlib.sha256(bold[0].read_bytes()).hexdigest()
    assert m["versions"]["nibabel"] == nib.__version__
    again = load_prepared(prep.folder)
    pd.testing.assert_frame_equal(again.samples, prep.samples)


def test_deterministic(tiny_dataset, tmp_path):
    a = prepare(tiny_dataset, tmp_path / "a", seed=3)
    b = prepare(tiny_dataset, tmp_path / "b", seed=3)
    pd.testing.assert_frame_equal(a.samples, b.samples)
    np.testing.assert_array_equal(np.asarray(a.volumes), np.asarray(b.volumes))


def test_mask_option(tiny_dataset, tmp_path):
    prep = prepare(tiny_dataset, tmp_path / "m", mask="epi")
    assert 0 < prep.mask.sum() < prep.mask.size
    v = np.asarray(prep.volumes[0])
    assert (v[~prep.mask] == 0).all()
    assert abs(v[prep.mask].mean()) < 1e-4 and abs(v[prep.mask].std() - 1) < 1e-4


def test_bad_run_fails_cleanly_and_writes_nothing(tiny_dataset, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_dataset, broken)
    victim = broken / "ds000113/sub-02/ses-movie/func/sub-02_ses-movie_task-movie_run-3_bold.nii.gz"
    raw = victim.read_bytes()
    victim.write_bytes(raw[: len(raw) - 5000])
    out = tmp_path / "prep"
    with pytest.raises(InputDataError, match="run-3_bold.nii.gz"):
        prepare(broken, out)
    assert not out.exists()
    assert not (tmp_path / "prep.partial").exists()


def test_run_length_must_match_timing(tiny_dataset, tmp_path):
    from emolib.forrest.timing import RunTiming

    wrong = RunTiming(TINY_TIMING.starts, (60, 59, 60), 2.0)
    with pytest.raises(InputDataError, match="run-2_bold.nii.gz: has 60 volumes; run 2"):
        prepare(tiny_dataset, tmp_path / "x", timing=wrong)


def test_label_volumes_selected_flag():
    labels = pd.DataFrame({"tr": np.arange(200), "onset": np.arange(200) * 2.0,
                           "label": pd.array(["A", "B"] * 100, dtype="string")})
    selected = labels[labels["tr"] < 20]
    vt = label_volumes(TINY_TIMING, labels, selected, hrf_lag=4.0)
    assert vt.loc[vt["selected"], "label_tr"].max() < 20
    assert (vt.loc[vt["label_tr"] == -1, "label"].isna()).all()
