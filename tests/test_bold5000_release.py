"""BOLD5000 Release 1.0 ROI files: reading, repeats, RDMs, bad files, the generator's truth."""

from __future__ import annotations

import json
import re

import h5py
import numpy as np
import pytest
import scipy.io
from PIL import Image
from rsatoolbox.data import Dataset
from rsatoolbox.rdm import RDMs, calc_rdm, compare
from scipy.ndimage import gaussian_filter
from scipy.spatial.distance import squareform

from emolib.errors import InputDataError
from emolib.io import bold5000 as b5files
from emolib.io import bold5000_release as release
from emolib.rsa import align_rdms, calc_rdms_from_patterns
from emolib.synthetic import generate_bold5000_release, read_bold5000_release_truth
from emolib.synthetic.bold5000_release import RELEASE_DIR

A, B, C = "COCO_train2014_000000000001.jpg", "n01440764_7.JPEG", "kitchen.jpeg"
#: Presentation order: A's bare showing is its second, B's its first.
TRIALS = [f"rep_{A}", B, A, C, f"rep_{B}"]
#: One ROI's per-trial patterns (5 trials x 4 voxels), the others are seeded noise.
PPA = np.array([[1, 2, 3, 4], [0, 1, 0, 1], [3, 4, 1, 2], [5, 1, 4, 2], [2, 3, 2, 5]], float)
PPA_AVERAGE = np.array([[2, 3, 2, 3], [1, 2, 1, 3], [5, 1, 4, 2]], float)  # by hand
PPA_FIRST = np.array([[1, 2, 3, 4], [0, 1, 0, 1], [5, 1, 4, 2]], float)


def _tiny_patterns():
    rng = np.random.default_rng(0)
    out = {roi: rng.standard_normal((5, 3 + k)) for k, roi in enumerate(b5files.ROIS)}
    out["LHPPA"] = PPA.copy()
    return out


def write_tiny_release(root, patterns=None, trials=TRIALS, subject="CSI1", fmts=("h5", "mat"),
                       transpose=False, tr="TR34"):
    """A release of 3 images in 5 trials, written by hand."""
    patterns = _tiny_patterns() if patterns is None else patterns
    stim = root / "ROIs" / "stim_lists" / f"CSI0{subject[-1]}_stim_lists.txt"
    stim.parent.mkdir(parents=True, exist_ok=True)
    stim.write_text("\n".join(trials) + "\n")
    for fmt in fmts:
        path = root / "ROIs" / subject / fmt / f"{subject}_ROIs_{tr}.{fmt}"
        path.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "h5":
            with h5py.File(path, "w") as f:
                for roi, x in patterns.items():
                    f.create_dataset(roi, data=x.T if transpose else x)
        else:
            scipy.io.savemat(path, patterns)
    return root


def test_average_repeats_by_hand():
    avg, images = release.average_repeats(PPA, TRIALS)
    assert images == [A, B, C]  # rep_ stripped, order of first showing
    np.testing.assert_array_equal(avg, PPA_AVERAGE)
    first, images = release.average_repeats({"LHPPA": PPA}, TRIALS, repeats="first")
    assert images == [A, B, C]
    np.testing.assert_array_equal(first["LHPPA"], PPA_FIRST)  # A: rep_A, shown first
    with pytest.raises(ValueError, match="repeats"):
        release.average_repeats(PPA, TRIALS, repeats="last")
    summary = release.describe_stim_list(TRIALS)
    assert summary["n_trials"] == 5 and summary["n_images"] == 3
    assert summary["n_repeated"] == 2 and summary["showings"] == {1: 1, 2: 2}
    assert summary["bare_not_first"] == 1 and summary["no_bare"] == 0
    assert summary["categories"] == {"COCO": 1, "ImageNet": 1, "Scene": 1}


@pytest.mark.parametrize("fmt", ["h5", "mat", "auto"])
@pytest.mark.parametrize("repeats", ["average", "first"])
def test_tiny_release_rdms_equal_rsatoolbox(tmp_path, fmt, repeats):
    root = write_tiny_release(tmp_path, fmts=("mat",) if fmt == "mat" else ("h5", "mat"))
    rdms = release.load_roi_rdms(root, subjects=("CSI1",), repeats=repeats, fmt=fmt,
                                 progress=False)["CSI1"]
    assert rdms.rdm_descriptors["roi"] == list(b5files.ROIS)
    assert set(rdms.rdm_descriptors["subject"]) == {"CSI1"}
    assert list(rdms.pattern_descriptors["id"]) == [A, B, C]
    assert rdms.dissimilarity_measure == "correlation"
    for k, x in enumerate(_tiny_patterns().values()):
        combined, _ = release.average_repeats(x, TRIALS, repeats)
        ref = calc_rdm(Dataset(combined), method="correlation")
        np.testing.assert_allclose(rdms.dissimilarities[k], ref.dissimilarities[0], atol=1e-12)
    hand = PPA_AVERAGE if repeats == "average" else PPA_FIRST
    ppa = rdms.dissimilarities[rdms.rdm_descriptors["roi"].index("LHPPA")]
    np.testing.assert_allclose(ppa, squareform(1 - np.corrcoef(hand), checks=False),
                               atol=1e-12)


def test_h5_and_mat_agree_and_transposed_h5_is_read(tmp_path):
    root = write_tiny_release(tmp_path / "a")
    by_h5 = release.load_roi_rdms(root, ("CSI1",), fmt="h5", progress=False)["CSI1"]
    by_mat = release.load_roi_rdms(root, ("CSI1",), fmt="mat", progress=False)["CSI1"]
    np.testing.assert_allclose(by_h5.dissimilarities, by_mat.dissimilarities, atol=1e-12)
    flipped = write_tiny_release(tmp_path / "b", fmts=("h5",), transpose=True)
    data = release.read_roi_patterns(flipped, "CSI1", fmt="h5")
    assert len(data.transposed) == 9  # all but the 5 x 5 ROI, which is kept as stored
    np.testing.assert_array_equal(data.patterns["LHPPA"], PPA)
    assert data.names == TRIALS and data.path.name == "CSI1_ROIs_TR34.h5"
    patterns = _tiny_patterns()
    patterns["LHOPA"] = patterns["LHOPA"][:, :4]  # 5 x 4: no square ROI left
    flipped = write_tiny_release(tmp_path / "c", patterns, fmts=("h5",), transpose=True)
    again = release.load_roi_rdms(flipped, ("CSI1",), progress=False)["CSI1"]
    plain = write_tiny_release(tmp_path / "d", patterns, fmts=("h5",))
    np.testing.assert_allclose(
        again.dissimilarities,
        release.load_roi_rdms(plain, ("CSI1",), progress=False)["CSI1"].dissimilarities)


@pytest.mark.parametrize(
    ("kind", "fmt", "message"),
    [
        ("missing_roi", "h5", "missing ROI.*RHRSC"),
        ("missing_roi", "mat", "missing ROI.*RHRSC"),
        ("wrong_rows", "h5", "neither dimension equals the 5 trials"),
        ("wrong_rows", "mat", "neither dimension equals the 5 trials"),
        ("nan", "h5", "NaN or infinite"),
        ("nan", "mat", "NaN or infinite"),
        ("no_stim_list", "h5", "stimulus list does not exist"),
        ("no_roi_file", "h5", "ROI file does not exist"),
        ("no_roi_file", "auto", "ROI file does not exist"),
        ("not_hdf5", "h5", "not an HDF5 file"),
        ("not_mat", "mat", "not a readable MATLAB file"),
        ("three_d", "h5", "must be 2D"),
        ("constant", "mat", "zero variance.*kitchen.jpeg"),
    ],
)
def test_bad_release_files_name_the_file(tmp_path, kind, fmt, message):
    patterns = _tiny_patterns()
    if kind == "missing_roi":
        del patterns["RHRSC"]
    elif kind == "wrong_rows":
        patterns["LHLOC"] = patterns["LHLOC"][:4]
    elif kind == "nan":
        patterns["RHOPA"][2, 1] = np.nan
    elif kind == "three_d":
        patterns["LHOPA"] = patterns["LHOPA"][:, :, None]
    elif kind == "constant":  # image C's only showing: no correlation distance
        patterns["RHPPA"][3] = 1.0
    write_fmt = ("h5",) if fmt == "auto" else (fmt,)
    root = write_tiny_release(tmp_path, patterns, fmts=write_fmt)
    bad = release.roi_file(root, "CSI1", "TR34", write_fmt[0])
    if kind == "no_stim_list":
        bad = release.stim_list_file(root, "CSI1")
        bad.unlink()
    elif kind == "no_roi_file":
        bad.unlink()
        bad = release.roi_file(root, "CSI1", "TR34", "h5")
    elif kind in ("not_hdf5", "not_mat"):
        bad.write_text("LHPPA,1,2,3\n")
    with pytest.raises(InputDataError, match=message) as err:
        release.load_roi_rdms(root, ("CSI1",), fmt=fmt, progress=False)
    assert str(bad) in str(err.value)


def test_stim_lists_names_and_paths(tmp_path):
    path = tmp_path / "CSI01_stim_lists.txt"
    path.write_bytes(b"rep_kitchen3.jpg\r\nn01440764_7.JPEG\r\n\r\n")
    assert release.read_stim_list(path) == ["rep_kitchen3.jpg", "n01440764_7.JPEG"]
    path.write_text("a.jpg\nb.jpg c.jpg\n")
    with pytest.raises(InputDataError, match="line 2"):
        release.read_stim_list(path)
    path.write_text("\n")
    with pytest.raises(InputDataError, match="no trials"):
        release.read_stim_list(path)
    # names as in the real lists (ice_rink10, nursery5 and ATM2 are Scene images)
    kinds = {"COCO_train2014_000000420713.jpg": "COCO", "rep_n01641577_1229.JPEG": "ImageNet",
             "n13052670_4260.JPEG": "ImageNet", "carmechanic4.jpeg": "Scene",
             "ice_rink10.jpg": "Scene", "nursery5.jpg": "Scene", "highway.jpg": "Scene",
             "ATM2.jpg": "Scene", "rep_tailor6.jpg": "Scene"}
    assert {n: release.image_category(n) for n in kinds} == kinds
    assert release.strip_rep("rep_tailor6.jpg") == "tailor6.jpg"
    assert release.strip_rep("tailor6.jpg") == "tailor6.jpg"
    root = tmp_path / "release"
    assert release.roi_file(root, "CSI3", "TR1", "mat") == (
        root / "ROIs" / "CSI3" / "mat" / "CSI3_ROIs_TR1.mat")
    assert release.stim_list_file(root, "CSI2") == root / "ROIs/stim_lists/CSI02_stim_lists.txt"
    assert release.stimulus_path(root, "rep_n01641577_1229.JPEG") == (
        root / "BOLD5000_Stimuli/Scene_Stimuli/Presented_Stimuli/ImageNet/n01641577_1229.JPEG")
    (root / "ROIs" / "stim_lists").mkdir(parents=True)
    assert release.rois_dir(root / "ROIs") == root / "ROIs"  # the ROIs folder itself works too
    with pytest.raises(ValueError, match="TR"):
        release.roi_file(root, "CSI1", "TR6")
    with pytest.raises(ValueError, match="subject"):
        release.stim_list_file(root, "sub-01")


# ----------------------------------------------------------------------- the generator

SIGMAS = (0.5, 1.0, 2.0, 4.0, 8.0)


def dog_rdms(paths):
    """Cheap stand-in for ResNet-50: pixel features at five blur levels (differences of
    Gaussians, fine to coarse), one RDM per level, ids the file names."""
    x = np.stack([np.asarray(Image.open(p).convert("L"), dtype=float) for p in paths])
    feats = {
        f"blur{k}": (gaussian_filter(x, (0, s, s)) - gaussian_filter(x, (0, 2 * s, 2 * s)))
        .reshape(len(x), -1)
        for k, s in enumerate(SIGMAS)
    }
    return calc_rdms_from_patterns(feats, [p.name for p in paths], descriptor="layer")


def coarse_first(paths):
    """Another network: the RDMs of :func:`dog_rdms` with the layers' order reversed."""
    rdms = dog_rdms(paths)
    return RDMs(rdms.dissimilarities[::-1].copy(), dissimilarity_measure="euclidean",
                rdm_descriptors={"layer": list(rdms.rdm_descriptors["layer"])},
                pattern_descriptors=dict(rdms.pattern_descriptors))


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    base = tmp_path_factory.mktemp("release")
    planted = generate_bold5000_release(base / "planted", layer_rdms=dog_rdms, n_images=60,
                                        seed=1, progress=False)
    null = generate_bold5000_release(base / "null", layer_rdms=dog_rdms, n_images=60, seed=1,
                                     null=True, progress=False)
    return planted, null


def test_generator_writes_the_real_layout(generated):
    root, _ = generated
    assert root.name == RELEASE_DIR
    truth = read_bold5000_release_truth(root)
    assert (root.parent / "truth.json").is_file() and not list(root.rglob("truth*"))
    for subject in ("CSI1", "CSI2", "CSI3"):
        for tr in release.RELEASE_TRS:
            for fmt in ("h5", "mat"):
                assert (root / f"ROIs/{subject}/{fmt}/{subject}_ROIs_{tr}.{fmt}").is_file()
        assert (root / f"ROIs/stim_lists/CSI0{subject[-1]}_stim_lists.txt").is_file()
    with h5py.File(root / "ROIs/CSI2/h5/CSI2_ROIs_TR34.h5") as f:
        assert sorted(f) == sorted(b5files.ROIS)
        tr34 = {roi: f[roi][()] for roi in f}
    mat = scipy.io.loadmat(root / "ROIs/CSI2/mat/CSI2_ROIs_TR3.mat")
    with h5py.File(root / "ROIs/CSI2/h5/CSI2_ROIs_TR4.h5") as f:
        for roi in b5files.ROIS:  # TR34 is the mean of TR3 and TR4
            np.testing.assert_allclose(tr34[roi], (mat[roi] + f[roi][()]) / 2, atol=1e-6)
    names = {s: release.read_stim_list(release.stim_list_file(root, s)) for s in truth["subjects"]}
    assert len({tuple(n) for n in names.values()}) == 3  # every subject has its own order
    assert tr34["LHLOC"].shape[0] == len(names["CSI2"])
    for s, trials in names.items():
        summary = release.describe_stim_list(trials)
        assert summary["n_trials"] == truth["per_subject"][s]["n_trials"] == len(trials)
        assert summary["n_repeated"] == 6 and summary["showings"][4] == 5
        assert summary["bare_not_first"] >= 1 and summary["no_bare"] == 0
        assert summary["n_images"] == 59  # one image of the 60 is not shown to this subject
    assert len({tuple(t["n_voxels"].values()) for t in truth["per_subject"].values()}) == 3
    assert len(set(truth["per_subject"]["CSI1"]["n_voxels"].values())) > 5
    images = sorted(p for p in (root / release.STIMULI_SUBPATH).rglob("*") if p.is_file())
    assert len(images) == 60
    assert {p.parent.name for p in images} == set(release.IMAGE_CATEGORIES)
    assert all(release.image_category(p.name) == p.parent.name for p in images)
    assert {p.suffix for p in images} == {".jpg", ".JPEG", ".jpeg"}
    assert any(not re.search(r"\d", p.stem) for p in images)  # e.g. "kitchen.jpg"
    assert Image.open(images[0]).size == (64, 64)
    assert truth["best_layer"]["LHEarlyVis"] == "blur0" and truth["best_layer"]["RHRSC"] == "blur4"
    assert truth["best_layer_noise_free"] == truth["best_layer"]  # nearly independent levels
    with pytest.raises(FileExistsError):
        generate_bold5000_release(root.parent, layer_rdms=dog_rdms, n_images=10, progress=False)


def test_generator_checks_the_layer_rdms(tmp_path):
    def wrong_ids(paths):
        rdms = dog_rdms(paths)
        rdms.pattern_descriptors["id"] = [f"x{k}.jpg" for k in range(len(paths))]
        return rdms

    with pytest.raises(ValueError, match="file names"):
        generate_bold5000_release(tmp_path / "a", layer_rdms=wrong_ids, n_images=12,
                                  progress=False)
    with pytest.raises(ValueError, match="returned 1 RDMs"):
        generate_bold5000_release(tmp_path / "b", layer_rdms=lambda p: dog_rdms(p)[0],
                                  n_images=12, progress=False)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def _recovery(root, truth_best):
    """Per subject, layer x ROI ``corr`` on the common images, and the planted matches."""
    rdms = release.load_roi_rdms(root, progress=False)
    images = sorted(p for p in (root / release.STIMULI_SUBPATH).rglob("*") if p.is_file())
    layers = dog_rdms(images)
    overlap = release.common_images(rdms, layers)
    assert overlap.counts == {"CSI1": 59, "CSI2": 59, "CSI3": 59, "layers": 60}
    assert overlap.n_common == 57 and list(overlap.table()["left out"]) == [2, 2, 2, 3]
    layers = release.select_images(layers, overlap.ids)
    matches, values = 0, []
    for data in rdms.values():
        layers, data = align_rdms(layers, release.select_images(data, overlap.ids[::-1]))
        corr = compare(layers, data, method="corr")  # (layers, rois)
        best = [layers.rdm_descriptors["layer"][k] for k in np.argmax(corr, axis=0)]
        matches += sum(b == truth_best[r] for b, r in zip(best, data.rdm_descriptors["roi"],
                                                            strict=True))
        values.append(corr.max(axis=0))
    return matches, float(np.mean(values))


def test_load_roi_rdms_recovers_the_planted_layers_and_not_in_the_null(generated):
    planted, null = generated
    truth = read_bold5000_release_truth(planted)
    matches, strength = _recovery(planted, truth["best_layer"])
    assert matches >= 21 and strength > 0.2  # of 30 subject x ROI pairs (24-30 over seeds 0-9)
    assert set(read_bold5000_release_truth(null)["best_layer"].values()) == {None}
    null_matches, null_strength = _recovery(null, truth["best_layer"])
    assert null_matches <= 15 and null_strength < 0.1  # chance: 6 of 30 (1-11 over seeds 0-9)


def test_select_images_is_a_subset_of_the_square_matrix():
    rng = np.random.default_rng(2)
    ids = [f"im{k}.jpg" for k in range(7)]
    rdms = RDMs(rng.random((2, 21)), rdm_descriptors={"roi": ["a", "b"]},
                pattern_descriptors={"id": ids})
    keep = ["im5.jpg", "im0.jpg", "im3.jpg", "im6.jpg"]
    sub = release.select_images(rdms, keep)
    pos = [ids.index(k) for k in keep]
    for k in range(2):
        square = squareform(rdms.dissimilarities[k])
        np.testing.assert_array_equal(sub.dissimilarities[k],
                                      squareform(square[np.ix_(pos, pos)], checks=False))
    assert list(sub.pattern_descriptors["id"]) == keep and sub.rdm_descriptors["roi"] == ["a", "b"]
    with pytest.raises(ValueError, match="not in the RDMs"):
        release.select_images(rdms, ["other.jpg"])
    assert release.common_images({"x": ids}, keep[::-1]).ids == sorted(keep, key=ids.index)
    assert json.dumps(release.common_images(rdms, keep).counts) == '{"input0": 7, "input1": 4}'


def test_obtain_release_generates_once_and_names_a_missing_image(tmp_path, generated):
    """The chapter's entry point: a generated release is reused while its parameters hold
    and regenerated when they change; the real path reads a release folder and refuses one
    whose stimulus images are not where the release puts them."""
    import shutil

    from emolib.datasets import obtain_bold5000_release

    kw = {"layer_rdms": dog_rdms, "data_dir": tmp_path / "data", "n_images": 30, "seed": 2,
          "progress": False}
    first = obtain_bold5000_release("synthetic", "t", **kw)
    assert first.generated and first.truth is not None
    assert sorted(first.rois) == ["CSI1", "CSI2", "CSI3"]
    assert all(p.is_file() for p in first.images) and len(first.images) == 30
    assert first.overlap.n_common == first.truth["common_images"]
    assert first.reuse == ("new", "nothing there")
    again = obtain_bold5000_release("synthetic", "t", **kw)
    assert not again.generated and again.reuse == ("reuse", "same parameters")
    for s in first.rois:
        np.testing.assert_array_equal(first.rois[s].dissimilarities,
                                      again.rois[s].dissimilarities)
    other = obtain_bold5000_release("synthetic", "t", **{**kw, "seed": 3})
    assert other.generated and other.reuse == ("stale", "seed: 2 -> 3")
    # another network (here: the blur levels in reverse order): the hierarchy planted on
    # the old one would be stale, so the release is planted again on this one
    net = obtain_bold5000_release("synthetic", "t", **{**kw, "seed": 3,
                                                        "layer_rdms": coarse_first})
    assert net.generated and net.reuse[0] == "stale" and "network" in net.reuse[1]
    assert obtain_bold5000_release("synthetic", "t", **{**kw, "seed": 3, "layer_rdms":
                                                          coarse_first}).reuse[0] == "reuse"
    # the real path: a copy of a generated release, one image removed
    real = tmp_path / "real"
    shutil.copytree(generated[0], real)
    got = obtain_bold5000_release("release", "t", release_dir=real, progress=False)
    assert got.truth is None and not got.generated
    victim = got.images[5]
    victim.unlink()
    with pytest.raises(InputDataError, match=re.escape(victim.name) + ".*stimulus image "
                                             "missing"):
        obtain_bold5000_release("release", "t", release_dir=real, progress=False)
    with pytest.raises(ValueError, match="layer_rdms"):
        obtain_bold5000_release("synthetic", "t", data_dir=tmp_path / "data")
