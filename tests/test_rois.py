"""ROIs on the data grid: parcellation, atlases, planted regions of generated data."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from emolib.errors import InputDataError
from emolib.forrest import load_atlas, make_rois, masks_from_labels, parcellate_mask
from emolib.synthetic import find_truth
from emolib.synthetic.forrest import affine_for, brain_mask

SHAPE = (12, 12, 8)


def test_parcellate_mask_covers_the_mask_with_compact_ordered_parcels():
    mask = brain_mask(SHAPE)
    labels = parcellate_mask(mask, 6, voxel_size=(3, 3, 3.3), seed=0)
    assert labels.dtype == np.int16 and labels.shape == SHAPE
    np.testing.assert_array_equal(labels > 0, mask)
    assert sorted(np.unique(labels[mask])) == list(range(1, 7))
    centres = [np.argwhere(labels == k).mean(axis=0) for k in range(1, 7)]
    xs = [c[0] for c in centres]
    assert xs == sorted(xs)  # numbered from left to right (k-means centres are the means)
    np.testing.assert_array_equal(labels, parcellate_mask(mask, 6, voxel_size=(3, 3, 3.3)))
    two = np.zeros(SHAPE, bool)
    two[0, 0, :2] = True
    with pytest.raises(ValueError, match="n_parcels"):
        parcellate_mask(two, 3)


def test_masks_from_labels_names_and_minimum_size():
    labels = np.zeros(SHAPE, np.int16)
    labels[:2] = 3
    labels[5, 5, 5] = 12
    masks = masks_from_labels(labels, min_voxels=2)
    assert list(masks) == ["parcel 03"] and masks["parcel 03"].sum() == 2 * 12 * 8
    named = masks_from_labels(labels, {3: "V1", 12: "dot"})
    assert list(named) == ["V1", "dot"]


def _atlas(tmp_path, affine=None, shape=SHAPE):
    labels = np.zeros(shape, np.int16)
    labels[: shape[0] // 2] = 1
    labels[shape[0] // 2 :, : shape[1] // 2] = 2
    path = tmp_path / "atlas.nii.gz"
    nib.save(nib.Nifti1Image(labels, affine_for(shape) if affine is None else affine), path)
    return path, labels


def test_load_atlas_on_the_data_grid_with_names(tmp_path):
    path, labels = _atlas(tmp_path)
    pd.DataFrame({"index": [1, 2], "name": ["left", "right-front"]}).to_csv(
        tmp_path / "atlas.tsv", sep="\t", index=False)
    masks = load_atlas(path, shape=SHAPE, affine=affine_for(SHAPE))
    assert list(masks) == ["left", "right-front"]
    np.testing.assert_array_equal(masks["left"], labels == 1)
    within = np.zeros(SHAPE, bool)
    within[:, :3] = True
    inside = load_atlas(path, shape=SHAPE, affine=affine_for(SHAPE), within=within,
                        names_file=tmp_path / "atlas.tsv")
    assert not (inside["left"] & ~within).any()


def test_load_atlas_resamples_another_grid_with_nearest_neighbours(tmp_path):
    fine = (24, 24, 16)
    affine = affine_for(fine, voxel_size=(1.5, 1.5, 1.65))
    path, _ = _atlas(tmp_path, affine=affine, shape=fine)
    masks = load_atlas(path, shape=SHAPE, affine=affine_for(SHAPE))
    assert list(masks) == ["label 1", "label 2"]
    assert masks["label 1"][:5].all() and not masks["label 1"][7:].any()
    assert masks["label 1"].sum() + masks["label 2"].sum() <= np.prod(SHAPE)


def test_load_atlas_errors_name_the_file(tmp_path):
    with pytest.raises(InputDataError, match="does not exist"):
        load_atlas(tmp_path / "none.nii.gz", shape=SHAPE, affine=np.eye(4))
    four = tmp_path / "four.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((*SHAPE, 2), np.int16), np.eye(4)), four)
    with pytest.raises(InputDataError, match="3D labels"):
        load_atlas(four, shape=SHAPE, affine=np.eye(4))
    empty = tmp_path / "empty.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(SHAPE, np.int16), affine_for(SHAPE)), empty)
    with pytest.raises(InputDataError, match="no labelled voxel"):
        load_atlas(empty, shape=SHAPE, affine=affine_for(SHAPE))


def _fake_truth():
    brain = brain_mask(SHAPE)
    regions = {}
    for c, centre in (("FEAR", (3, 6, 4)), ("LOVE", (8, 6, 4))):
        r = np.zeros(SHAPE, bool)
        r[centre[0] - 1 : centre[0] + 2, centre[1] - 1 : centre[1] + 2, centre[2] - 1 :
          centre[2] + 1] = True
        regions[c] = r & brain
    return {"classes": ["FEAR", "LOVE"], "regions": regions, "brain_mask": brain}


def test_make_rois_generated_planted_first_and_parcels_without_planted_voxels():
    truth = _fake_truth()
    rois = make_rois(np.ones(SHAPE, bool), affine_for(SHAPE), truth=truth, n_parcels=4)
    assert rois.source == "generated"
    assert rois.names[:2] == ["region FEAR", "region LOVE"]
    assert list(rois.table["kind"]) == ["planted"] * 2 + ["parcel"] * 4
    assert rois.groups() == {"planted": ("region FEAR", "region LOVE"),
                             "parcel": tuple(rois.names[2:])}
    planted = truth["regions"]["FEAR"] | truth["regions"]["LOVE"]
    parcels = np.zeros(SHAPE, bool)
    for name in rois.names[2:]:
        assert not (rois.masks[name] & planted).any()
        assert not (rois.masks[name] & ~truth["brain_mask"]).any()
        parcels |= rois.masks[name]
    np.testing.assert_array_equal(parcels | planted, truth["brain_mask"])
    assert rois.table["n_voxels"].tolist() == [int(rois.masks[n].sum()) for n in rois.names]
    assert rois.kinds()["region LOVE"] == "planted"
    img = rois.to_image(affine_for(SHAPE))
    labels = np.asarray(img.dataobj)
    assert img.shape == SHAPE and labels.max() == len(rois.names)
    np.testing.assert_array_equal(labels == 2, rois.masks["region LOVE"])


def test_make_rois_real_data_atlas_or_parcellation(tmp_path):
    mask = brain_mask(SHAPE)
    path, _ = _atlas(tmp_path)
    with_atlas = make_rois(mask, affine_for(SHAPE), atlas=path)
    assert with_atlas.source == "atlas" and set(with_atlas.table["kind"]) == {"atlas"}
    parcels = make_rois(mask, affine_for(SHAPE), n_parcels=3)
    assert parcels.source == "parcellation" and len(parcels.names) == 3
    with pytest.raises(ValueError, match="no ROI"):
        make_rois(mask, affine_for(SHAPE), n_parcels=0)


def test_find_truth_of_a_generated_dataset_and_none_for_real_data(tiny_dataset, tmp_path):
    truth = find_truth(tiny_dataset / "ds000113")
    assert truth is not None and set(truth["regions"]) == set(truth["classes"])
    assert truth["brain_mask"].shape == (12, 12, 10)
    assert find_truth(tmp_path / "ds000113") is None
    assert find_truth(None) is None
