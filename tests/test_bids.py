import gzip
import json

import nibabel as nib
import numpy as np
import pytest

from emolib.errors import InputDataError
from emolib.io.bids import (
    GridWarning,
    affine_shift_mm,
    bold_path,
    check_grids,
    check_runs,
    find_runs,
    parse_bids_name,
    read_bold,
    read_run_info,
    read_sidecar,
    scan_runs,
)
from emolib.synthetic.forrest import affine_for
from tests.conftest import write_bold


@pytest.fixture
def run_file(tmp_path, rng):
    data = rng.integers(100, 1000, size=(6, 5, 4, 7)).astype(np.int16)
    return write_bold(tmp_path / "bold.nii.gz", data), data


def test_read_bold_equals_nibabel(run_file):
    path, data = run_file
    got = read_bold(path)
    ref = np.asanyarray(nib.load(path).dataobj)
    assert got.dtype == ref.dtype == np.int16
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(got, data)


def test_read_bold_applies_scaling_like_nibabel(tmp_path, rng):
    data = rng.normal(size=(4, 4, 3, 5)).astype(np.float32) * 100
    img = nib.Nifti1Image(data, affine_for((4, 4, 3)))
    img.header["pixdim"][4] = 2.0
    img.header.set_xyzt_units("mm", "sec")
    img.header.set_data_dtype(np.int16)  # nibabel picks a scale slope
    nib.save(img, tmp_path / "scaled.nii.gz")
    ref = np.asanyarray(nib.load(tmp_path / "scaled.nii.gz").dataobj)
    np.testing.assert_allclose(read_bold(tmp_path / "scaled.nii.gz"), ref, rtol=1e-6)


def test_uncompressed_nifti_is_read(tmp_path, rng):
    data = rng.integers(0, 100, size=(3, 3, 3, 4)).astype(np.int16)
    path = write_bold(tmp_path / "bold.nii", data)
    np.testing.assert_array_equal(read_bold(path), data)


def test_run_info_reads_tr_and_shape(run_file):
    info = read_run_info(run_file[0])
    assert info.shape == (6, 5, 4, 7)
    assert info.tr == 2.0


def test_tr_in_milliseconds_is_converted(tmp_path, rng):
    data = rng.integers(0, 100, size=(3, 3, 3, 4)).astype(np.int16)
    img = nib.Nifti1Image(data, np.eye(4))
    img.header.set_xyzt_units("mm", "msec")
    img.header["pixdim"][4] = 2000.0
    nib.save(img, tmp_path / "ms.nii.gz")
    assert read_run_info(tmp_path / "ms.nii.gz").tr == pytest.approx(2.0)


def test_truncated_gzip(run_file, tmp_path):
    path, _ = run_file
    raw = path.read_bytes()
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InputDataError, match="cut.nii.gz") as err:
        read_bold(cut)
    assert "truncated" in str(err.value) or "not a readable" in str(err.value)


def test_truncated_data_block_behind_valid_header(run_file, tmp_path):
    path, _ = run_file
    raw = gzip.decompress(path.read_bytes())
    short = tmp_path / "short.nii.gz"
    short.write_bytes(gzip.compress(raw[: len(raw) - 100]))
    with pytest.raises(InputDataError, match="short.nii.gz.*(truncated|bytes)"):
        read_bold(short)


def test_corrupt_file(tmp_path):
    bad = tmp_path / "corrupt.nii.gz"
    bad.write_bytes(b"\x1f\x8b" + b"this is not gzip data" * 10)
    with pytest.raises(InputDataError, match="corrupt.nii.gz"):
        read_bold(bad)


def test_3d_image_is_rejected(tmp_path, rng):
    path = write_bold(tmp_path / "anat.nii.gz", rng.normal(size=(4, 4, 4)).astype(np.float32))
    with pytest.raises(InputDataError, match=r"anat.nii.gz: image is 3D.*4D"):
        read_run_info(path)


def test_wrong_tr(tmp_path, rng):
    path = write_bold(tmp_path / "tr3.nii.gz", rng.normal(size=(3, 3, 3, 4)).astype(np.float32),
                      tr=3.0)
    with pytest.raises(InputDataError, match="tr3.nii.gz: TR in the header is 3 s, expected 2 s"):
        read_run_info(path)


def test_nan_and_inf_values(tmp_path, rng):
    data = rng.normal(size=(3, 3, 3, 4)).astype(np.float32)
    data[1, 2, 0, 3] = np.nan
    data[0, 0, 0, 0] = np.inf
    path = write_bold(tmp_path / "nan.nii.gz", data)
    with pytest.raises(InputDataError, match=r"nan.nii.gz: 2 NaN or infinite"):
        read_bold(path)


def test_mismatched_shapes_and_affines(tmp_path, rng):
    a = write_bold(tmp_path / "a.nii.gz", rng.normal(size=(3, 3, 3, 4)).astype(np.float32))
    b = write_bold(tmp_path / "b.nii.gz", rng.normal(size=(3, 3, 4, 4)).astype(np.float32))
    c = write_bold(tmp_path / "c.nii.gz", rng.normal(size=(3, 3, 3, 4)).astype(np.float32),
                   affine=np.diag([2.0, 2.0, 2.0, 1.0]))
    with pytest.raises(InputDataError, match="b.nii.gz: spatial shape"):
        check_runs([read_run_info(a), read_run_info(b)])
    with pytest.raises(InputDataError, match="c.nii.gz: affine differs"):
        check_runs([read_run_info(a), read_run_info(c)])


def test_find_runs_and_missing_run(tmp_path, rng):
    for sub in ("01", "02"):
        for run in (1, 2):
            if (sub, run) == ("02", 2):
                continue
            write_bold(bold_path(tmp_path, sub, run),
                       rng.integers(0, 9, size=(2, 2, 2, 3)).astype(np.int16))
    table = find_runs(tmp_path, subjects=["01"])
    assert table[["subject", "run"]].values.tolist() == [["01", 1], ["01", 2]]
    with pytest.raises(InputDataError, match=r"sub-02_ses-movie_task-movie_run-2_bold.nii.gz: "
                                             r"missing run\(s\) \[2\] of sub-02"):
        find_runs(tmp_path)
    with pytest.raises(InputDataError, match="sub-03"):
        find_runs(tmp_path, subjects=["03"])
    with pytest.raises(InputDataError, match="does not exist"):
        find_runs(tmp_path / "nowhere")


def test_missing_file(tmp_path):
    with pytest.raises(InputDataError, match="does not exist"):
        read_run_info(tmp_path / "nope.nii.gz")


# --- the real layouts: entities, skipped subjects, TR by inheritance, native-space grids -----

def _tiny_run(path, rng, affine=None, tr=2.0, shape=(4, 4, 3, 5)):
    return write_bold(path, rng.integers(1, 9, size=shape).astype(np.int16), tr=tr,
                      affine=affine)


def test_other_entities_are_reported_not_lost(tmp_path, rng):
    _tiny_run(bold_path(tmp_path, "01", 1), rng)
    acq = tmp_path / "sub-01/ses-movie/func/sub-01_ses-movie_task-movie_acq-mb_run-2_bold.nii.gz"
    _tiny_run(acq, rng)
    _tiny_run(tmp_path / "sub-01/ses-movie/func/sub-01_ses-movie_task-movie_acq-mb_run-1_bold"
              ".nii.gz", rng)
    with pytest.raises(InputDataError, match=r"missing run\(s\) \[2\] of sub-01; found instead: "
                                             r"sub-01_ses-movie_task-movie_acq-mb_run-2_bold"
                                             r"\.nii\.gz \(acq-mb\)"):
        scan_runs(tmp_path, runs=[1, 2])
    scan = scan_runs(tmp_path, runs=[1])
    assert scan.runs["path"].tolist() == [bold_path(tmp_path, "01", 1)]
    assert sorted(p.name for p in scan.other_entities) == sorted(
        [acq.name, "sub-01_ses-movie_task-movie_acq-mb_run-1_bold.nii.gz"])
    assert any("other entities" in n for n in scan.notes)
    chosen = scan_runs(tmp_path, entities={"acq": "mb"})
    assert chosen.runs["run"].tolist() == [1, 2]
    assert all("acq-mb" in p.name for p in chosen.runs["path"])


def test_subjects_without_the_session_are_skipped_with_a_note(tmp_path, rng):
    _tiny_run(bold_path(tmp_path, "01", 1), rng)
    (tmp_path / "sub-07" / "ses-forrestgump" / "anat").mkdir(parents=True)
    scan = scan_runs(tmp_path)
    assert scan.runs["subject"].tolist() == ["01"]
    assert scan.skipped == {"07": "no ses-movie/func folder"}
    assert scan.notes == ["sub-07 skipped: no ses-movie/func folder"]
    with pytest.warns(UserWarning, match="sub-07 skipped"):
        find_runs(tmp_path)
    with pytest.raises(InputDataError, match="sub-07: no ses-movie/func folder"):
        scan_runs(tmp_path, subjects=["01", "07"])


def test_tr_is_inherited_from_the_top_level_sidecar(tmp_path, rng):
    path = _tiny_run(bold_path(tmp_path, "01", 1), rng)
    # the per-run dcmstack dump has no top-level RepetitionTime
    path.with_name("sub-01_ses-movie_task-movie_run-1_bold.json").write_text(
        json.dumps({"dcmmeta_version": 0.6, "global": {"const": {"RepetitionTime": 2000.0}}}))
    (tmp_path / "task-movie_bold.json").write_text(json.dumps({"RepetitionTime": 2.00000061}))
    info = read_run_info(path, bids_root=tmp_path)
    assert info.tr == 2.00000061 and info.tr_source.endswith("task-movie_bold.json")
    meta, origin = read_sidecar(tmp_path, path)
    assert "dcmmeta_version" in meta and origin["RepetitionTime"].name == "task-movie_bold.json"
    # without the dataset root only the header speaks
    assert read_run_info(path).tr == 2.0 and read_run_info(path).tr_source == "header"
    # a deeper sidecar overrides; a disagreement with the header names both files
    (tmp_path / "sub-01" / "sub-01_task-movie_bold.json").write_text(
        json.dumps({"RepetitionTime": 2.5}))
    with pytest.raises(InputDataError, match=r"run-1_bold.nii.gz: TR in the header is 2 s but "
                                             r".*sub-01_task-movie_bold.json says "
                                             r"RepetitionTime 2.5 s"):
        read_run_info(path, expected_tr=None, bids_root=tmp_path)
    # a sidecar of another task does not apply
    (tmp_path / "sub-01" / "sub-01_task-movie_bold.json").rename(
        tmp_path / "sub-01" / "sub-01_task-retmap_bold.json")
    assert read_run_info(path, bids_root=tmp_path).tr == 2.00000061
    # sidecar and expected TR disagree: named
    (tmp_path / "task-movie_bold.json").write_text(json.dumps({"RepetitionTime": "two"}))
    with pytest.raises(InputDataError, match=r"task-movie_bold.json: RepetitionTime 'two'"):
        read_run_info(path, bids_root=tmp_path)


def test_grids_native_space_and_within_subject_shift(tmp_path, rng):
    base = affine_for((4, 4, 3))
    moved = base.copy()
    moved[:3, 3] += [5.0, -3.0, 2.0]  # another subject's scanner space: fine
    nudged = base.copy()
    nudged[0, 3] += 2.0  # the same subject, 2 mm away after the break: a warning
    a1 = read_run_info(_tiny_run(tmp_path / "a1.nii.gz", rng, base))
    a2 = read_run_info(_tiny_run(tmp_path / "a2.nii.gz", rng, nudged))
    b1 = read_run_info(_tiny_run(tmp_path / "b1.nii.gz", rng, moved))
    assert check_grids({"01": [a1], "02": [b1]}) == []
    with pytest.warns(GridWarning, match=r"sub-01: the grid of a2.nii.gz is 2.00 mm away from "
                                         r"that of a1.nii.gz"):
        notes = check_grids({"01": [a1, a2], "02": [b1]})
    assert len(notes) == 1
    assert check_grids({"01": [a1, a2]}, affine_tolerance=2.5) == []
    other_shape = read_run_info(_tiny_run(tmp_path / "c.nii.gz", rng, shape=(4, 4, 4, 5)))
    with pytest.raises(InputDataError, match=r"c.nii.gz: spatial shape \(4, 4, 4\) differs "
                                             r"from \(4, 4, 3\) of a1.nii.gz"):
        check_grids({"01": [a1], "02": [other_shape]})
    big = read_run_info(_tiny_run(tmp_path / "d.nii.gz", rng, np.diag([2.0, 2.0, 2.0, 1.0])))
    with pytest.raises(InputDataError, match=r"d.nii.gz: voxel size 2x2x2 mm differs"):
        check_grids({"01": [a1], "02": [big]})
    assert affine_shift_mm(base, nudged, (4, 4, 3)) == pytest.approx(2.0)


def test_aligned_layout(tmp_path, rng):
    path = bold_path(tmp_path, "01", 1, task="avmovie", layout="aligned")
    assert path == tmp_path / "sub-01/in_bold3Tp2/sub-01_task-avmovie_run-1_bold.nii.gz"
    _tiny_run(path, rng)
    (tmp_path / "sub-01/in_bold3Tp2/sub-01_task-avmovie_run-1_bold_mcparams.txt").write_text("0")
    (tmp_path / "sub-02" / "in_bold3Tp2").mkdir(parents=True)
    scan = scan_runs(tmp_path, layout="aligned")
    assert scan.runs["path"].tolist() == [path] and "02" in scan.skipped
    with pytest.raises(InputDataError, match="no task-movie BOLD run"):
        scan_runs(tmp_path, layout="aligned", task="movie")
    with pytest.raises(ValueError, match="layout"):
        scan_runs(tmp_path, layout="fmriprep")


def test_parse_bids_name():
    assert parse_bids_name("sub-01_ses-movie_task-movie_run-1_bold.nii.gz") == (
        {"sub": "01", "ses": "movie", "task": "movie", "run": "1"}, "bold", ".nii.gz")
    assert parse_bids_name("task-movie_bold.json") == ({"task": "movie"}, "bold", ".json")
    assert parse_bids_name("README") is None and parse_bids_name("bad name_bold.json") is None
