import hashlib
import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from emolib.forrest.labels import consensus_labels
from emolib.io.annotations import read_observers
from emolib.io.bids import STUDYFORREST_SUBJECTS, find_runs, read_run_info
from emolib.synthetic import generate_annotations, generate_studyforrest, read_truth
from emolib.synthetic.forrest import VOXEL_SIZE
from tests.conftest import TINY_TIMING


def test_layout_and_headers(tiny_dataset):
    bids = tiny_dataset / "ds000113"
    runs = find_runs(bids)
    assert sorted(runs["subject"].unique()) == list(STUDYFORREST_SUBJECTS[:2])
    assert sorted(runs["run"].unique()) == [1, 2, 3]
    for path, run in zip(runs["path"], runs["run"], strict=True):
        img = nib.load(path)
        assert img.shape == (12, 12, 10, TINY_TIMING.n_volumes[run - 1])
        assert img.get_data_dtype() == np.int16
        np.testing.assert_allclose(img.header.get_zooms(), (*VOXEL_SIZE, 2.0), rtol=1e-5)
        assert img.header.get_xyzt_units() == ("mm", "sec")
        assert read_run_info(path).tr == 2.0
        # what the real tree has beside each run
        stem = path.name[: -len("_bold.nii.gz")]
        dcm = json.loads(path.with_name(f"{stem}_bold.json").read_text())
        assert "RepetitionTime" not in dcm and dcm["global"]["const"]["RepetitionTime"] == 2000
        events = pd.read_csv(path.with_name(f"{stem}_events.tsv"), sep="\t")
        assert list(events.columns) == ["onset", "duration", "frameidx", "videotime",
                                        "audiotime", "lasttrigger"]
        assert len(events) == TINY_TIMING.n_volumes[run - 1] * 2 * 25  # one row per frame
        assert nib.load(path.with_name(f"{stem}_defacemask.nii.gz")).shape == (12, 12, 10)
    meta = json.loads((bids / "task-movie_bold.json").read_text())
    assert meta["RepetitionTime"] == 2.00000061  # ds000113's BIDS value; headers say 2.0
    assert read_run_info(runs["path"][0], bids_root=bids).tr == 2.00000061
    # a subject of ds000113 without the movie session
    assert (bids / "sub-07").is_dir() and not (bids / "sub-07" / "ses-movie").exists()
    # native space: each subject its own affine, runs of a subject one grid
    affines = {s: nib.load(g["path"].iloc[0]).affine for s, g in runs.groupby("subject")}
    assert not np.allclose(affines["01"], affines["02"], atol=0.5)
    # the truth lives beside the BIDS tree, never inside it
    assert not list(bids.rglob("*region*")) and not list(bids.rglob("brain_mask*"))
    assert not list(bids.rglob("generation.json"))
    assert (tiny_dataset / "truth" / "generation.json").is_file()


def test_truth_regions(tiny_dataset):
    truth = read_truth(tiny_dataset)
    assert truth["classes"] == ["ANGERRAGE", "FEAR", "HAPPINESS", "LOVE", "SADNESS"]
    regions = np.stack(list(truth["template_regions"].values()))
    assert regions.any(axis=(1, 2, 3)).all()
    assert (regions.sum(axis=0) <= 1).all()  # regions do not overlap
    assert (regions.any(axis=0) <= truth["template_brain_mask"]).all()
    # in each subject's own grid the same regions, sampled there; the voxel-space truth is
    # their union
    assert sorted(truth["by_subject"]) == ["01", "02"]
    for sub in truth["by_subject"].values():
        for c, region in sub["regions"].items():
            assert region.any() and (region <= sub["brain_mask"]).all()
            assert (region <= truth["regions"][c]).all()
            assert abs(int(region.sum()) - int(truth["template_regions"][c].sum())) <= max(
                3, 0.5 * truth["template_regions"][c].sum())
    assert truth["timing"] == TINY_TIMING


def region_contrast(dataset, cls):
    """Mean z-scored region signal at volumes whose label is `cls` minus elsewhere."""
    truth = read_truth(dataset)
    ann = read_observers(tiny_annotations(dataset))
    labels = consensus_labels(ann)
    diffs = []
    for path, run, sub in find_runs(dataset / "ds000113")[["path", "run", "subject"]].values:
        region = truth["by_subject"][sub]["regions"][cls]  # native space: the subject's own
        data = np.asanyarray(nib.load(path).dataobj).astype(float)
        ts = data[region].mean(axis=0)
        ts = (ts - ts.mean()) / ts.std()
        vt = TINY_TIMING.volume_table(hrf_lag=4.0)
        vt = vt[vt["run"] == run]
        lab = labels.set_index("tr")["label"].reindex(vt["label_tr"]).to_numpy()
        on = (pd.array(lab, dtype="string") == cls).fillna(False).to_numpy(dtype=bool)
        if on.any() and (~on).any():
            diffs.append(ts[on].mean() - ts[~on].mean())
    return float(np.mean(diffs)) if diffs else np.nan


def tiny_annotations(dataset):
    return dataset / "annotations"


def test_planted_signal_is_there_and_null_has_none(tiny_dataset, tiny_null_dataset):
    truth = read_truth(tiny_dataset)
    planted = np.array([region_contrast(tiny_dataset, c) for c in truth["classes"]])
    null = np.array([region_contrast(tiny_null_dataset, c) for c in truth["classes"]])
    assert np.isfinite(planted).sum() >= 4  # nearly every class occurs in the tiny movie
    planted, null = planted[np.isfinite(planted)], null[np.isfinite(null)]
    assert np.mean(planted) > 0.5
    assert abs(np.mean(null)) < 0.3
    assert np.mean(planted) > np.mean(null) + 0.5


def test_deterministic_for_a_seed(tmp_path):
    kw = {"n_subjects": 1, "shape": (12, 12, 10), "timing": TINY_TIMING, "progress": False}
    a = generate_studyforrest(tmp_path / "a", seed=5, **kw)
    b = generate_studyforrest(tmp_path / "b", seed=5, **kw)
    c = generate_studyforrest(tmp_path / "c", seed=6, **kw)

    def digest(root):
        files = sorted((root / "ds000113").rglob("*.nii.gz"))
        return [hashlib.sha256(np.asanyarray(nib.load(f).dataobj).tobytes()).hexdigest()
                for f in files]

    assert digest(a) == digest(b)
    assert digest(a) != digest(c)


def test_reuse_and_parameter_mismatch(tmp_path):
    kw = {"n_subjects": 1, "shape": (12, 12, 10), "timing": TINY_TIMING, "progress": False}
    out = generate_studyforrest(tmp_path / "d", **kw)
    stamp = (out / "truth" / "generation.json").stat().st_mtime_ns
    generate_studyforrest(tmp_path / "d", **kw)  # same parameters: reused, not rewritten
    assert (out / "truth" / "generation.json").stat().st_mtime_ns == stamp
    with pytest.raises(FileExistsError, match="other parameters"):
        generate_studyforrest(tmp_path / "d", **{**kw, "n_subjects": 2})
    assert not (tmp_path / "d.partial").exists()
    generate_studyforrest(tmp_path / "d", **{**kw, "n_subjects": 2}, overwrite="changed")
    assert read_truth(out)["parameters"]["n_subjects"] == 2


def test_real_annotations_drive_the_labels(tmp_path, real_annotations_dir):
    out = generate_studyforrest(tmp_path / "r", n_subjects=1, shape=(16, 16, 8),
                                annotations_dir=real_annotations_dir, progress=False)
    truth = read_truth(out)
    assert truth["classes"] == ["ANGERRAGE", "FEAR", "HAPPINESS", "LOVE", "SADNESS"]
    assert not (out / "annotations").exists()
    assert nib.load(find_runs(out / "ds000113")["path"][7]).shape[3] == 338


def test_generated_annotations_pass_the_reader(tmp_path):
    paths = generate_annotations(tmp_path, duration=600, n_observers=4, seed=2)
    assert [p.name for p in paths] == [f"av1o0{i}.csv" for i in range(1, 5)]
    df = read_observers(tmp_path)
    assert df["observer"].nunique() == 4
    assert (df["end"] <= 600 + 10).all()
    assert set(df["emotion"]) - {""} <= {"ANGERRAGE", "FEAR", "HAPPINESS", "LOVE", "SADNESS"}


def test_too_small_grid_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="cannot place"):
        generate_studyforrest(tmp_path / "s", n_subjects=1, shape=(5, 5, 4), timing=TINY_TIMING,
                              region_radius=3, progress=False)
    assert not (tmp_path / "s").exists()
