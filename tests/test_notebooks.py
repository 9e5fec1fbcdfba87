"""Every notebook runs end to end with the smoke profile (papermill, a real kernel)."""

import json

import nbformat
import pytest

from emolib.runner import NOTEBOOKS_DIR, execute_notebook, load_profile, notebook_parameters

SMOKE = load_profile("smoke")
NOTEBOOKS = sorted(p.stem for p in NOTEBOOKS_DIR.glob("[0-9][0-9]_*.py"))


def test_every_notebook_is_in_the_smoke_profile():
    assert NOTEBOOKS, "no notebook found"
    assert sorted(SMOKE["notebooks"]) == NOTEBOOKS


@pytest.fixture(scope="module")
def shared_dirs(tmp_path_factory):
    """One data folder for the whole chain: later notebooks read what earlier ones wrote."""
    root = tmp_path_factory.mktemp("book")
    return root / "data", root / "book"


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)  # in order: 01, 02, ...
def test_notebook_runs_with_smoke_profile(name, shared_dirs):
    data, book = shared_dirs
    params = {**notebook_parameters(SMOKE, name), "data_dir": str(data)}
    out = execute_notebook(name, params, output_dir=book, progress=False)
    nb = nbformat.read(out, as_version=4)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected and "data_dir" in injected[0].source
    # the stage wrote its manifest under the data folder given as a parameter
    manifests = list((data / "derived" / "smoke" / name).rglob("manifest.json"))
    assert manifests, f"{name} wrote no manifest under {data}"
    assert json.loads(manifests[0].read_text())["parameters"]


def test_failing_notebook_names_notebook_and_cell(tmp_path):
    from emolib.runner import NotebookFailed

    with pytest.raises(NotebookFailed, match=r"notebooks/01_dataprep.py failed in cell \d+"):
        execute_notebook("01_dataprep", {"source": "no-such-source", "data_dir": str(tmp_path)},
                         output_dir=tmp_path, progress=False)
