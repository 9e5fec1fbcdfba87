"""Every notebook runs end to end with the smoke profile (papermill, a real kernel).

The notebooks run once per test session, in order, on one data folder (later chapters read
what earlier ones wrote), through the ``smoke_book`` fixture of ``conftest.py``.
"""

import json
import re

import nbformat
import pytest
import yaml

from emolib.book.runner import (
    NOTEBOOKS_DIR,
    declared_parameters,
    execute_notebook,
    load_profile,
    notebook_parameters,
)
from emolib.paths import REPO_ROOT
from tests.conftest import NOTEBOOKS, SMOKE

#: Chapters that produce data (the others only read and report).
PRODUCERS = {"01_dataprep", "02_training", "03_occlusion", "04_rsa", "05_bold5000",
             "09_spacetime"}


def test_every_notebook_is_in_the_smoke_profile_and_the_toc():
    assert NOTEBOOKS, "no notebook found"
    assert sorted(SMOKE["notebooks"]) == NOTEBOOKS
    toc = (REPO_ROOT / "_toc.yml").read_text()
    for name in NOTEBOOKS:
        assert re.search(rf"file: {name}\b", toc), f"{name} is not in _toc.yml"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_run_all_gives_the_demo_books_page(name):
    """Run All in JupyterLab runs a chapter with its parameters cell's defaults: they must be
    what the demo book (``make book``) ran it with, so the demo profile may change nothing."""
    demo = load_profile("demo")
    assert name in demo["notebooks"]
    declared = declared_parameters(name)
    changed = {k: (declared[k], v) for k, v in notebook_parameters(demo, name).items()
               if declared[k] != v}
    assert not changed, f"the demo profile changes {name}'s defaults (default, demo): {changed}"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_shape(name):
    """Thin notebooks: a parameters cell with documented, typed defaults; a Colab cell."""
    text = (NOTEBOOKS_DIR / f"{name}.py").read_text()
    assert '# %% tags=["parameters"]' in text
    assert '# %% tags=["colab"]' in text
    # the cell after the parameters refuses names papermill injected that are not declared
    after = text.split('# %% tags=["parameters"]', 1)[1].split("# %%", 2)[1]
    assert f'check_parameters("{name}")' in after
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


KILLED_BOOK = """
import os, re, sys, threading, time
from pathlib import Path
from emolib.book.runner import execute_notebook, load_profile, notebook_parameters

out, data = Path(sys.argv[1]), sys.argv[2]
partial = out / ".01_dataprep.partial.ipynb"


def watch():  # the cell after prepare_dataset has run: its output is in the notebook
    while True:
        if partial.is_file() and re.search(r"Prepared \\*\\*\\d+\\*\\*",
                                           partial.read_text(errors="ignore")):
            print(f"half executed by {os.getpid()}", flush=True)
            time.sleep(600)
        time.sleep(0.05)


threading.Thread(target=watch, daemon=True).start()
params = {**notebook_parameters(load_profile("smoke"), "01_dataprep"), "data_dir": data}
execute_notebook("01_dataprep", params, output_dir=out, progress=False)
"""


def _wait_for_kernels_of(parent: int, timeout: float = 60.0) -> None:
    """Wait until no kernel started by process ``parent`` (``JPY_PARENT_PID``) is alive: an
    orphaned kernel notices that its parent is gone and exits by itself."""
    import time
    from pathlib import Path

    def alive() -> list[str]:
        out = []
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                env = (proc / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"JPY_PARENT_PID={parent}".encode() in env:
                out.append(proc.name)
        return out

    deadline = time.monotonic() + timeout
    while (left := alive()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"kernels {left} of the killed run {parent} still run"


@pytest.mark.slow
def test_killed_book_run_leaves_no_half_executed_notebook(tmp_path, smoke_book):
    """SIGKILL of the runner half way through a notebook: the book folder holds no
    ``<name>.ipynb`` (the book cannot render a half-executed chapter), and the rerun ends with
    the files of the uninterrupted smoke run, reusing the stage's finished outputs."""
    from emolib.testing import kill_when

    book, data = tmp_path / "book", tmp_path / "data"
    said = kill_when(KILLED_BOOK, "half executed", [book, data])
    _wait_for_kernels_of(int(re.search(r"half executed by (\d+)", said).group(1)))
    assert not (book / "01_dataprep.ipynb").exists()
    assert (book / ".01_dataprep.partial.ipynb").exists()
    params = {**notebook_parameters(SMOKE, "01_dataprep"), "data_dir": str(data)}
    out = execute_notebook("01_dataprep", params, output_dir=book, progress=False)
    assert sorted(p.name for p in book.iterdir()) == ["01_dataprep.ipynb"]
    text = out.read_text()
    assert "was reused: it was made from the same parameters" in text
    ref = smoke_book["data"] / "derived" / "smoke" / "01_dataprep"
    stage = data / "derived" / "smoke" / "01_dataprep"
    files = sorted(str(p.relative_to(stage)) for p in stage.rglob("*"))
    assert files == sorted(str(p.relative_to(ref)) for p in ref.rglob("*"))
    for name in ("volumes.npy", "samples.csv", "labels.csv", "inputs.json"):
        if name == "inputs.json":  # paths of the two data folders differ
            a, b = (json.loads((d / name).read_text())["files"] for d in (stage, ref))
            assert list(a.values()) == list(b.values())
        else:
            assert (stage / name).read_bytes() == (ref / name).read_bytes(), name


def test_methods_text_says_how_volumes_were_standardised():
    from emolib.book.methods import describe_volumes

    run = describe_volumes(12, {"standardize": "run", "smoothing_fwhm": 7.0, "mask": None})
    assert "detrended and z-scored over all volumes of its run" in run
    assert "7 mm FWHM" in run
    original = describe_volumes(12, {"standardize": "volume", "mask": None})
    assert "by their own mean and standard deviation over the whole volume" in original
    assert "smoothed" not in original
    assert "inside a brain mask (`epi`)" in describe_volumes(12, {"mask": "epi"})


def test_methods_text_names_the_window_networks():
    from emolib.book.methods import describe_windows

    assert "has not run" in describe_windows({})

    def manifest(window, architecture="cnn", kernel=None, leak=24.5):  # a TR of 1.5 s
        return {"parameters": {"kind": "run", "span_s": 20.0, "window": window,
                               "sample_window": [-1, 0, 1, 2],
                               "config": {"architecture": architecture,
                                          "temporal_kernel": kernel}},
                "outputs": {"leak_span_s": leak}}

    runs = {"09_spacetime": {"parameters": {}, "manifests": {
        "prep": {"parameters": {"window": [-1, 0, 1, 2]}},
        "single": manifest(None), "time": manifest([-1, 0, 1, 2]),
        "space": manifest([-1, 0, 1, 2], "spacetime", 2)}}}
    text = describe_windows(runs)
    assert "windows of 4 consecutive volumes" in text and "offsets -1 to +2" in text
    assert "single-volume CNN" in text and "input channels" in text
    assert "a 2-volume temporal convolution" in text and "(20 s + 4.5 s)" in text
    # a manifest from before the span was recorded: no figure the data did not give
    old = {k: {"parameters": m["parameters"]} for k, m in
           runs["09_spacetime"]["manifests"].items()}
    text = describe_windows({"09_spacetime": {"parameters": {}, "manifests": old}})
    assert "(20 s plus the window's length)" in text
