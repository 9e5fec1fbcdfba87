"""BOLD5000 RDM files: the generator, both readers and writers, bad files, ResNet-50 RDMs."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
from PIL import Image
from rsatoolbox.rdm import RDMs, compare, load_rdm

from emolib import bold5000, rsa
from emolib.datasets import obtain_bold5000
from emolib.errors import InputDataError
from emolib.io import bold5000 as b5files
from emolib.synthetic.bold5000 import (
    PLANTED_WEIGHTS,
    generate_bold5000,
    make_image_ids,
    read_bold5000_truth,
    simulate_bold5000_rdms,
)


def _small_rdms(n=6, names=("LHLOC", "RHPPA"), subject="CSI2"):
    rng = np.random.default_rng(0)
    ids = [f"COCO_train2014_{k:012d}.jpg" for k in range(n)]
    return RDMs(rng.random((len(names), n * (n - 1) // 2)), dissimilarity_measure="correlation",
                rdm_descriptors={"roi": list(names), "subject": [subject] * len(names)},
                pattern_descriptors={"id": ids})


@pytest.mark.parametrize("layout", ["plain", "rsatoolbox"])
def test_generated_files_read_back(tmp_path, layout):
    paths = generate_bold5000(tmp_path, n_images=14, seed=3, layout=layout)
    sim = simulate_bold5000_rdms(14, seed=3)
    data = b5files.load_bold5000(tmp_path)
    assert data.subjects == ["CSI1", "CSI2", "CSI3"]
    assert data.layers.rdm_descriptors["layer"] == list(bold5000.LAYERS)
    np.testing.assert_array_equal(data.layers.dissimilarities, sim.layers.dissimilarities)
    orders = [list(data.layers.pattern_descriptors["id"])]
    for subject, rdms in data.rois.items():
        assert rdms.rdm_descriptors["roi"] == list(bold5000.ROIS)
        assert set(rdms.rdm_descriptors["subject"]) == {subject}
        np.testing.assert_array_equal(rdms.dissimilarities, sim.rois[subject].dissimilarities)
        orders.append(list(rdms.pattern_descriptors["id"]))
    assert all(sorted(o) == sorted(orders[0]) for o in orders)
    assert len({tuple(o) for o in orders}) == 4  # every file has its own image order
    if layout == "rsatoolbox":  # rsatoolbox reads our files itself
        ref = load_rdm(str(paths["CSI1"]), file_type="hdf5")
        np.testing.assert_array_equal(ref.dissimilarities, data.rois["CSI1"].dissimilarities)
    else:
        with h5py.File(paths["CSI1"]) as f:
            assert f.attrs["subject"] == "CSI1"
            assert f["LHEarlyVis"].shape == (14 * 13 // 2,)
            assert len(f[b5files.IDS_DATASET]) == 14


def test_truth_json_sits_beside_the_files(tmp_path):
    paths = generate_bold5000(tmp_path, n_images=10, seed=0)
    truth = json.loads(paths["truth"].read_text())
    assert read_bold5000_truth(tmp_path) == truth
    assert paths["truth"].parent == tmp_path
    assert truth["best_layer"]["LHEarlyVis"] == "conv1"
    assert truth["best_layer"]["RHLOC"] == "layer2"
    assert truth["best_layer"]["LHOPA"] == "layer3"
    assert truth["best_layer"]["RHPPA"] == truth["best_layer"]["LHRSC"] == "layer4"
    assert truth["weights"]["LHPPA"]["layer4"] == PLANTED_WEIGHTS["PPA"][4]
    for p in tmp_path.glob("*.h5"):
        with h5py.File(p) as f:
            assert "truth" not in f and "weights" not in f.attrs
    null = generate_bold5000(tmp_path / "null", n_images=10, null=True)
    truth = json.loads(null["truth"].read_text())
    assert truth["null"] and set(truth["best_layer"].values()) == {None}


def test_image_ids_look_like_bold5000():
    ids = make_image_ids(50, seed=1)
    assert len(set(ids)) == 50
    assert any(i.startswith("COCO_train2014_") and i.endswith(".jpg") for i in ids)
    assert any(i.startswith("n0") and i.endswith(".JPEG") for i in ids)
    assert any(i[0].islower() and not i.startswith("n0") for i in ids)


@pytest.mark.parametrize("condensed", [True, False])
def test_plain_round_trip_and_alignment(tmp_path, condensed):
    rdms = _small_rdms()
    path = b5files.save_rdms(rdms, tmp_path / "s.h5", layout="plain", condensed=condensed)
    back = b5files.load_rdms(path)
    np.testing.assert_array_equal(back.dissimilarities, rdms.dissimilarities)
    assert back.rdm_descriptors["subject"] == ["CSI2", "CSI2"]
    assert back.dissimilarity_measure == "correlation"
    shuffled = rsa.reorder_patterns(rdms, list(reversed(rdms.pattern_descriptors["id"])))
    np.testing.assert_allclose(rsa.compare_rdms(back, shuffled), compare(rdms, rdms, "corr"))
    with pytest.raises(FileExistsError):
        b5files.save_rdms(rdms, path, layout="plain")


def _write_plain(path, ids, **datasets):
    with h5py.File(path, "w") as f:
        if ids is not None:
            f.create_dataset("image_ids", data=np.array(ids, dtype=h5py.string_dtype()))
        for name, value in datasets.items():
            f.create_dataset(name, data=value)
    return path


IDS4 = ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("text", "not an HDF5 file"),
        ("no_ids", "missing the dataset of image ids"),
        ("bad_length", "not n\\(n-1\\)/2"),
        ("non_square", "not square"),
        ("wrong_n", "4 image ids"),
        ("nan", "NaN"),
        ("duplicated", "duplicated image ids"),
        ("asymmetric", "not symmetric"),
    ],
)
def test_bad_plain_files_raise_input_data_error(tmp_path, kind, message):
    path = tmp_path / f"{kind}.h5"
    good = np.arange(6, dtype=float) + 1
    if kind == "text":
        path.write_text("roi,value\nLOC,1\n")
    elif kind == "no_ids":
        _write_plain(path, None, LOC=good)
    elif kind == "bad_length":
        _write_plain(path, IDS4, LOC=np.ones(5))
    elif kind == "non_square":
        _write_plain(path, IDS4, LOC=np.ones((4, 3)))
    elif kind == "wrong_n":
        _write_plain(path, IDS4, LOC=np.ones((3, 3)))
    elif kind == "nan":
        bad = good.copy()
        bad[2] = np.nan
        _write_plain(path, IDS4, LOC=bad)
    elif kind == "duplicated":
        _write_plain(path, ["a.jpg", "b.jpg", "a.jpg", "d.jpg"], LOC=good)
    elif kind == "asymmetric":
        m = np.ones((4, 4)) - np.eye(4)
        m[0, 1] = 3
        _write_plain(path, IDS4, LOC=m)
    with pytest.raises(InputDataError, match=message) as err:
        b5files.load_rdms(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize(
    ("kind", "message"),
    [("no_ids", "missing the image ids"), ("duplicated", "duplicated image ids"),
     ("nan", "NaN"), ("bad_length", "not n\\(n-1\\)/2")],
)
def test_bad_rsatoolbox_files_raise_input_data_error(tmp_path, kind, message):
    rdms = _small_rdms(n=5)
    path = tmp_path / f"{kind}.h5"
    if kind == "no_ids":
        rdms = RDMs(rdms.dissimilarities, rdm_descriptors={"roi": ["a", "b"]})
        rdms.save(str(path), file_type="hdf5")
    elif kind == "duplicated":
        rdms.pattern_descriptors["id"][3] = rdms.pattern_descriptors["id"][0]
        rdms.save(str(path), file_type="hdf5")
    elif kind == "nan":
        rdms.dissimilarities[1, 4] = np.nan
        rdms.save(str(path), file_type="hdf5")
    elif kind == "bad_length":
        rdms.save(str(path), file_type="hdf5")
        with h5py.File(path, "a") as f:
            del f["pattern_descriptors/id"]
            f["pattern_descriptors/id"] = np.array(IDS4, dtype="S")
    with pytest.raises(InputDataError, match=message) as err:
        b5files.load_rdms(path, layout="rsatoolbox")
    assert str(path) in str(err.value)


def test_roi_areas_and_systems():
    assert len(bold5000.ROIS) == 10 and bold5000.ROIS[0] == "LHEarlyVis"
    assert bold5000.roi_area("RHPPA") == "PPA"
    assert [bold5000.roi_system(r) for r in ("LHEarlyVis", "RHOPA", "LHRSC", "Mid")] == [
        "Early", "Mid", "High", "Mid"]
    assert bold5000.roi_system("V4") is None


def test_resnet50_rdms_from_a_folder_of_images(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    folder = tmp_path / "images"
    folder.mkdir()
    names = ["n01440764_10026.JPEG", "COCO_train2014_000000000009.jpg", "kitchen3.png",
             "airport1.jpg"]
    for name in names:
        pixels = rng.integers(0, 255, size=(40, 48, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / name)
    (folder / "notes.txt").write_text("not an image")
    model = bold5000.load_resnet50(None, seed=0)
    rdms = bold5000.calc_resnet50_rdms(folder, weights=model, image_size=32, reduce="mean",
                                       batch_size=3)
    assert rdms.rdm_descriptors["layer"] == list(bold5000.LAYERS)
    assert list(rdms.pattern_descriptors["id"]) == sorted(names)
    # the same images through forward hooks on the same model
    transform = bold5000.make_image_transform(32)
    x = torch.stack([transform(Image.open(folder / n).convert("RGB")) for n in sorted(names)])
    hooks = rsa.calc_rdms_from_model(model, x, sorted(names), bold5000.LAYERS, reduce="mean")
    np.testing.assert_allclose(rdms.dissimilarities, hooks.dissimilarities, atol=1e-6)
    # weights: a local file is loaded, a torchvision name is never downloaded
    weights = tmp_path / "w.pth"
    torch.save(model.state_dict(), weights)
    again = bold5000.load_resnet50(weights)
    assert torch.equal(again.conv1.weight, model.conv1.weight)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(FileNotFoundError, match="never downloads"):
        bold5000.load_resnet50("IMAGENET1K_V2")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputDataError, match="no images"):
        bold5000.calc_resnet50_rdms(empty)


# ------------------------------------------------------------------ the chapter's inputs


def test_obtain_bold5000_generates_once_then_reuses(tmp_path):
    src = obtain_bold5000("synthetic", "smoke", data_dir=tmp_path, n_images=12, seed=1)
    assert src.generated and src.folder == tmp_path / "synthetic" / "smoke" / "bold5000"
    assert src.truth["n_images"] == 12 and src.data.subjects == list(bold5000.SUBJECTS)
    assert {p.name for p in src.input_files} == {
        "resnet50_layers.h5", "CSI1_rois.h5", "CSI2_rois.h5", "CSI3_rois.h5", "truth.json"}
    again = obtain_bold5000("synthetic", "smoke", data_dir=tmp_path, n_images=12,
                                     seed=1)
    assert not again.generated and again.reuse == ("reuse", "same parameters")
    assert src.reuse == ("new", "nothing there")
    np.testing.assert_array_equal(again.data.layers.dissimilarities,
                                  src.data.layers.dissimilarities)
    other = obtain_bold5000("synthetic", "smoke", data_dir=tmp_path, n_images=12,
                                     seed=2, subjects=("CSI1", "CSI2"))
    assert other.generated and other.data.subjects == ["CSI1", "CSI2"]
    assert other.reuse[0] == "stale" and "seed: 1 -> 2" in other.reuse[1]
    assert "subjects" in other.reuse[1]
    (other.folder / "CSI2_rois.h5").unlink()  # a file gone: generated again
    assert obtain_bold5000("synthetic", "smoke", data_dir=tmp_path, n_images=12, seed=2,
                           subjects=("CSI1", "CSI2")).reuse == (
        "stale", "CSI2_rois.h5 is missing")
    assert not (other.folder / "CSI3_rois.h5").exists()  # stale files of the older run go
    # files: a folder read as is, a subset of subjects, a missing subject named
    files = obtain_bold5000("files", "paper", bold5000_dir=other.folder,
                                     subjects=("CSI2",))
    assert not files.generated and files.data.subjects == ["CSI2"]
    assert files.truth["seed"] == 2
    with pytest.raises(InputDataError, match="CSI3"):
        obtain_bold5000("files", "paper", bold5000_dir=other.folder)
    with pytest.raises(ValueError, match="bold5000_dir"):
        obtain_bold5000("files", "paper")
    with pytest.raises(ValueError, match="source"):
        obtain_bold5000("download", "paper")


def test_summarize_bold5000_shows_each_file_has_its_own_order(tmp_path):
    generate_bold5000(tmp_path, n_images=10, seed=0)
    summary = bold5000.summarize_bold5000(b5files.load_bold5000(tmp_path))
    assert list(summary.index) == ["resnet50_layers.h5", "CSI1_rois.h5", "CSI2_rois.h5",
                                   "CSI3_rois.h5"]
    assert (summary["images"] == 10).all() and summary["same images as layers"].all()
    assert summary["same order as layers"].tolist() == [True, False, False, False]
    assert summary.loc["CSI1_rois.h5", "rdms"].startswith("LHEarlyVis, LHLOC")


def test_best_layers_and_recovery_of_the_planted_hierarchy():
    sim = simulate_bold5000_rdms(50, seed=0)
    rois = list(sim.rois.values())
    joint = rsa.calc_joint_rdms(rois)
    table = rsa.compare_table(sim.layers, [*rois, joint], ("corr", "spearman"))
    with pytest.raises(ValueError, match="several methods"):
        bold5000.find_best_layers(table)
    boot = rsa.bootstrap_compare(sim.layers, [*rois, joint], n_bootstrap=50, seed=0)
    pairs = rsa.calc_pair_tests(boot, fdr_by="subject")
    best = bold5000.find_best_layers(table, method="corr", pair_tests=pairs)
    assert len(best) == 40 and (best["margin"] >= 0).all()
    assert set(best.columns) >= {"best_layer", "runner_up", "q_vs_runner_up", "clear"}
    one = best[(best["subject"] == "joint") & (best["roi"] == "LHPPA")].iloc[0]
    sel = table[(table["subject"] == "joint") & (table["roi"] == "LHPPA")
                & (table["method"] == "corr")].sort_values("value")
    assert one["best_layer"] == sel["layer"].iloc[-1] and one["runner_up"] == sel["layer"].iloc[-2]
    q = pairs[(pairs["subject"] == "joint") & (pairs["roi"] == "LHPPA")
              & ({one["best_layer"], one["runner_up"]} == pairs[["layer_a", "layer_b"]].apply(
                  set, axis=1))]["q"].iloc[0]
    assert one["q_vs_runner_up"] == pytest.approx(q)
    rec = bold5000.check_recovery(best, sim.truth["best_layer"])
    assert list(rec.index) == list(bold5000.ROIS)
    assert list(rec.columns) == ["planted", "CSI1", "CSI2", "CSI3", "joint", "matches"]
    assert (rec["joint"] == rec["planted"]).all()  # the planted hierarchy is recovered
    assert rec["matches"].between(0, 4).all() and rec["matches"].sum() >= 30
    null = bold5000.check_recovery(best, {r: None for r in bold5000.ROIS})
    assert (null["matches"] == 0).all()


# ------------------------------------------------------- what users get wrong in RDM files


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("similarity", "ones on its diagonal: a similarity matrix"),
        ("correlation", "ones on its diagonal: a correlation matrix"),
        ("negative_square", "1 negative dissimilarities"),
        ("negative_condensed", "1 negative dissimilarities"),
    ],
)
def test_similarities_and_negative_dissimilarities_are_rejected(tmp_path, kind, message):
    path = tmp_path / f"{kind}.h5"
    rng = np.random.default_rng(1)
    if kind == "similarity":  # e.g. exp(-d), one entry out of [-1, 1]
        m = np.exp(-squareform_of(rng.random(6)))
        m[0, 1] = m[1, 0] = 2.0
        _write_plain(path, IDS4, LOC=m)
    elif kind == "correlation":  # np.corrcoef of the patterns instead of 1 - r
        _write_plain(path, IDS4, LOC=np.corrcoef(rng.standard_normal((4, 10))))
    elif kind == "negative_square":
        m = squareform_of(np.array([0.5, -0.2, 0.3, 0.4, 0.1, 0.6]))
        _write_plain(path, IDS4, LOC=m)
    else:
        _write_plain(path, IDS4, LOC=np.array([0.5, 0.2, -0.3, 0.4, 0.1, 0.6]))
    with pytest.raises(InputDataError, match=message) as err:
        b5files.load_rdms(path)
    assert str(path) in str(err.value)


def squareform_of(v):
    """Square symmetric matrix (zero diagonal) of a condensed vector of 4 patterns."""
    m = np.zeros((4, 4))
    m[np.triu_indices(4, 1)] = v
    return m + m.T


def test_float_error_and_cross_validated_measures_are_not_rejected(tmp_path):
    tiny = np.array([0.5, -1e-9, 0.3, 0.4, 0.1, 0.6])  # 1 - r of identical patterns, rounded
    back = b5files.load_rdms(_write_plain(tmp_path / "tiny.h5", IDS4, LOC=tiny))
    np.testing.assert_array_equal(back.dissimilarities[0], tiny)
    square = b5files.load_rdms(_write_plain(tmp_path / "sq.h5", IDS4, LOC=squareform_of(tiny)))
    np.testing.assert_array_equal(square.dissimilarities[0], tiny)
    path = _write_plain(tmp_path / "cv.h5", IDS4, LOC=np.array([0.5, -0.2, 0.3, 0.4, 0.1, 0.6]))
    with h5py.File(path, "a") as f:
        f.attrs["dissimilarity_measure"] = "crossnobis"  # unbiased: may be negative
    assert b5files.load_rdms(path).dissimilarity_measure == "crossnobis"


def test_negative_rsatoolbox_rdms_are_rejected(tmp_path):
    rdms = _small_rdms(n=5)
    rdms.dissimilarities[1, 3] = -0.4
    path = tmp_path / "neg.h5"
    rdms.save(str(path), file_type="hdf5")
    with pytest.raises(InputDataError, match="negative dissimilarities") as err:
        b5files.load_rdms(path)
    assert str(path) in str(err.value)
    rdms.dissimilarity_measure = "crossnobis"
    rdms.save(str(path), file_type="hdf5", overwrite=True)
    assert b5files.load_rdms(path).dissimilarities[1, 3] == pytest.approx(-0.4)
