"""The built smoke book as a published paper: launch buttons that open, no machine paths,
code folded (the browser checks of the same book are in ``test_book_browser.py``)."""

from __future__ import annotations

import re
import subprocess

import pytest

from emolib.book.publish import (
    book_repository,
    check_launch_links,
    launch_links,
    published_files,
    stage_published_tree,
)
from emolib.paths import REPO_ROOT
from tests.conftest import NOTEBOOKS

pytestmark = pytest.mark.slow


def test_every_launch_link_opens_a_file_the_publishing_step_produces(built_book, smoke_book,
                                                                     tmp_path):
    repo = book_repository()
    files = published_files(smoke_book["book"])
    for name in NOTEBOOKS:
        assert f"{repo.path_to_book}/{name}.ipynb" in files
    links = launch_links(built_book)
    for name in NOTEBOOKS:  # every chapter opens in Colab and in Binder (JupyterLab)
        on_page = [u for page, u in links if page == f"{name}.html"]
        assert any("colab.research.google.com" in u for u in on_page), name
        assert any("mybinder.org" in u and "lab/tree" in u for u in on_page), name
    assert check_launch_links(built_book, files) == []
    # what the publish step writes is that tree, executed chapters included, and a commit
    # of everything in it (as the push action makes: git add --all) holds every link target
    tree = tmp_path / "tree"
    stage_published_tree(tree, smoke_book["book"])
    assert (tree / repo.path_to_book / f"{NOTEBOOKS[0]}.ipynb").read_bytes() == (
        smoke_book["book"] / f"{NOTEBOOKS[0]}.ipynb").read_bytes()
    subprocess.run(["git", "init", "-q"], cwd=tree, check=True)
    subprocess.run(["git", "add", "--all"], cwd=tree, check=True)
    committed = subprocess.run(["git", "ls-files"], cwd=tree, check=True, capture_output=True,
                               text=True).stdout.split()
    assert check_launch_links(built_book, committed) == []
    assert "binder/requirements.txt" in committed
    # and a link to a file the step does not produce is reported
    missing = [f for f in files if f != f"{repo.path_to_book}/{NOTEBOOKS[0]}.ipynb"]
    problems = check_launch_links(built_book, missing)
    assert problems and all(f"{NOTEBOOKS[0]}.ipynb" in p for p in problems)


def test_no_path_of_the_building_machine_in_the_html(built_book, smoke_book):
    """The reader's page shows paths relative to the data folder, never the absolute ones of
    the machine that built the book (here: its data folder, the repository, the temp folder)."""
    forbidden = {str(smoke_book["data"]), str(REPO_ROOT), str(smoke_book["book"].parent)}
    found = []
    # the pages, and the notebooks published beside them (download buttons, launch branch)
    published = [*built_book.glob("*.html"), *(built_book / "_sources").glob("*.ipynb")]
    assert len(published) > len(NOTEBOOKS)
    for page in sorted(published):
        text = page.read_text(errors="ignore")
        found += [f"{page.name}: {bad}" for bad in forbidden if bad in text]
    assert not found, found
    # what the data folder is called instead
    assert "&lt;data&gt;/derived/smoke/01_dataprep" in (built_book / "01_dataprep.html"
                                                         ).read_text()


def test_code_is_folded_and_the_parameters_summary_shown(built_book):
    for name in NOTEBOOKS:
        html = (built_book / f"{name}.html").read_text()
        cells = re.findall(r'<div class="(cell [^"]*)"', html)
        open_cells = [c for c in cells if "tag_hide-input" not in c]
        assert cells and not open_cells, (name, open_cells)
        assert "Parameters of this run" in html


def test_the_book_has_an_execution_report(built_book):
    html = (built_book / "execution.html").read_text()
    for name in NOTEBOOKS:
        assert f"{name}.html" in html, name  # each chapter, linked
    from emolib.book.incremental import device_name

    assert "wall time" in html and device_name() in html
    assert re.search(r"<td><p>\d+ s</p></td>", html)


def test_plotly_is_served_only_to_pages_that_draw_a_figure(built_book):
    """plotly.min.js (3.5 MB, parsed on every page that loads it) is on a page exactly when
    the page has a plotly figure; the smoke book has pages of both kinds."""
    kinds = set()
    for page in built_book.glob("*.html"):
        html = page.read_text(errors="ignore")
        draws = "plotly-graph-div" in html
        loads = re.search(r'<script[^>]+src="[^"]*plotly\.min\.js', html) is not None
        assert loads == draws, f"{page.name}: draws a figure {draws}, loads plotly {loads}"
        kinds.add(draws)
    assert kinds == {True, False}
