import gzip

import nibabel as nib
import numpy as np
import pytest

from emolib.errors import InputDataError
from emolib.io.bids import bold_path, check_runs, find_runs, read_bold, read_run_info
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
