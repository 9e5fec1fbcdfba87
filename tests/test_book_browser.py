"""The smoke book, built and opened page by page in headless Chromium.

Each page must load without script errors, every plotly figure must have drawn (its SVG is
there), math must be typeset by MathJax, every image must have loaded, no request may leave
the machine (only ``file:`` and ``data:`` URLs), and no internal link may point to a missing
page. A full-page screenshot of each page is kept in ``artifacts/screenshots/``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from emolib.paths import REPO_ROOT

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCREENSHOTS = REPO_ROOT / "artifacts" / "screenshots"
LOCAL_SCHEMES = {"file", "data", "about", "blob"}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (make test installs "
                                                "it with apt-get where it can)"),
]


def is_redirect(path: Path) -> bool:
    return 'http-equiv="Refresh"' in path.read_text(errors="ignore")[:2000]


def pages(html_dir: Path) -> list[Path]:
    """The book's content pages (not the generated index/search pages, not redirects)."""
    return sorted(p for p in html_dir.glob("*.html")
                  if p.name not in {"genindex.html", "search.html"} and not is_redirect(p))


def test_every_page_in_a_real_browser(built_book):
    from playwright.sync_api import sync_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    html_pages = pages(built_book)
    assert len(html_pages) >= 5, [p.name for p in html_pages]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        for path in html_pages:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            external, errors = [], []
            page.on("request", lambda r, ext=external: ext.append(r.url)
                    if urlparse(r.url).scheme not in LOCAL_SCHEMES else None)
            page.on("pageerror", lambda e, err=errors: err.append(str(e)))
            page.route(lambda url: urlparse(url).scheme not in LOCAL_SCHEMES,
                       lambda route: route.abort())
            page.goto(path.as_uri(), wait_until="load")
            name = path.name
            n_plots = page.locator("div.plotly-graph-div").count()
            if n_plots:
                try:
                    page.wait_for_function(
                        "() => [...document.querySelectorAll('div.plotly-graph-div')]"
                        ".every(d => d.querySelector('svg.main-svg'))", timeout=20_000)
                except Exception:
                    problems.append(f"{name}: a plotly figure did not draw")
            n_math = page.locator("span.math, div.math").count()
            if n_math:
                try:
                    page.wait_for_function(
                        f"() => document.querySelectorAll('mjx-container').length >= {n_math}",
                        timeout=20_000)
                except Exception:
                    problems.append(f"{name}: {n_math} math elements, MathJax typeset "
                                    f"{page.locator('mjx-container').count()}")
            broken_images = page.evaluate(
                "() => [...document.images].filter(i => !(i.complete && i.naturalWidth > 0))"
                ".map(i => i.getAttribute('src'))")
            problems += [f"{name}: image did not load: {src}" for src in broken_images]
            hrefs = page.evaluate("() => [...document.querySelectorAll('a[href]')]"
                                  ".map(a => a.href)")
            for href in hrefs:
                url = urlparse(href)
                if url.scheme != "file":
                    continue
                target = Path(unquote(url.path))
                if not target.exists():
                    problems.append(f"{name}: broken internal link {href}")
            problems += [f"{name}: request left the machine: {u}" for u in external]
            problems += [f"{name}: script error: {e}" for e in errors]
            page.screenshot(path=str(SCREENSHOTS / f"{path.stem}.png"), full_page=True)
            page.close()
        browser.close()
    assert not problems, "\n".join(problems)


def test_book_pages_exist(built_book):
    index = built_book / "index.html"
    if is_redirect(index):  # Jupyter Book writes index.html as a redirect to the root page
        target = index.read_text().split("url=")[1].split('"')[0]
        assert (built_book / target).is_file()
    names = {p.stem for p in pages(built_book)}
    for expected in ("intro", "01_dataprep", "02_training", "references"):
        assert expected in names
