import hashlib
import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from emolib.errors import InputDataError
from emolib.forrest import (
    label_volumes,
    load_prepared,
    prepare_dataset,
    zscore_volumes,
    zscore_voxels,
)
from emolib.forrest.labels import consensus_labels, select_classes
from emolib.forrest.timing import RunTiming
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


@pytest.mark.parametrize("n_t", [3, 4, 37])
def test_zscore_voxels_matches_nilearn_clean(rng, n_t):
    from nilearn.signal import clean

    trend = np.linspace(0, 40, n_t)
    chunk = (rng.normal(1000, 30, size=(9, 5, 3, 1)) + trend
             + rng.normal(0, 3, size=(9, 5, 3, n_t))).astype(np.float32)
    chunk[0, 0, 0] = 7.0  # a constant voxel
    vols = np.array([n_t - 1, 0, n_t // 2])
    out = zscore_voxels(chunk, vols, slab=4)  # slabs that do not divide the 9 planes
    assert out.shape == (3, 9, 5, 3) and out.dtype == np.float32
    ref = clean(chunk.reshape(-1, n_t).T.astype(np.float64), detrend=True,
                standardize="zscore_sample", standardize_confounds=False)
    ref = ref.T.reshape(chunk.shape)
    np.testing.assert_allclose(out, np.moveaxis(ref[..., vols], -1, 0), atol=2e-5)
    assert (out[:, 0, 0, 0] == 0).all()
    mask = np.zeros((9, 5, 3), bool)
    mask[2:7, 1:4] = True
    masked = zscore_voxels(chunk, vols, mask)
    assert (masked[:, ~mask] == 0).all()
    np.testing.assert_allclose(masked[:, mask], out[:, mask])


def test_zscore_voxels_high_pass_matches_nilearn_cosine_filter(rng):
    from nilearn.signal import clean

    n_t = 120
    t = np.arange(n_t)
    slow = np.cos(np.pi * (t + 0.5) / n_t)[None, None, None]  # below 1/128 Hz at TR 2 s
    chunk = (rng.normal(800, 20, size=(6, 4, 3, 1)) * (1 + 0.02 * slow)
             + rng.normal(0, 2, size=(6, 4, 3, n_t))).astype(np.float32)
    vols = np.array([0, 17, 119])
    out = zscore_voxels(chunk, vols, high_pass=1 / 128, tr=2.0)
    ref = clean(chunk.reshape(-1, n_t).T.astype(np.float64), detrend=True,
                standardize="zscore_sample", high_pass=1 / 128, t_r=2.0, filter="cosine",
                standardize_confounds=False)
    ref = ref.T.reshape(chunk.shape)
    np.testing.assert_allclose(out, np.moveaxis(ref[..., vols], -1, 0), atol=2e-4)
    # the slow drift is gone: what is left is the white noise
    plain = zscore_voxels(chunk, vols)
    assert not np.allclose(plain, out, atol=1e-2)


def test_run_standardisation_in_prepared_volumes(tiny_dataset, tmp_path):
    """standardize="run": each cached volume is its voxels' run-wise z-scores, computed from
    every volume of the run (not only the cached ones), as nilearn.signal.clean does."""
    from nilearn.signal import clean

    prep = prepare(tiny_dataset, tmp_path / "prep", standardize="run")
    assert prep.manifest["parameters"]["standardize"] == "run"
    s = prep.samples
    for i in (0, len(s) - 1):
        row = s.iloc[i]
        path = (tiny_dataset / "ds000113" / f"sub-{row['subject']}" / "ses-movie" / "func" /
                f"sub-{row['subject']}_ses-movie_task-movie_run-{row['run']}_bold.nii.gz")
        data = nib.load(path).get_fdata()
        ref = clean(data.reshape(-1, data.shape[-1]).T, detrend=True,
                    standardize="zscore_sample", standardize_confounds=False)
        vol = ref[row["volume"]].reshape(data.shape[:3])
        np.testing.assert_allclose(prep.volumes[i], vol, atol=2e-4)
    with pytest.raises(ValueError, match="standardize"):
        prepare(tiny_dataset, tmp_path / "bad", standardize="voxel")
    with pytest.raises(ValueError, match="high_pass"):  # a filter needs the run-wise mode
        prepare(tiny_dataset, tmp_path / "bad", high_pass=1 / 128)
    filtered = prepare(tiny_dataset, tmp_path / "hp", standardize="run", high_pass=1 / 128)
    assert filtered.manifest["parameters"]["high_pass"] == 1 / 128
    assert not np.allclose(filtered.volumes, prep.volumes, atol=1e-3)


def test_smoothing_is_nilearns(tiny_dataset, tmp_path):
    """smoothing_fwhm: each cached volume is nilearn.image.smooth_img of its run, then
    standardised as asked."""
    from nilearn.image import smooth_img

    prep = prepare(tiny_dataset, tmp_path / "prep", smoothing_fwhm=6.0)
    assert prep.manifest["parameters"]["smoothing_fwhm"] == 6.0
    row = prep.samples.iloc[5]
    path = (tiny_dataset / "ds000113" / f"sub-{row['subject']}" / "ses-movie" / "func" /
            f"sub-{row['subject']}_ses-movie_task-movie_run-{row['run']}_bold.nii.gz")
    vol = smooth_img(path, 6.0).get_fdata()[..., row["volume"]]
    np.testing.assert_allclose(prep.volumes[5], (vol - vol.mean()) / vol.std(), atol=1e-4)
    raw = prepare(tiny_dataset, tmp_path / "raw")
    assert not np.allclose(prep.volumes[5], raw.volumes[5], atol=1e-2)
    for bad in (0.0, -2.0):
        with pytest.raises(ValueError, match="smoothing_fwhm"):
            prepare(tiny_dataset, tmp_path / "bad", smoothing_fwhm=bad)


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
    # a moment seen in two runs carries the same label step in both, unless its stimulus
    # time precedes its own run's start (the first volumes of a run): then no label
    starts = np.asarray(TINY_TIMING.starts)
    for _, row in twins.iterrows():
        other = twins[(twins["run"] == row["overlap_run"]) &
                      (twins["movie_time"] == row["movie_time"])]
        assert len(other) == 1
        mine_ok = row["stim_time"] >= starts[row["run"] - 1]
        other_ok = other["stim_time"].iloc[0] >= starts[other["run"].iloc[0] - 1]
        if not mine_ok:
            assert row["label_tr"] == -1 and pd.isna(row["label"])
        elif other_ok:
            assert other["label_tr"].iloc[0] == row["label_tr"]


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
    from nilearn.masking import compute_epi_mask

    prep = prepare(tiny_dataset, tmp_path / "m", mask="epi")
    assert 0 < prep.mask.sum() < prep.mask.size
    # native space: one mask per subject, from its own first run, on its own grid
    union = np.zeros_like(prep.mask)
    for sub in ("01", "02"):
        first = next((tiny_dataset / "ds000113" / f"sub-{sub}").rglob("*run-1_bold.nii.gz"))
        ref = compute_epi_mask(nib.load(first))
        m = prep.subject_mask(sub)
        np.testing.assert_array_equal(m, np.asanyarray(ref.dataobj).astype(bool))
        img = nib.load(tmp_path / "m" / f"mask_sub-{sub}.nii.gz")
        np.testing.assert_allclose(img.affine, nib.load(first).affine)
        np.testing.assert_allclose(prep.affines[sub], nib.load(first).affine)
        for i in np.flatnonzero(prep.samples["subject"].to_numpy() == sub)[:3]:
            v = np.asarray(prep.volumes[i])
            assert (v[~m] == 0).all()
            assert abs(v[m].mean()) < 1e-4 and abs(v[m].std() - 1) < 1e-4
        union |= m
    np.testing.assert_array_equal(prep.mask, union)
    assert not np.allclose(prep.affines["01"], prep.affines["02"], atol=0.5)


def test_mask_file_per_subject(tiny_dataset, tmp_path):
    """A mask path with {subject} gives each subject its own; one file for all subjects in
    native space is refused (it fits one subject's grid only)."""
    truth = tiny_dataset / "truth"
    prep = prepare(tiny_dataset, tmp_path / "a", mask=str(truth / "sub-{subject}" /
                                                           "brain_mask.nii.gz"))
    for sub in ("01", "02"):
        want = np.asanyarray(nib.load(truth / f"sub-{sub}" / "brain_mask.nii.gz").dataobj)
        np.testing.assert_array_equal(prep.subject_mask(sub), want.astype(bool))
    with pytest.raises(InputDataError, match=r"brain_mask.nii.gz: mask grid sits .* away from "
                                             r"the grid of sub-0[12]"):
        prepare(tiny_dataset, tmp_path / "b", mask=truth / "sub-01" / "brain_mask.nii.gz",
                subjects=["02"])
    assert not (tmp_path / "b").exists()


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


FIVE_RUNS = RunTiming(starts=(0.0, 40.0, 80.0, 120.0, 160.0), n_volumes=(24,) * 5, tr=2.0)


def test_native_space_runs_after_the_break_warn_and_aligned_layout_reads(tmp_path):
    """Raw data: subjects in their own spaces pass; runs 5-8 moved after the break warn,
    naming both files. The aligned derivative's layout prepares the same way."""
    from emolib.io.bids import GridWarning
    from emolib.synthetic import generate_studyforrest

    kw = {"n_subjects": 2, "shape": (12, 12, 10), "timing": FIVE_RUNS, "seed": 3,
          "progress": False}
    raw = generate_studyforrest(tmp_path / "raw", break_shift=3.0, **kw)
    with pytest.warns(GridWarning, match=r"sub-01: the grid of sub-01_ses-movie_task-movie_"
                                         r"run-5_bold.nii.gz is 3.00 mm away from that of "
                                         r"sub-01_ses-movie_task-movie_run-1_bold.nii.gz"):
        prep = prepare_dataset(raw / "ds000113", raw / "annotations", tmp_path / "p1",
                               timing=FIVE_RUNS, min_count=3, n_per_class=3, progress=False)
    assert len(prep.manifest["outputs"]["notes"]) == 3  # sub-07 skipped, two subjects moved
    assert prep.manifest["outputs"]["space"].startswith("native")
    assert prep.manifest["outputs"]["subject_shift_mm"]["02"] > 0.5
    aligned = generate_studyforrest(tmp_path / "al", layout="aligned", **kw)
    folder = aligned / "studyforrest-data-aligned"
    assert (folder / "sub-01/in_bold3Tp2/sub-01_task-avmovie_run-5_bold.nii.gz").is_file()
    prep = prepare_dataset(folder, aligned / "annotations", tmp_path / "p2", layout="aligned",
                           timing=FIVE_RUNS, min_count=3, n_per_class=3, progress=False)
    assert prep.manifest["outputs"]["notes"] == []
    assert prep.manifest["outputs"]["space"].startswith("aligned")
    assert {r["tr_from"] for r in prep.manifest["outputs"]["runs"]} == {"header"}
    assert len(set(prep.samples["subject"])) == 2


#: The last run of the tiny dataset: read once the first subject is recorded.
LAST_RUN = "sub-02_ses-movie_task-movie_run-3"

KILLED_PREP = """
import sys, time
import emolib.forrest.dataprep as dp
from tests.conftest import TINY_TIMING

real = dp.decode_bold


def slow(path, *args, **kwargs):
    # runs are read on threads, up to two ahead: name the run, not the count, at which to stop
    if str(path).endswith(sys.argv[3] + "_bold.nii.gz"):
        print("killed here", flush=True)
        time.sleep(600)
    return real(path, *args, **kwargs)


dp.decode_bold = slow
dp.prepare_dataset(sys.argv[1] + "/ds000113", sys.argv[1] + "/annotations", sys.argv[2],
                   timing=TINY_TIMING, min_count=10, n_per_class=10, standardize="run",
                   progress=False)
"""


def _same_outputs(a, b):
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for rel in files:
        if rel.name == "manifest.json":  # differs only in its time stamp and paths
            ma, mb = (json.loads((root / rel).read_text()) for root in (a, b))
            assert ma["outputs"] == mb["outputs"] and ma["inputs"] == mb["inputs"]
        elif rel.name == "input_files.json":  # with the mtimes the files had when read
            fa, fb = (json.loads((root / rel).read_text()) for root in (a, b))
            assert {k: v["sha256"] for k, v in fa.items()} == {
                k: v["sha256"] for k, v in fb.items()}
        else:
            assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


def test_killed_preparation_leaves_nothing_mistaken_for_complete(tiny_dataset, tmp_path):
    """SIGKILL in the middle of preparing: the output folder is absent (or, when an earlier
    output was there, that one intact), and the rerun ends with the files of an
    uninterrupted run."""
    from emolib.testing import kill_when

    reference = prepare(tiny_dataset, tmp_path / "reference", standardize="run").folder
    out = tmp_path / "prep"
    kill_when(KILLED_PREP, "killed here", [tiny_dataset, out, "sub-02_ses-movie_task-movie_run-1"])
    assert not out.exists()
    with pytest.raises(FileNotFoundError):
        load_prepared(out)
    # an earlier, complete output with other parameters survives a killed replacement
    old = prepare(tiny_dataset, out, n_per_class=8).manifest
    kill_when(KILLED_PREP, "killed here", [tiny_dataset, out, "sub-02_ses-movie_task-movie_run-1"])
    assert load_prepared(out).manifest == old
    prepare(tiny_dataset, out, standardize="run")
    _same_outputs(out, reference)


def test_killed_preparation_resumes_after_its_finished_subjects(tiny_dataset, tmp_path,
                                                                capsys):
    """Killed while reading the second subject (its third run is read only once the first
    subject's three are done and recorded: runs are read at most two ahead): the rerun
    redoes only the second subject and
    ends with the files of an uninterrupted run; a finished subject whose run file changed
    since is redone as well."""
    import os
    import shutil

    from emolib.testing import kill_when

    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)  # a file is touched below
    reference = prepare(data, tmp_path / "reference", standardize="run").folder
    out, partial = tmp_path / "prep", tmp_path / "prep.partial"
    kill_when(KILLED_PREP, "killed here", [data, out, LAST_RUN])
    assert not out.exists()
    assert list(json.loads((partial / "progress.json").read_text())["subjects"]) == ["01"]
    capsys.readouterr()
    resumed = prepare(data, out, standardize="run", progress=True)
    assert "resuming an interrupted preparation: 1 of 2 subjects already done" in (
        capsys.readouterr().out)
    assert resumed.reuse == ("resume", "1 of 2 subjects were done")
    _same_outputs(out, reference)
    assert not partial.exists()

    shutil.rmtree(out)
    kill_when(KILLED_PREP, "killed here", [data, out, LAST_RUN])
    run = sorted((data / "ds000113" / "sub-01").rglob("*_bold.nii.gz"))[0]
    st = run.stat()
    os.utime(run, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    prepare(data, out, standardize="run", progress=True)
    assert "resuming" not in capsys.readouterr().out  # sub-01 changed: nothing to resume
    _same_outputs(out, reference)
    # reuse=False recomputes everything, an interrupted run's subjects too
    shutil.rmtree(out)
    kill_when(KILLED_PREP, "killed here", [data, out, LAST_RUN])
    assert prepare(data, out, standardize="run", reuse=False).reuse == ("new", "nothing there")
    _same_outputs(out, reference)


def test_prepared_data_is_reused_only_when_made_from_the_same_inputs(tiny_dataset, tmp_path):
    """Same parameters and input contents: the folder is reused, unread and untouched; a
    changed parameter, BOLD run or annotation file recomputes it and says what changed."""
    import os
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)  # its files are changed below
    out = tmp_path / "prep"
    first = prepare(data, out, standardize="run")
    assert first.reuse == ("new", "nothing there")
    # a recomputed folder is a new one (``first`` keeps its memory map open, so the inode
    # number cannot be handed to another file meanwhile)
    inode = (out / "volumes.npy").stat().st_ino
    again = prepare(data, out, standardize="run")
    assert again.reuse == ("reuse", "same inputs")
    assert (out / "volumes.npy").stat().st_ino == inode
    assert again.fingerprint == first.fingerprint

    other = prepare(data, out, standardize="run", seed=1)
    assert other.reuse[0] == "stale" and "parameters.seed: 0 -> 1" in other.reuse[1]
    _same_outputs(out, prepare(data, tmp_path / "fresh", standardize="run", seed=1).folder)

    # touched but unchanged: hashed again to tell, and reused
    run = sorted((data / "ds000113").rglob("*_bold.nii.gz"))[0]
    st = run.stat()
    os.utime(run, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert prepare(data, out, standardize="run", seed=1).reuse[0] == "reuse"
    # ... and its new size and mtime remembered, so the next check only stats it
    assert json.loads((out / "input_files.json").read_text())[str(run)]["mtime_ns"] == (
        run.stat().st_mtime_ns)

    # the content of one run changed (same grid, same size on disk or not)
    img = nib.load(run)
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj) * 1.01, img.affine, img.header), run)
    redone = prepare(data, out, standardize="run", seed=1)
    assert redone.reuse[0] == "stale" and run.name in redone.reuse[1]
    assert not np.array_equal(redone.volumes, other.volumes)

    # an annotation file changed
    ann = sorted((data / "annotations").glob("*.csv"))[0]
    lines = ann.read_text().splitlines(keepends=True)
    ann.write_text("".join(lines[:-1]))  # its last annotation gone
    status, reason = prepare(data, out, standardize="run", seed=1).reuse
    assert status == "stale" and ann.name in reason

    # reuse=False recomputes whatever the folder holds
    assert prepare(data, out, standardize="run", seed=1, reuse=False).reuse == (
        "stale", "reuse=False")
    assert (out / "volumes.npy").stat().st_ino != inode


def test_atomic_output_dir_never_leaves_a_half_folder(tmp_path):
    """The old folder is moved aside before the new one is renamed in: a kill between the
    two renames leaves it beside, and the next call puts it back; an error keeps the old
    folder, an interrupt with ``keep_partial`` the partial one for the next run."""
    from emolib.paths import atomic_output_dir

    out, old, partial = tmp_path / "out", tmp_path / "out.old", tmp_path / "out.partial"
    old.mkdir()
    (old / "a").write_text("old")  # what a kill between the renames leaves
    with atomic_output_dir(out) as tmp:
        assert (out / "a").read_text() == "old"  # back in place while the new one is written
        (tmp / "b").write_text("new")
    assert [p.name for p in out.iterdir()] == ["b"] and not old.exists()
    with pytest.raises(ValueError), atomic_output_dir(out) as tmp:
        (tmp / "c").write_text("half")
        raise ValueError("bad input")
    assert [p.name for p in out.iterdir()] == ["b"] and not partial.exists()
    with pytest.raises(KeyboardInterrupt), atomic_output_dir(out, keep_partial=True) as tmp:
        (tmp / "c").write_text("half")
        raise KeyboardInterrupt
    assert (partial / "c").read_text() == "half"
    with atomic_output_dir(out, keep_partial=True) as tmp:
        assert (tmp / "c").read_text() == "half"  # handed over to resume from
    assert [p.name for p in out.iterdir()] == ["c"]
