"""Every notebook runs end to end with the smoke profile (papermill, a real kernel).

The notebooks run once per test session, in order, on one data folder (later chapters read
what earlier ones wrote), through the ``smoke_book`` fixture of ``conftest.py``.
"""

import json
import re

import nbformat
import pytest
import yaml

from emolib.book.runner import NOTEBOOKS_DIR, NotebookFailed, execute_notebook
from emolib.paths import REPO_ROOT
from tests.conftest import NOTEBOOKS, SMOKE

#: Chapters that produce data (the others only read and report).
PRODUCERS = {"01_dataprep", "02_training", "03_occlusion", "04_rsa", "05_bold5000"}


def test_every_notebook_is_in_the_smoke_profile_and_the_toc():
    assert NOTEBOOKS, "no notebook found"
    assert sorted(SMOKE["notebooks"]) == NOTEBOOKS
    toc = (REPO_ROOT / "_toc.yml").read_text()
    for name in NOTEBOOKS:
        assert re.search(rf"file: {name}\b", toc), f"{name} is not in _toc.yml"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_shape(name):
    """Thin notebooks: a parameters cell with documented, typed defaults; a Colab cell."""
    text = (NOTEBOOKS_DIR / f"{name}.py").read_text()
    assert '# %% tags=["parameters"]' in text
    assert '# %% tags=["colab"]' in text
    assert not re.search(r"^\s*(def|class) ", text, flags=re.M), "logic belongs in emolib"
    url = yaml.safe_load((REPO_ROOT / "_config.yml").read_text())["repository"]["url"]
    assert url in text, "the Colab cell installs from the repository of _config.yml"


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)  # in order: 01, 02, ...
def test_notebook_runs_with_smoke_profile(name, smoke_book):
    result = smoke_book["results"][name]
    if isinstance(result, BaseException):
        raise result
    nb = nbformat.read(result, as_version=4)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected and "data_dir" in injected[0].source
    summary = [c for c in nb.cells if "parameters-summary" in c.metadata.get("tags", [])]
    assert summary and "*(profile)*" in summary[0].source
    # the runner recorded the parameters in the stage folder, under the data folder given as a
    # parameter; stages that produce data also wrote a manifest there
    stage = smoke_book["data"] / "derived" / "smoke" / name
    recorded = json.loads((stage / "parameters.json").read_text())
    assert recorded["data_dir"] == str(smoke_book["data"])
    if name in PRODUCERS:
        manifests = list(stage.rglob("manifest.json"))
        assert manifests, f"{name} wrote no manifest under {stage}"
        assert json.loads(manifests[0].read_text())["parameters"]


def test_failing_notebook_names_notebook_and_cell(tmp_path):
    with pytest.raises(NotebookFailed, match=r"notebooks/01_dataprep.py failed in cell \d+"):
        execute_notebook("01_dataprep", {"source": "no-such-source", "data_dir": str(tmp_path)},
                         output_dir=tmp_path, progress=False)
