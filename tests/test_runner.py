"""The book runner: failures named by notebook and cell, incremental reruns, failure
collection and parameter checks (papermill and profiles).

Apart from ``tests/test_notebooks.py`` because none of these tests reads the session's
smoke book: ``make test``'s scheduler (``tests/conftest.py``) keeps the smoke book's files on
one worker, and these run on any.
"""

import json
import subprocess
import sys

import nbformat
import pytest
import yaml

from emolib.book.params import ParameterError, check_parameters
from emolib.book.runner import (
    NOTEBOOKS_DIR,
    NotebookFailed,
    execute_notebook,
    run_profile,
    to_ipynb,
)
from tests.conftest import SMOKE


def test_failing_notebook_names_notebook_and_cell(tmp_path):
    with pytest.raises(NotebookFailed, match=r"notebooks/01_dataprep.py failed in cell \d+"):
        execute_notebook("01_dataprep", {"source": "no-such-source", "data_dir": str(tmp_path)},
                         output_dir=tmp_path, progress=False)


@pytest.mark.slow
def test_runner_skips_unchanged_notebooks_and_collects_every_failure(tmp_path):
    """A second run with nothing changed runs nothing and says so; a changed parameter runs
    the notebook again, naming the change; a run on a Dask cluster gives the same outputs and
    cache; failures are all collected before the runner exits (from the cluster's workers
    too), and the execution report says what happened to each chapter."""
    import os
    import time

    from distributed import Client

    from emolib.book.incremental import write_execution_report
    from emolib.tasks import local_cluster, threads_per_task

    book, data = tmp_path / "book", tmp_path / "data"
    own = dict(SMOKE["notebooks"]["01_dataprep"])
    profile = tmp_path / "inc.yaml"

    def write(notebooks):
        profile.write_text(yaml.safe_dump({"name": "inc", "common": {
            "profile": "inc", "seed": 0, "progress": False, "data_dir": str(data)},
            "notebooks": notebooks}))

    write({"01_dataprep": own})
    first = run_profile(str(profile), build=False, progress=False, book_dir=book)
    assert first == {"01_dataprep": {"status": "run", "reason": "never run"}}
    t0 = time.perf_counter()
    again = run_profile(str(profile), build=False, progress=False, book_dir=book)
    assert again["01_dataprep"]["status"] == "cached"
    assert time.perf_counter() - t0 < 10  # no kernel started
    # forced, and as a task on a 2-worker local Dask cluster: the same outputs, byte for
    # byte; where it ran is no input of the cache (the next run on threads reuses it)
    stage = data / "derived" / "inc" / "01_dataprep"
    outputs = ("volumes.npy", "samples.csv", "labels.csv")
    before = {f: (stage / f).read_bytes() for f in outputs}
    forced = run_profile(str(profile), build=False, progress=False, book_dir=book, force=True,
                         workers=2)
    assert forced["01_dataprep"] == {"status": "run", "reason": "--force"}
    assert {f: (stage / f).read_bytes() for f in outputs} == before
    assert run_profile(str(profile), build=False, progress=False,
                       book_dir=book)["01_dataprep"]["status"] == "cached"
    write({"01_dataprep": {**own, "effect_size": 0.2}})
    changed = run_profile(str(profile), build=False, progress=False, book_dir=book)
    assert changed["01_dataprep"]["status"] == "run"
    assert "parameters.effect_size: 0.1 -> 0.2" in changed["01_dataprep"]["reason"]
    report = write_execution_report(book, ["01_dataprep", "02_training"]).read_text()
    assert "| {doc}`01_dataprep` | run |" in report and "| 02_training | - |" in report
    # 01 fails, 02 reads it and is not run, 05 reads neither and fails on its own; two
    # chapters at a time, as tasks on a running Dask scheduler: both failures collected from
    # the workers, the skipped one named, the book not built; the workers' own thread
    # settings (which their torch, the folds', reads) untouched by the kernels they started
    write({"01_dataprep": {**own, "source": "no-such-source"},
           "02_training": {"split": "nope"}, "05_bold5000": {"source": "nope"}})
    with local_cluster(2) as cluster, Client(cluster) as client:
        with pytest.raises(NotebookFailed) as err:
            run_profile(str(profile), build=False, progress=False, book_dir=book, jobs=2,
                        scheduler=cluster.scheduler_address)
        envs = client.run(lambda: os.environ.get("OMP_NUM_THREADS"))
    assert list(envs.values()) == [str(threads_per_task(2))] * 2
    message = str(err.value)
    assert message.startswith("2 of 3 notebooks failed (02_training not run: they read them)")
    assert "01_dataprep.py failed in cell" in message
    assert "05_bold5000.py failed in cell" in message
    statuses = json.loads((book / ".execution.json").read_text())
    assert {n: s["status"] for n, s in statuses.items()} == {
        "01_dataprep": "failed", "02_training": "skipped", "05_bold5000": "failed"}
    assert statuses["02_training"]["reason"] == "needs 01_dataprep, which did not run"
    assert (book / "01_dataprep.ipynb").is_file()  # the last good page stays
    assert (book / "01_dataprep.failed.ipynb").is_file()


def test_a_kernel_gets_its_own_environment_and_this_process_keeps_its(tmp_path, monkeypatch):
    """``kernel_env`` (a chapter on a Dask worker: the driver's thread settings) reaches the
    kernel, set or removed, and only the kernel: the process that started it (a worker whose
    torch the folds use) keeps its own settings. ``recorded_as`` (the book's scheduler) is
    what the published page and the stage record hold, the run's own value in a comment."""
    import os

    import emolib.book.execute as execute

    (tmp_path / "00_env.py").write_text(
        '# %% tags=["parameters"]\nprofile = "x"\ndata_dir = None\nscheduler = None\n'
        "# %%\nimport os\nprint('OMP', os.environ.get('OMP_NUM_THREADS'),"
        " 'MKL', os.environ.get('MKL_NUM_THREADS'))\n")
    monkeypatch.setattr(execute, "NOTEBOOKS_DIR", tmp_path)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MKL_NUM_THREADS", "1")
    address = "tcp://127.0.0.1:1"
    out = execute.execute_notebook(
        "00_env", {"profile": "env", "data_dir": str(tmp_path / "data"), "scheduler": address},
        output_dir=tmp_path / "book", progress=False, recorded_as={"scheduler": None},
        kernel_env={"OMP_NUM_THREADS": "3", "MKL_NUM_THREADS": None})
    nb = nbformat.read(out, as_version=4)
    assert nb.cells[-1].outputs[0]["text"].strip() == "OMP 3 MKL None"
    assert os.environ["OMP_NUM_THREADS"] == "1" and os.environ["MKL_NUM_THREADS"] == "1"
    # where it ran is not published as a value to run with, nor recorded for the stage
    injected = next(c.source for c in nb.cells if "injected-parameters" in c.metadata.get(
        "tags", []))
    assert f"scheduler = None  # this run's, on the book's Dask cluster: {address!r}" in injected
    recorded = json.loads((tmp_path / "data" / "derived" / "env" / "00_env" /
                           "parameters.json").read_text())
    assert recorded["scheduler"] is None


def test_chapters_that_may_run_beside_others_get_kernels_that_do_not_spin(tmp_path,
                                                                         monkeypatch):
    """With ``jobs=2`` each kernel's OpenMP threads sleep while they wait, except a chapter's
    that runs alone; one after another (``jobs=1``) a kernel keeps the default, and a policy
    the user set is never replaced."""
    import emolib.book.execute as execute
    import emolib.book.runner as runner
    from emolib.tasks import sharing_environment

    for name, header in (("01_a", "needs: []"), ("02_b", "needs: []"),
                         ("03_c", "needs: []\n#     alone: true")):
        (tmp_path / f"{name}.py").write_text(
            f"# ---\n# jupyter:\n#   emolib:\n#     {header}\n# ---\n\n"
            '# %% tags=["parameters"]\nprofile = "x"\ndata_dir = None\n'
            "# %%\nimport os\nprint(os.environ.get('OMP_WAIT_POLICY'))\n")
    for module in (execute, runner):
        monkeypatch.setattr(module, "NOTEBOOKS_DIR", tmp_path)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    profile = tmp_path / "share.yaml"
    profile.write_text(yaml.safe_dump({"name": "share", "common": {
        "profile": "share", "data_dir": str(tmp_path / "d")},
        "notebooks": {"01_a": {}, "02_b": {}, "03_c": {}}}))

    def printed(book, name):
        nb = nbformat.read(book / f"{name}.ipynb", as_version=4)
        return nb.cells[-1].outputs[0]["text"].strip()

    run_profile(str(profile), build=False, progress=False, book_dir=tmp_path / "b", jobs=2)
    assert [printed(tmp_path / "b", n) for n in ("01_a", "02_b", "03_c")] == [
        "PASSIVE", "PASSIVE", "None"]
    run_profile(str(profile), only=["01_a"], build=False, progress=False,
                book_dir=tmp_path / "one", jobs=1)
    assert printed(tmp_path / "one", "01_a") == "None"
    assert sharing_environment({"OMP_WAIT_POLICY": "ACTIVE"}) == {}
    assert sharing_environment({}) == {"OMP_WAIT_POLICY": "PASSIVE"}


def test_chapters_that_train_folds_are_sent_to_the_books_cluster():
    """On a cluster, a chapter that declares ``scheduler`` gets the book's (and no local
    cluster of its own) with the fold thread count its own cluster would have used, and
    records what a run on threads records; one whose profile trains in its kernel, the
    others, and every chapter without a cluster, get nothing."""
    from emolib.book.cluster import engine_parameters
    from emolib.book.runner import declared_parameters
    from emolib.tasks import threads_per_task

    address = "tcp://10.0.0.1:8786"
    training = declared_parameters("02_training")
    assert engine_parameters(training, {"epochs": 2}, address) == (
        {"scheduler": address, "workers": None,
         "threads": threads_per_task(training["workers"])},
        {"scheduler": training["scheduler"], "workers": training["workers"],
         "threads": training["threads"]})
    assert engine_parameters(training, {"workers": 3, "threads": 5}, address) == (
        {"scheduler": address, "workers": None, "threads": 5},
        {"scheduler": None, "workers": 3, "threads": 5})
    assert engine_parameters(training, {"workers": None}, address) == ({}, {})  # in-kernel
    assert engine_parameters(training, {"workers": None, "scheduler": "tcp://lab:1"},
                             address)[0]["scheduler"] == address
    assert engine_parameters(declared_parameters("01_dataprep"), {}, address) == ({}, {})
    assert engine_parameters(training, {}, None) == ({}, {})
    with pytest.raises(ValueError, match="not both"):
        run_profile("smoke", build=False, workers=2, scheduler=address)


def test_declared_needs_cover_every_stage_a_chapter_reads():
    """Each chapter's header lists (emolib.needs) every stage whose folder it opens for
    reading, so that the runner neither starts it early nor reuses it after they changed;
    only the performance chapter runs alone."""
    import re

    from emolib.book.runner import chapter_alone, chapter_needs, chapters

    names = chapters()
    for name in names:
        source = (NOTEBOOKS_DIR / f"{name}.py").read_text()
        read = set(re.findall(r'get_derived_dir\(\s*"(\d\d_\w+)"[^)]*create=False', source))
        assert read <= set(chapter_needs(name, names)), name
        assert name not in chapter_needs(name, names)
    assert chapter_needs("05_bold5000", names) == []
    assert set(chapter_needs("06_methods", names)) == set(names) - {"06_methods"}
    assert [n for n in names if chapter_alone(n)] == ["07_performance"]


def test_a_chapter_that_runs_alone_still_runs_when_others_are_skipped(tmp_path, monkeypatch):
    """01 fails; 02 (after it in the profile, reading it) is skipped; 05, made to run alone
    and placed between them, runs once nothing else can: no false deadlock."""
    import emolib.book.runner as runner

    monkeypatch.setattr(runner, "chapter_alone", lambda name: name == "05_bold5000")
    own = dict(SMOKE["notebooks"]["01_dataprep"])
    profile = tmp_path / "alone.yaml"
    profile.write_text(yaml.safe_dump({"name": "alone", "common": {
        "profile": "alone", "seed": 0, "progress": False, "data_dir": str(tmp_path / "d")},
        "notebooks": {"01_dataprep": {**own, "source": "no-such-source"},
                      "05_bold5000": {"source": "nope"}, "02_training": {}}}))
    with pytest.raises(NotebookFailed, match=r"^2 of 3 notebooks failed \(02_training not"):
        run_profile(str(profile), build=False, progress=False, book_dir=tmp_path / "b",
                    jobs=2)


def test_chapters_that_need_each_other_are_refused(tmp_path, monkeypatch):
    """A cycle in the declared needs is an error before anything runs, not a hang."""
    import emolib.book.runner as runner

    real = runner.chapter_needs
    monkeypatch.setattr(runner, "chapter_needs", lambda name, names: (
        ["02_training"] if name == "01_dataprep" else real(name, names)))
    profile = tmp_path / "cycle.yaml"
    profile.write_text(yaml.safe_dump({"name": "cycle", "common": {"profile": "cycle"},
                                       "notebooks": {"01_dataprep": {}, "02_training": {}}}))
    with pytest.raises(ValueError, match="chapters that need each other"):
        run_profile(str(profile), build=False, progress=False, book_dir=tmp_path / "book")


def test_check_parameters_reads_papermill_injected_cell():
    params = 'epochs: int = 50  # epochs\nlr = 1e-3\nfolds: Optional[list] = None\n'
    check_parameters("nb", ["", "import x", params, "# Parameters\nepochs = 3\nlr = 0.1\n",
                            "check()"])
    check_parameters("nb", ["", params, "check()"])  # nothing injected: nothing to check
    with pytest.raises(ParameterError, match=r"nb: unknown parameter 'epoch' \(did you mean "
                                             r"'epochs'\?\)"):
        check_parameters("nb", ["", params, "# Parameters\nepoch = 3\n", "check()"])


def test_misspelt_parameter_is_refused_by_plain_papermill(tmp_path):
    """`papermill ... -p epoch 3`: the notebook stops at its check cell, before any work
    (nothing is written under the data folder it was given)."""
    src = tmp_path / "02_training.ipynb"
    nbformat.write(to_ipynb(NOTEBOOKS_DIR / "02_training.py"), src)
    data = tmp_path / "data"
    proc = subprocess.run(
        [sys.executable, "-m", "papermill", str(src), str(tmp_path / "out.ipynb"),
         "-p", "epoch", "3", "-p", "data_dir", str(data), "--no-progress-bar"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode != 0
    assert "unknown parameter 'epoch' (did you mean 'epochs'?)" in proc.stdout + proc.stderr
    assert not data.exists()


def test_misspelt_profile_parameter_fails_before_any_notebook_runs(tmp_path):
    profile = tmp_path / "typo.yaml"
    for body, match in (
        ({"common": {"seed": 0}, "notebooks": {"01_dataprep": {"n_subject": 2},
                                              "02_training": {}}},
         r"notebook 01_dataprep: unknown parameter 'n_subject' \(did you mean 'n_subjects'"),
        ({"common": {"sed": 0}, "notebooks": {"01_dataprep": {}}},
         r"common \(declared by no notebook\): unknown parameter 'sed' \(did you mean "
         r"'seed'"),
        ({"common": {}, "notebooks": {"01_dataprep": {}, "08_honesty": {"calibration": 4}}},
         r"notebook 08_honesty: unknown parameter 'calibration' \(did you mean "
         r"'calibration_n'"),
    ):
        profile.write_text(yaml.safe_dump({"name": "typo", **body}))
        with pytest.raises(ParameterError, match=match):
            run_profile(str(profile), build=False, progress=False)
