import codecs

import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

from emolib.errors import InputDataError
from emolib.io.annotations import COLUMNS, EMOTIONS, read_observer, read_observers
from emolib.synthetic import generate_annotations

HEADER = ",".join(COLUMNS)
GOOD = "10.0,20.5,FORREST,LOW,POS,SELF,LOVE HAPPINESS,FACE VERBAL,SCENEEND"


def write(tmp_path, name, *lines):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def test_reads_real_audiovisual_files(real_annotations_dir):
    df = read_observers(real_annotations_dir)
    assert list(df.columns[:9]) == list(COLUMNS)
    assert sorted(df["observer"].unique()) == [f"av1o{i:02d}" for i in range(1, 10)]
    # every file's rows are all there (header excluded)
    for obs, grp in df.groupby("observer"):
        n_lines = len((real_annotations_dir / f"{obs}.csv").read_text().splitlines())
        assert len(grp) == n_lines - 1
    assert (df["start"] <= df["end"]).all()
    words = {w for e in df["emotion"] for w in e.split()}
    assert words <= set(EMOTIONS)
    assert (df["emotion"] == "").any()  # empty emotions are kept as ""
    assert df["emotion"].str.contains(" ").any()  # and multi-label rows exist


def test_reads_real_audio_only_files_with_narrator(real_annotations_dir):
    df = read_observers(real_annotations_dir, "ao1o*.csv")
    assert sorted(df["observer"].unique()) == ["ao1o01", "ao1o02", "ao1o03"]
    assert df["oncue"].str.contains("NARRATOR").any()


def test_observer_from_file_name_and_row_numbers(tmp_path):
    path = write(tmp_path, "av1o07.csv", HEADER, GOOD, GOOD.replace("LOVE HAPPINESS", ""))
    df = read_observer(path)
    assert df["observer"].tolist() == ["av1o07", "av1o07"]
    assert df["row"].tolist() == [2, 3]
    assert df["emotion"].tolist() == ["LOVE HAPPINESS", ""]
    assert df["start"].dtype == float


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (GOOD.replace("LOW", "MEDIUM"), "arousal"),
        (GOOD.replace("POS", "NEUTRAL"), "valence"),
        (GOOD.replace("SELF", "THEM"), "direction"),
        (GOOD.replace("LOVE HAPPINESS", "LOVE JOY"), "emotion"),
        (GOOD.replace("FACE VERBAL", "FACE SMELL"), "oncue"),
        (GOOD.replace("SCENEEND", "ENDED"), "offcue"),
        (GOOD.replace("10.0,20.5", "30.0,20.5"), "after end"),
        (GOOD.replace("10.0,20.5", "-1.0,20.5"), "negative"),
        (GOOD.replace("10.0,20.5", "ten,20.5"), "not numbers"),
        (GOOD + ",EXTRA", "fields"),
    ],
)
def test_bad_row_names_file_and_line(tmp_path, line, problem):
    path = write(tmp_path, "av1o01.csv", HEADER, GOOD, line)
    with pytest.raises(InputDataError, match=problem) as err:
        read_observer(path)
    assert err.value.line == 3
    assert "av1o01.csv, line 3" in str(err.value)


def test_bad_header(tmp_path):
    path = write(tmp_path, "av1o01.csv", HEADER.replace("emotion", "feeling"), GOOD)
    with pytest.raises(InputDataError, match="header"):
        read_observer(path)


def test_narrator_cue_is_accepted(tmp_path):
    path = write(tmp_path, "ao1o01.csv", HEADER, GOOD.replace("FACE VERBAL", "NARRATOR AUDIO"))
    assert read_observer(path)["oncue"].iloc[0] == "NARRATOR AUDIO"


def test_missing_folder_and_no_match(tmp_path):
    with pytest.raises(InputDataError, match="does not exist"):
        read_observers(tmp_path / "nope")
    with pytest.raises(InputDataError, match="no annotation file"):
        read_observers(tmp_path)


def test_binary_file_is_a_clear_error(tmp_path):
    path = tmp_path / "av1o01.csv"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(InputDataError, match="av1o01.csv"):
        read_observer(path)


def test_concatenation_keeps_file_order(tmp_path):
    write(tmp_path, "av1o02.csv", HEADER, GOOD.replace("10.0", "11.0"))
    write(tmp_path, "av1o01.csv", HEADER, GOOD)
    df = read_observers(tmp_path)
    assert df["observer"].tolist() == ["av1o01", "av1o02"]
    assert isinstance(df, pd.DataFrame)


# --- encodings, line endings and files without rows --------------------------------------------


@pytest.fixture(params=["generated", "real"])
def annotation_dir(request, tmp_path_factory):
    """A folder of ``av1o*.csv`` files: generated ones (LF line endings, always available) or
    the real Labs et al. files (CRLF; skipped without shared/)."""
    if request.param == "real":
        return request.getfixturevalue("real_annotations_dir")
    out = tmp_path_factory.mktemp("generated_annotations")
    generate_annotations(out, duration=600, n_observers=3, seed=3)
    return out


def copy_files(src_dir, dst_dir, change=lambda name, data: data):
    """Copy the ``av1o*.csv`` files of ``src_dir``, their bytes passed through ``change``."""
    dst_dir.mkdir()
    for f in sorted(src_dir.glob("av1o*.csv")):
        (dst_dir / f.name).write_bytes(change(f.name, f.read_bytes()))
    return dst_dir


def lf(data):
    return data.replace(b"\r\n", b"\n")


def test_utf8_bom_file_reads_identically(annotation_dir, tmp_path):
    out = copy_files(annotation_dir, tmp_path / "bom", lambda _, data: codecs.BOM_UTF8 + data)
    for f in sorted(out.glob("av1o*.csv")):
        assert f.read_bytes().startswith(codecs.BOM_UTF8)
        assert_frame_equal(read_observer(f), read_observer(annotation_dir / f.name))


def test_folder_with_one_bom_file_reads_identically(annotation_dir, tmp_path):
    out = copy_files(annotation_dir, tmp_path / "bom",
                     lambda name, data: codecs.BOM_UTF8 + data if name == "av1o02.csv" else data)
    assert_frame_equal(read_observers(out), read_observers(annotation_dir))


@pytest.mark.parametrize(
    ("bom", "ending"),
    [(b"", b"\n"), (b"", b"\r\n"), (b"", b"\r"), (codecs.BOM_UTF8, b"\r\n")],
    ids=["LF", "CRLF", "CR", "BOM-CRLF"],
)
def test_line_endings_read_identically(annotation_dir, tmp_path, bom, ending):
    out = copy_files(annotation_dir, tmp_path / "converted",
                     lambda _, data: bom + lf(data).replace(b"\n", ending))
    assert_frame_equal(read_observers(out), read_observers(annotation_dir))


def test_trailing_blank_lines_are_ignored(annotation_dir, tmp_path):
    out = copy_files(annotation_dir, tmp_path / "blank", lambda _, data: data + b"\r\n\n  \n")
    assert_frame_equal(read_observers(out), read_observers(annotation_dir))


@pytest.mark.parametrize("tail", ["", "\n", "\r\n", "\n\n"],
                         ids=["no-newline", "LF", "CRLF", "blank-line"])
@pytest.mark.parametrize("bom", [b"", codecs.BOM_UTF8], ids=["no-BOM", "BOM"])
def test_header_only_file_is_refused(tmp_path, tail, bom):
    path = tmp_path / "av1o04.csv"
    path.write_bytes(bom + (HEADER + tail).encode())
    with pytest.raises(InputDataError, match="header but no annotation rows") as err:
        read_observer(path)
    assert "av1o04.csv" in str(err.value)
    assert err.value.path == str(path)


def test_folder_with_one_header_only_file_is_refused(annotation_dir, tmp_path):
    out = copy_files(annotation_dir, tmp_path / "truncated",
                     lambda name, data: data.splitlines(keepends=True)[0]
                     if name == "av1o02.csv" else data)
    with pytest.raises(InputDataError, match="header but no annotation rows") as err:
        read_observers(out)
    assert err.value.path == str(out / "av1o02.csv")


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "empty"),
        (codecs.BOM_UTF8, "no content"),
        (b"\r\n\n  \n", "no content"),
    ],
    ids=["0-bytes", "BOM-only", "blank-lines"],
)
def test_empty_file_is_refused(tmp_path, content, problem):
    path = tmp_path / "av1o05.csv"
    path.write_bytes(content)
    with pytest.raises(InputDataError, match=problem) as err:
        read_observer(path)
    assert "av1o05.csv" in str(err.value)


@pytest.mark.parametrize(
    ("encoding", "problem"),
    [
        ("utf-16", "UTF-16 encoded"),  # with a byte-order mark, as spreadsheets write it
        ("utf-32", "UTF-32 encoded"),
        ("utf-16-le", "not UTF-8"),  # no byte-order mark
        ("utf-16-be", "not UTF-8"),
    ],
)
def test_utf16_file_is_refused_naming_the_encoding(tmp_path, encoding, problem):
    path = tmp_path / "av1o06.csv"
    path.write_bytes("\r\n".join([HEADER, GOOD, ""]).encode(encoding))
    with pytest.raises(InputDataError, match=problem) as err:
        read_observer(path)
    assert "av1o06.csv" in str(err.value)
    assert "UTF-8" in str(err.value)


def test_other_encoding_names_file_and_line(tmp_path):
    path = tmp_path / "av1o07.csv"
    path.write_bytes("\r\n".join([HEADER, GOOD, GOOD.replace("FORREST", "JÉNNY")]).encode("cp1252"))
    with pytest.raises(InputDataError, match="not a UTF-8 text file") as err:
        read_observer(path)
    assert err.value.line == 3
    assert "av1o07.csv, line 3" in str(err.value)


def test_line_numbers_count_lines_of_quoted_multiline_fields(tmp_path):
    two_lines = GOOD.replace("FORREST", '"FOR\nREST"')
    path = write(tmp_path, "av1o08.csv", HEADER, two_lines, GOOD, "", GOOD)
    assert read_observer(path)["row"].tolist() == [2, 4, 6]
    path = write(tmp_path, "av1o08.csv", HEADER, two_lines, GOOD.replace("LOW", "MEDIUM"))
    with pytest.raises(InputDataError, match="arousal") as err:
        read_observer(path)
    assert err.value.line == 4
