"""What a publication needs beside the book, checked offline: licence, citation metadata, the
GitHub workflows, the Binder/NeuroLibre files, the MyST configuration and the JOSS-style paper.
(What needs the network, the deploy itself, the link check and a NeuroLibre build, does not run
here.)"""

from __future__ import annotations

import importlib.util
import json
import re
import tomllib

import yaml

from emolib.paths import REPO_ROOT


def _bib_keys(text: str) -> dict[str, str]:
    """BibTeX key -> DOI of every entry."""
    out = {}
    for m in re.finditer(r"@\w+\{([^,]+),(.*?)\n\}", text, flags=re.S):
        doi = re.search(r"doi\s*=\s*\{([^}]+)\}", m.group(2))
        out[m.group(1).strip()] = doi.group(1) if doi else ""
    return out


def test_licence_is_the_one_pyproject_declares():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"]["text"] == "MIT"
    text = (REPO_ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "Permission is hereby granted" in text


def test_citation_metadata_cites_this_work_and_the_datasets():
    cff = yaml.safe_load((REPO_ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["license"] == "MIT"
    assert cff["title"] and cff["authors"] and cff["repository-code"]
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert str(cff["version"]) == project["version"]
    dois = {r.get("doi") for r in cff["references"]}
    bib = _bib_keys((REPO_ROOT / "book" / "references.bib").read_text())
    for key in ("Hanke2014", "Hanke2016", "Labs2015", "Chang2019"):  # the studies' data
        assert bib[key] in dois, key
    assert any("ds000113" in str(r.get("repository", "")) for r in cff["references"])
    url = yaml.safe_load((REPO_ROOT / "_config.yml").read_text())["repository"]["url"]
    assert cff["repository-code"] == url


def _make_targets() -> set[str]:
    text = (REPO_ROOT / "Makefile").read_text()
    return set(re.findall(r"^([a-z][\w-]*):", text, flags=re.M))


def test_workflows_call_what_exists():
    """Each workflow parses, and every ``make`` target and ``python -m`` module it runs is
    one of the project's."""
    folder = REPO_ROOT / ".github" / "workflows"
    flows = sorted(folder.glob("*.yml"))
    assert {p.stem for p in flows} >= {"tests", "publish-book", "link-check"}
    targets = _make_targets()
    for path in flows:
        flow = yaml.safe_load(path.read_text())
        assert flow["jobs"], path.name
        for job in flow["jobs"].values():
            for step in job.get("steps", []):
                run = step.get("run", "")
                for target in re.findall(r"\bmake (?:-\S+ )*([a-z][\w-]*)", run):
                    assert target in targets, f"{path.name}: make {target}"
                for module in re.findall(r"python -m ([\w.]+)", run):
                    assert importlib.util.find_spec(module), f"{path.name}: {module}"
    publish = yaml.safe_load((folder / "publish-book.yml").read_text())
    steps = [s for job in publish["jobs"].values() for s in job.get("steps", [])]
    branch = yaml.safe_load((REPO_ROOT / "_config.yml").read_text())["repository"]["branch"]
    pushes = [s for s in steps if "publish_branch" in s.get("with", {})]
    assert pushes and pushes[0]["with"]["publish_branch"] == branch  # what the buttons open
    assert any(s.get("uses", "").startswith("actions/deploy-pages") for s in steps)


def test_binder_and_neurolibre_files():
    binder = REPO_ROOT / "binder"
    assert (binder / "runtime.txt").read_text().strip() == "python-3.11"
    assert "-r ../requirements.txt" in (binder / "requirements.txt").read_text().splitlines()
    post = (binder / "postBuild").read_text()
    assert post.startswith("#!") and "pip install --no-deps -e ." in post
    data = json.loads((binder / "data_requirement.json").read_text())
    assert {"src", "dst", "projectName"} <= set(data)
    assert data["src"].startswith("https://")


def test_myst_config_renders_the_chapters_of_the_jupyter_book_toc():
    myst = yaml.safe_load((REPO_ROOT / "myst.yml").read_text())
    assert myst["version"] == 1 and myst["site"]["template"]
    files = [e["file"] for e in myst["project"]["toc"]]
    toc = yaml.safe_load((REPO_ROOT / "_toc.yml").read_text())
    chapters = [toc["root"], *(c["file"] for c in toc["chapters"])]
    assert [f.removeprefix("book/").rsplit(".", 1)[0] for f in files] == chapters
    for f in files:
        if f == "book/execution.md":  # written by the runner (emolib.book.incremental)
            continue
        if f.endswith(".md"):
            assert (REPO_ROOT / f).is_file(), f
        else:  # executed notebooks: written by the runner from notebooks/
            assert (REPO_ROOT / "notebooks" / f.removeprefix("book/")).with_suffix(
                ".py").is_file(), f
    for bib in myst["project"]["bibliography"]:
        assert (REPO_ROOT / bib).is_file()


def test_paper_cites_only_what_its_bibliography_holds():
    text = (REPO_ROOT / "paper.md").read_text()
    front = yaml.safe_load(text.split("---")[1])
    assert front["title"] and front["authors"] and front["bibliography"] == "paper.bib"
    keys = set(_bib_keys((REPO_ROOT / "paper.bib").read_text()))
    cited = set(re.findall(r"@([A-Za-z]+\d{4})", text))
    assert cited and cited <= keys, cited - keys
    for heading in ("# Summary", "# Statement of need", "# References"):
        assert heading in text


def test_readme_points_nowhere_outside_the_repository():
    text = (REPO_ROOT / "README.md").read_text()
    assert "../shared" not in text
    assert (REPO_ROOT / "DESIGN.md").is_file() and "DESIGN.md" in text
