import hashlib
import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from emolib.decoding.calibration import NULL_TIMING
from emolib.forrest.labels import consensus_labels
from emolib.forrest.timing import RunTiming
from emolib.io.annotations import read_observers
from emolib.io.bids import STUDYFORREST_SUBJECTS, find_runs, read_run_info
from emolib.synthetic import generate_annotations, generate_studyforrest, read_truth
from emolib.synthetic.forrest import DEFAULT_CLASSES, VOXEL_SIZE, brain_mask, class_regressors
from emolib.synthetic.native import template_index
from emolib.synthetic.scenes import movie_scenes, scene_envelope, scene_model, scene_timecourses
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


def test_obtain_dataset_says_whether_it_reused_and_sees_annotation_contents(tmp_path):
    """A generated dataset is reused while its parameters and the contents of the
    annotation files it was labelled from are unchanged; otherwise generated again, saying
    what changed."""
    from emolib.datasets import obtain_dataset

    ann = tmp_path / "annotations"
    generate_annotations(ann, TINY_TIMING.starts[-1] + 2.0 * TINY_TIMING.n_volumes[-1],
                         seed=3)
    kw = {"data_dir": tmp_path / "data", "annotations_dir": ann, "timing": TINY_TIMING,
          "n_subjects": 1, "shape": (12, 12, 10), "classes": ("FEAR", "HAPPINESS", "SADNESS"),
          "progress": False}
    assert obtain_dataset("synthetic", "t", **kw).reuse == ("new", "nothing there")
    assert obtain_dataset("synthetic", "t", **kw).reuse == ("reuse", "same parameters")
    status, reason = obtain_dataset("synthetic", "t", **{**kw, "seed": 4}).reuse
    assert status == "stale" and reason == "seed: 0 -> 4"
    victim = sorted(ann.glob("*.csv"))[1]
    lines = victim.read_text().splitlines(keepends=True)
    victim.write_text("".join(lines[:-1]))  # one annotation fewer, same file name
    status, reason = obtain_dataset("synthetic", "t", **{**kw, "seed": 4}).reuse
    assert status == "stale" and reason.startswith(f"annotation_files.{victim.name}: ")
    assert obtain_dataset("bids", "t", bids_dir=tmp_path / "data" / "synthetic" / "t" /
                          "studyforrest" / "ds000113", annotations_dir=ann).reuse is None


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


# --- the stimulus-locked scene signal ---------------------------------------------------------

#: Two runs overlapping by 80 s: the later run's response has forgotten the break after 32 s.
SCENE_TIMING = RunTiming(starts=(0.0, 40.0), n_volumes=(60, 60), tr=2.0)


def _bold(dataset):
    """subject -> run -> (data as float, affine) of a generated dataset."""
    out = {}
    for path, run, sub in find_runs(dataset / "ds000113")[["path", "run", "subject"]].values:
        img = nib.load(path)
        out.setdefault(sub, {})[run] = (np.asanyarray(img.dataobj).astype(float), img.affine)
    return out


def _scene_fraction(with_scene, without, sub, run, voxels):
    """The scene signal recovered from two datasets that differ only in ``scene_size``, as a
    fraction of each voxel's mean: ``(n_volumes, n_voxels)``."""
    a, b = with_scene[sub][run][0], without[sub][run][0]
    a, b = a.reshape(-1, a.shape[-1])[voxels], b.reshape(-1, b.shape[-1])[voxels]
    return ((a - b) / b.mean(axis=1, keepdims=True)).T


def _scene_pair(tmp_path, size, **kw):
    kw = {"n_subjects": 2, "shape": (12, 12, 10), "timing": SCENE_TIMING, "seed": 4,
          "progress": False, **kw}
    a = generate_studyforrest(tmp_path / "scene", scene_size=size, **kw)
    b = generate_studyforrest(tmp_path / "no_scene", scene_size=0.0, **kw)
    return a, b, kw


def test_scene_signal_is_shared_by_subjects_and_run_overlaps(tmp_path):
    """One grid for all subjects (native_space=False), nothing planted: the two datasets differ
    by exactly the scene model's signal (int16 rounding aside), the same in both subjects at
    every movie moment, and in the overlap of two runs once the later one has risen from
    rest."""
    size = 0.05  # large, so that int16 rounding (1/900 of a voxel) is small beside it
    a, b, kw = _scene_pair(tmp_path, size, native_space=False, null=True)
    with_scene, without = _bold(a), _bold(b)
    brain = np.flatnonzero(read_truth(a)["template_brain_mask"].ravel())
    model = scene_model(kw["shape"], SCENE_TIMING, kw["seed"])
    tol = 0.004  # 1 count of ~600-1200 plus the error of the voxel mean as the baseline
    frac = {}
    for sub in ("01", "02"):
        for run in (1, 2):
            frac[sub, run] = _scene_fraction(with_scene, without, sub, run, brain)
            expected = size * model["timecourses"][run - 1] @ model["maps"][:, brain]
            assert np.abs(frac[sub, run] - expected).max() < tol
    assert frac["01", 1].std() > 5 * tol  # the signal is far above the rounding
    for run in (1, 2):  # the same movie moment, the same scene signal, in every subject
        assert np.abs(frac["01", run] - frac["02", run]).max() < 2 * tol
    # the overlap: run 2's volumes from 72 s of movie time on (32 s after its start) equal
    # run 1's; its first volumes, after the break, do not
    t1 = SCENE_TIMING.starts[0] + 2.0 * np.arange(60)
    t2 = SCENE_TIMING.starts[1] + 2.0 * np.arange(60)
    late = np.flatnonzero(t2 >= 72.0)
    late = late[t2[late] <= t1[-1]]
    in_run1 = np.searchsorted(t1, t2[late])
    tc1, tc2 = model["timecourses"]
    assert np.array_equal(tc1[in_run1], tc2[late])
    assert not np.allclose(tc1[np.searchsorted(t1, t2[:3])], tc2[:3], atol=0.1)
    for sub in ("01", "02"):
        assert np.abs(frac[sub, 1][in_run1] - frac[sub, 2][late]).max() < 2 * tol


def test_scene_signal_is_sampled_in_each_subjects_grid(tmp_path):
    """Native space, emotion planted: each subject's scene signal is the template's sampled
    through template_index, exactly as the planted regions are."""
    size = 0.05
    # heads moved by several mm, so that most voxels are other pieces of brain than the
    # template's voxels of the same index
    a, b, kw = _scene_pair(tmp_path, size, native_space=True, null=False, max_shift=6.0)
    with_scene, without = _bold(a), _bold(b)
    truth = read_truth(a)
    mask = truth["template_brain_mask"].ravel()
    model = scene_model(kw["shape"], SCENE_TIMING, kw["seed"])
    template_signal = size * model["timecourses"][0] @ model["maps"]
    for sub in ("01", "02"):
        _, run_aff = with_scene[sub][1]
        idx = template_index(run_aff, np.asarray(truth["affine"]), kw["shape"])
        inside = np.flatnonzero((idx >= 0) & mask[np.maximum(idx, 0)])
        frac = _scene_fraction(with_scene, without, sub, 1, inside)
        assert np.abs(frac - template_signal[:, idx[inside]]).max() < 0.004
        # the subject's grid is not the template's: read voxel for voxel, it would not fit
        moved = idx[inside] != inside
        assert moved.mean() > 0.2
        assert np.abs(frac[:, moved] - template_signal[:, inside[moved]]).max() > 0.02


def _isc(dataset, voxels):
    """Mean inter-subject correlation (subjects 01 and 02, run 1) of detrended voxels."""
    bold = _bold(dataset)
    series = []
    for sub in ("01", "02"):
        data = bold[sub][1][0]
        ts = data.reshape(-1, data.shape[-1])[voxels].T
        t = np.linspace(-1, 1, len(ts))
        design = np.vstack([np.ones_like(t), t, t ** 2]).T
        ts = ts - design @ np.linalg.lstsq(design, ts, rcond=None)[0]
        series.append((ts - ts.mean(0)) / ts.std(0))
    return float(np.mean((series[0] * series[1]).mean(0)))


def test_default_scene_size_gives_a_realistic_isc_and_zero_none(tmp_path):
    """With the default scene_size the voxels the envelope drives fully correlate across
    subjects as sensory cortex does in movie fMRI (~0.3-0.5; measured 0.49 at 150 volumes);
    with scene_size=0 nothing is shared. The recorded parameters hold scene_size."""
    kw = {"n_subjects": 2, "shape": (12, 12, 10), "timing": SCENE_TIMING, "seed": 4,
          "native_space": False, "null": True, "progress": False}
    default = generate_studyforrest(tmp_path / "default", **kw)
    zero = generate_studyforrest(tmp_path / "zero", scene_size=0.0, **kw)
    truth = read_truth(default)
    sensory = np.flatnonzero(truth["template_scene_envelope"].ravel() > 0.9)
    assert sensory.size >= 30
    assert 0.25 < _isc(default, sensory) < 0.75
    assert abs(_isc(zero, sensory)) < 0.1
    # recorded: a dataset of another scene_size is another dataset
    assert truth["parameters"]["scene_size"] == 0.01
    assert read_truth(zero)["parameters"]["scene_size"] == 0.0
    assert "scene" in truth["note"]
    scenes = truth["scenes"]
    assert scenes["onset"].iloc[0] == 0 and len(scenes) == truth["n_scenes"]
    assert (scenes["onset"] + scenes["duration"]).iloc[-1] >= 160.0
    with pytest.raises(FileExistsError, match="other parameters"):
        generate_studyforrest(tmp_path / "zero", **kw)
    generate_studyforrest(tmp_path / "zero", **kw, overwrite="changed")
    assert read_truth(zero)["parameters"]["scene_size"] == 0.01


def test_scene_model_is_a_deterministic_function_of_movie_time():
    shape = (12, 12, 10)
    a = scene_model(shape, SCENE_TIMING, 7)
    b = scene_model(shape, SCENE_TIMING, 7)
    c = scene_model(shape, SCENE_TIMING, 8)
    assert a["scenes"].equals(b["scenes"]) and np.array_equal(a["maps"], b["maps"])
    assert all(np.array_equal(x, y) for x, y in zip(a["timecourses"], b["timecourses"],
                                                    strict=True))
    assert not np.allclose(a["timecourses"][0], c["timecourses"][0])
    assert not np.allclose(a["maps"], c["maps"])
    # a longer movie has the same scenes at the same moments
    short, f_short = movie_scenes(300.0, seed=7)
    long, f_long = movie_scenes(900.0, seed=7)
    assert long.iloc[: len(short)].equals(short)
    assert np.array_equal(f_long[: len(short)], f_short)
    # lognormal lengths of mean ~12 s over a 2-hour movie
    scenes, _ = movie_scenes(7200.0, seed=0)
    assert 10.5 < scenes["duration"].mean() < 13.5
    assert (scenes["duration"] >= 1.0).all()
    # the scene maps reach the whole brain, not only the emotion regions
    env = scene_envelope(shape)
    brain = brain_mask(shape)
    assert (env[brain] >= 0.25 - 1e-9).all() and (env[~brain] == 0).all()
    assert 0.2 < (env[brain] > 0.5).mean() < 0.6


def test_scene_signal_is_independent_of_the_labels(tmp_path):
    """The scene features' time courses correlate with the class regressors of a seed's labels
    no more than with those of another seed's labels (r^2 over 30 seeds, paired)."""
    timing = NULL_TIMING
    duration = timing.starts[-1] + timing.tr * timing.n_volumes[-1]
    frames = [s + timing.tr * np.arange(n) for s, n in zip(timing.starts, timing.n_volumes,
                                                            strict=True)]

    def class_regs(seed):
        folder = tmp_path / f"ann{seed}"
        generate_annotations(folder, duration, seed=seed)
        labels = consensus_labels(read_observers(folder), tr=2.0)
        return [class_regressors(labels, DEFAULT_CLASSES, f, 2.0) for f in frames]

    def scene_tcs(seed):
        scenes, features = movie_scenes(duration, seed)
        return [scene_timecourses(scenes, features, f, timing.tr) for f in frames]

    def r2(regs, tcs):
        values = []
        for reg, tc in zip(regs, tcs, strict=True):
            reg = reg[reg.std(axis=1) > 0]
            r = np.corrcoef(np.vstack([reg, tc.T]))[: len(reg), len(reg):]
            values.append(np.mean(r ** 2))
        return float(np.mean(values))

    seeds = range(30)
    regs = {s: class_regs(s) for s in seeds}
    tcs = {s: scene_tcs(s) for s in seeds}
    matched = np.array([r2(regs[s], tcs[s]) for s in seeds])
    other = np.array([r2(regs[s], tcs[(s + 1) % 30]) for s in seeds])
    diff = matched - other
    assert abs(diff.mean()) < 4 * diff.std(ddof=1) / np.sqrt(len(diff))


def _linear_aucs(root, seed, scene_size):
    """Fold-averaged macro AUC of the linear baseline for the random and the run split, on a
    small null-for-emotion dataset (3 subjects, :data:`NULL_TIMING`, 12 steps per class), as
    :func:`emolib.decoding.calibration._null_run` fits it."""
    from emolib.decoding.baselines import inner_validation, linear_baseline
    from emolib.decoding.evaluate import macro_auc
    from emolib.forrest import make_splits, prepare_dataset

    ds = generate_studyforrest(root / "ds", n_subjects=3, shape=(12, 12, 10),
                               timing=NULL_TIMING, null=True, scene_size=scene_size, seed=seed,
                               progress=False, overwrite=True)
    prep = prepare_dataset(ds / "ds000113", ds / "annotations", root / "prep",
                           timing=NULL_TIMING, min_count=12, n_per_class=12, seed=seed,
                           progress=False)
    n_classes = len(prep.classes)
    sel = np.flatnonzero(prep.samples["selected"].to_numpy())
    samples = prep.samples.iloc[sel].reset_index(drop=True)
    y = samples["y"].to_numpy()
    x = np.asarray(prep.volumes[sel])[:, prep.mask]
    out = {}
    for kind in ("random", "run"):
        probs = np.zeros((len(y), n_classes))
        fold = np.full(len(y), "", dtype=object)
        for split in make_splits(samples, kind, seed=seed):
            tr, val = inner_validation(samples, split, kind, seed)
            probs[split.test] = linear_baseline(x[tr], y[tr], x[val], y[val], x[split.test],
                                                n_classes, seed=seed)
            fold[split.test] = split.name
        tested = fold != ""
        out[kind] = macro_auc(y[tested], probs[tested], n_classes, fold[tested].astype(str))
    return out


def test_random_split_recognises_scenes_on_null_data(tmp_path):
    """Nothing about emotion in the data, only the scene signal every subject shares: the
    random split of volumes puts the same movie moment (other subjects, neighbouring volumes)
    on both sides and the linear baseline reads the label off the scene; the run split cannot.

    Measured over 12 seeds (100-111) at scene_size=0.02: random 0.695 +- 0.081, run
    0.504 +- 0.039, random - run 0.191 +- 0.100 (0.197 +- 0.082 above the same seeds with
    scene_size=0, where random is 0.499 +- 0.096). Over these 4 seeds the mean gap has an sd
    of ~0.05, so 0.06 is ~2.6 sd below its expectation; the run split's mean (sd ~0.02) stays
    below 0.56.
    """
    aucs = [_linear_aucs(tmp_path / str(seed), seed, 0.02) for seed in range(100, 104)]
    random = np.array([a["random"] for a in aucs])
    run = np.array([a["run"] for a in aucs])
    assert (random - run).mean() > 0.06, (random, run)
    assert run.mean() < 0.56, run
