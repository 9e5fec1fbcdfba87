"""Publishing: the tree the book's launch buttons point at, and a check of those buttons.

The launch buttons of Jupyter Book (Colab, Binder) open ``<path_to_book>/<page>.ipynb`` on
the branch ``repository.branch`` of ``_config.yml`` (sphinx-book-theme builds the URLs from
``repository.url``, ``repository.branch`` and ``repository.path_to_book``). The executed
notebooks are build outputs, ignored by git on ``main``; so the publish workflow
(``.github/workflows/publish-book.yml``) pushes to that branch the tree that
:func:`stage_published_tree` writes: the repository's tracked files (Binder builds its
environment from them) plus the executed notebooks. :func:`check_launch_links` reads the
built HTML and checks that every launch URL names that repository, that branch and a file of
that tree (:func:`published_files`); ``tests/test_book_html.py`` runs it on the built smoke
book.

Usage::

    python -m emolib.book.publish stage OUT_DIR      # the tree for the launch branch
    python -m emolib.book.publish check [HTML_DIR]   # the built book's launch links
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

import yaml

from emolib.paths import REPO_ROOT

__all__ = [
    "BookRepository", "book_repository", "check_launch_links", "launch_links", "main",
    "published_files", "stage_published_tree",
]

_LINK = re.compile(r'href="(https://(?:colab\.research\.google\.com|mybinder\.org)/[^"]+)"')


@dataclass(frozen=True)
class BookRepository:
    """The book's repository (the ``repository`` section of ``_config.yml``)."""

    url: str
    org: str
    repo: str
    branch: str
    path_to_book: str


def book_repository(config: Path = REPO_ROOT / "_config.yml") -> BookRepository:
    """Where the launch buttons point: the ``repository`` section of the book's config."""
    spec = (yaml.safe_load(Path(config).read_text()) or {}).get("repository") or {}
    url = str(spec.get("url", "")).rstrip("/")
    parts = urlparse(url).path.strip("/").split("/")
    if urlparse(url).netloc != "github.com" or len(parts) != 2:
        raise ValueError(f"{config}: repository.url must be https://github.com/<org>/<repo>, "
                         f"got {url!r}")
    return BookRepository(url=url, org=parts[0], repo=parts[1],
                          branch=str(spec.get("branch", "main")),
                          path_to_book=str(spec.get("path_to_book", "")).strip("/"))


def _executed(book_dir: Path) -> list[Path]:
    """The executed chapters in ``book_dir`` (not the runner's hidden or failed files)."""
    return sorted(p for p in Path(book_dir).glob("*.ipynb")
                  if not p.name.startswith(".") and not p.name.endswith(".failed.ipynb"))


def published_files(book_dir: Path, repository: BookRepository | None = None) -> list[str]:
    """Paths (relative to the repository root) of the tree the launch branch holds: the files
    git tracks, plus every executed chapter of ``book_dir`` under ``path_to_book``."""
    repository = repository or book_repository()
    try:
        tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO_ROOT, check=True,
                                 capture_output=True, text=True).stdout.split("\0")
    except (OSError, subprocess.CalledProcessError) as err:
        raise RuntimeError(f"{REPO_ROOT} is not a git checkout (git ls-files failed: {err}); "
                           "publish from a clone of the repository") from None
    prefix = f"{repository.path_to_book}/" if repository.path_to_book else ""
    return sorted({*filter(None, tracked), *(prefix + p.name for p in _executed(book_dir))})


def stage_published_tree(dest: Path, book_dir: Path = REPO_ROOT / "book") -> list[str]:
    """Write the launch branch's tree into ``dest`` (emptied first); returns its files.

    Raises ``FileNotFoundError`` when ``book_dir`` holds no executed chapter: a branch
    without them would make every launch button a 404.
    """
    if not _executed(book_dir):
        raise FileNotFoundError(f"{book_dir} holds no executed notebook: run the book first "
                                "(make book)")
    dest = Path(dest)
    if dest.exists():
        shutil.rmtree(dest)
    repository = book_repository()
    files = published_files(book_dir, repository)
    executed = {p.name: p for p in _executed(book_dir)}
    for rel in files:
        name = Path(rel).name
        src = executed[name] if (Path(rel).parent == Path(repository.path_to_book)
                                 and name in executed) else REPO_ROOT / rel
        if not src.is_file():  # tracked but deleted in the work tree
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / rel)
    # main ignores the executed notebooks; on this branch they are the point: a push that
    # adds everything (git add --all) must take them
    ignore = dest / ".gitignore"
    pattern = f"{repository.path_to_book}/*.ipynb" if repository.path_to_book else "*.ipynb"
    ignore.write_text((ignore.read_text() if ignore.is_file() else "")
                      + f"\n# the launch branch: executed chapters are published\n!{pattern}\n")
    return files


def launch_links(html_dir: Path) -> list[tuple[str, str]]:
    """``(page, url)`` of every Colab and Binder launch link in the built book."""
    out = []
    for page in sorted(Path(html_dir).glob("*.html")):
        for url in _LINK.findall(page.read_text(errors="ignore")):
            out.append((page.name, url.replace("&amp;", "&")))
    return out


def _target(url: str) -> tuple[str, str, str, str] | None:
    """``(org, repo, branch, path)`` a Colab or Binder URL opens, None if not one of those."""
    u = urlparse(url)
    parts = u.path.strip("/").split("/")
    if u.netloc == "colab.research.google.com" and parts[:1] == ["github"] and len(parts) > 5 \
            and parts[3] == "blob":
        return parts[1], parts[2], parts[4], "/".join(parts[5:])
    if u.netloc == "mybinder.org" and parts[:2] == ["v2", "gh"] and len(parts) == 5:
        urlpath = unquote(parse_qs(u.query).get("urlpath", [""])[0])
        path = re.sub(r"^(lab/tree|tree)/", "", urlpath)
        return parts[2], parts[3], parts[4], path
    return None


def check_launch_links(html_dir: Path, files: list[str],
                       repository: BookRepository | None = None) -> list[str]:
    """Every problem with the built book's launch links: a URL to another repository or
    branch than ``_config.yml`` names, or to a file that is not among ``files`` (the tree
    the publishing step produces, :func:`published_files`). Empty when all resolve."""
    repository = repository or book_repository()
    known, problems = set(files), []
    for page, url in launch_links(html_dir):
        target = _target(url)
        if target is None:
            problems.append(f"{page}: unreadable launch URL {url}")
            continue
        org, repo, branch, path = target
        if (org, repo) != (repository.org, repository.repo):
            problems.append(f"{page}: {url} opens {org}/{repo}, not {repository.url}")
        if branch != repository.branch:
            problems.append(f"{page}: {url} opens branch {branch}, not {repository.branch}")
        if path not in known:
            problems.append(f"{page}: {url} opens {path}, which the publishing step does not "
                            "produce")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    stage = sub.add_parser("stage", help="write the launch branch's tree")
    stage.add_argument("out_dir", type=Path)
    stage.add_argument("--book-dir", type=Path, default=REPO_ROOT / "book")
    check = sub.add_parser("check", help="check the built book's launch links")
    check.add_argument("html_dir", type=Path, nargs="?",
                       default=REPO_ROOT / "book" / "_build" / "html")
    check.add_argument("--book-dir", type=Path, default=REPO_ROOT / "book")
    args = parser.parse_args(argv)
    if args.command == "stage":
        files = stage_published_tree(args.out_dir, args.book_dir)
        print(f"{len(files)} files staged in {args.out_dir} for branch "
              f"{book_repository().branch}")
        return 0
    problems = check_launch_links(args.html_dir, published_files(args.book_dir))
    n = len(launch_links(args.html_dir))
    for line in problems:
        print(line, file=sys.stderr)
    print(f"{n} launch links, {len(problems)} problems")
    return 1 if problems or not n else 0


if __name__ == "__main__":
    sys.exit(main())
