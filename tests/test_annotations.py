import pandas as pd
import pytest

from emolib.errors import InputDataError
from emolib.io.annotations import COLUMNS, EMOTIONS, read_observer, read_observers

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
