"""Shared fixtures: tiny NIfTI images and tiny generated datasets (offline, seeded)."""

from __future__ import annotations

import os

# Under pytest-xdist (make test), each worker gets its share of the cores for the math
# libraries, set before torch or numpy start their thread pools; the processes a test starts
# (notebook kernels, killed-and-resumed children) inherit it, so that a child computes with
# the same thread count as the test comparing against it. Oversubscribed OpenMP threads spin
# against each other: two workers with two threads each ran the suite slower than one.
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    _share = str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(_var, _share)

import nibabel as nib
import numpy as np
import pytest

from emolib.forrest.timing import RunTiming
from emolib.paths import SHARED_ANNOTATIONS_DIR
from emolib.synthetic.forrest import affine_for, generate_studyforrest

#: A tiny movie: 3 runs of 60 volumes that overlap by 8 s, like the real 16-s overlaps.
TINY_TIMING = RunTiming(starts=(0.0, 112.0, 224.0), n_volumes=(60, 60, 60), tr=2.0)


def shuffled_rdms(rdms, seed: int):
    """The same rsatoolbox RDMs in another pattern order (rsatoolbox's own ``reorder``),
    their dtype kept (``reorder`` returns float64)."""
    out = rdms.copy()
    out.reorder(np.random.default_rng(seed).permutation(rdms.n_cond))
    out.dissimilarities = out.dissimilarities.astype(rdms.dissimilarities.dtype)
    return out


def rdms_in_order(rdms, ids):
    """rsatoolbox's ``reorder`` into the order of the pattern ids ``ids`` (float64: exact for
    float32 input): the reference for our alignment by id."""
    pos = {v: k for k, v in enumerate(rdms.pattern_descriptors["id"])}
    out = rdms.copy()
    out.reorder(np.array([pos[v] for v in ids]))
    return out


@pytest.fixture(scope="session")
def real_annotations_dir():
    """The real Labs et al. annotation files (skip if shared/ is not beside the repo)."""
    if not SHARED_ANNOTATIONS_DIR.is_dir():
        pytest.skip("shared/ with the real annotation files is not beside the repository")
    return SHARED_ANNOTATIONS_DIR


def write_bold(path, data, tr=2.0, affine=None, dtype=None):
    """Write a 4D (or 3D) NIfTI image with ``tr`` in the header."""
    data = np.asarray(data)
    affine = affine_for(data.shape[:3]) if affine is None else affine
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm", "sec")
    if data.ndim == 4:
        img.header["pixdim"][4] = tr
    if dtype is not None:
        img.header.set_data_dtype(dtype)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, path)
    return path


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """A generated dataset: 2 subjects, 3 short overlapping runs, 12 x 12 x 10 voxels.

    Its annotations are generated (5 classes) so that it does not depend on shared/.
    """
    out = tmp_path_factory.mktemp("data") / "tiny"
    generate_studyforrest(out, n_subjects=2, shape=(12, 12, 10), timing=TINY_TIMING,
                          effect_size=0.05, seed=1, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_null_dataset(tmp_path_factory):
    """As :func:`tiny_dataset` with nothing planted."""
    out = tmp_path_factory.mktemp("data") / "tiny_null"
    generate_studyforrest(out, n_subjects=2, shape=(12, 12, 10), timing=TINY_TIMING,
                          effect_size=0.05, null=True, seed=1, progress=False)
    return out


# --- the smoke book: every notebook executed once per session, in order ----------------------

from emolib.book.runner import (  # noqa: E402
    NOTEBOOKS_DIR,
    execute_notebook,
    load_profile,
    notebook_parameters,
)

SMOKE = load_profile("smoke")
NOTEBOOKS = sorted(p.stem for p in NOTEBOOKS_DIR.glob("[0-9][0-9]_*.py"))


@pytest.fixture(scope="session")
def smoke_book(tmp_path_factory):
    """Execute every notebook with the smoke profile into a temporary book folder.

    Returns ``{"book": folder of executed notebooks, "data": data folder, "results": name ->
    executed notebook path, or the exception it raised}``. A failing notebook does not stop
    the later ones (they will usually fail too, for want of inputs).
    """
    import time

    from emolib.book.incremental import execution_inputs, record_execution
    from emolib.book.runner import chapter_needs

    root = tmp_path_factory.mktemp("smoke_book")
    data, book = root / "data", root / "book"
    results = {}
    order = list(SMOKE["notebooks"])  # as the runner runs them (the methods chapter last)
    for name in order:
        params = {**notebook_parameters(SMOKE, name), "data_dir": str(data)}
        inputs = execution_inputs(name, params, chapter_needs(name, order), NOTEBOOKS_DIR)
        t0 = time.perf_counter()
        try:
            results[name] = execute_notebook(name, params, output_dir=book, progress=False)
        except Exception as err:  # reported by the test of that notebook
            results[name] = err
        else:
            record_execution(results[name], inputs, time.perf_counter() - t0)
    return {"book": book, "data": data, "results": results}


@pytest.fixture(scope="session")
def built_book(smoke_book):
    """The smoke book rendered by Jupyter Book (warnings as errors); its HTML folder."""
    from emolib.book.runner import build_book, copy_book_sources

    failed = {n: r for n, r in smoke_book["results"].items() if isinstance(r, BaseException)}
    if failed:
        pytest.fail(f"notebooks failed, no book to check: {sorted(failed)}")
    book = copy_book_sources(smoke_book["book"])
    return build_book(book, warnings_as_errors=True).parent


#: Test files that use the smoke book (``smoke_book``, ``built_book``): one xdist worker runs
#: them all, so that the book is executed once. (``--dist loadgroup`` cannot do this here:
#: xdist 3.8 renames node ids in a way pytest 9 ignores, so its groups are never formed.)
BOOK_TEST_FILES = {"tests/test_notebooks.py", "tests/test_book_html.py",
                   "tests/test_book_browser.py"}

try:
    from xdist.scheduler import LoadScopeScheduling
except ImportError:  # pragma: no cover - pytest-xdist is in requirements.txt
    LoadScopeScheduling = None
else:
    class _BookTogether(LoadScopeScheduling):
        """xdist's scope scheduling with two kinds of scope: the smoke book's test files
        together, and every other test on its own (as ``--dist load`` would)."""

        def _split_scope(self, nodeid: str) -> str:
            return "smoke_book" if nodeid.split("::")[0] in BOOK_TEST_FILES else nodeid

    def pytest_xdist_make_scheduler(config, log):
        """``make test`` (``pytest -n auto``): the scheduling of :class:`_BookTogether`."""
        return _BookTogether(config, log)
