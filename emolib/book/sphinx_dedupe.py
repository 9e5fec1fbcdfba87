"""A tiny Sphinx extension: load each script once per page, and plotly only where it draws.

On notebook pages the current Jupyter Book stack (sphinx-book-theme, sphinx-thebe, myst-nb)
adds some scripts twice: the MathJax loader (once deferred, once not) and sphinx-thebe's
inline configuration. Run twice, MathJax registers its components twice and throws errors in
the browser. This extension keeps the first copy of every script (same file, or same inline
body) in each page's context; the book's ``_config.yml`` loads it.

The book serves ``plotly.min.js`` (3.5 MB) from ``_static`` through ``html_js_files``, which
Sphinx puts on every page; a browser then parses it even on pages without a figure (about 2 s
a page in headless Chromium on two cores). Pages whose body has no plotly figure
(``plotly-graph-div``) are served without it.
"""

from __future__ import annotations

__all__ = [
    "setup",
]


PLOTLY_JS = "plotly.min.js"
PLOTLY_MARK = "plotly-graph-div"


def _key(script) -> str:
    filename = getattr(script, "filename", None) or ""
    body = (getattr(script, "attributes", {}) or {}).get("body", "")
    return filename.split("?")[0] if filename else f"inline:{body}"


def dedupe_scripts(app, pagename, templatename, context, doctree) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return
    plotly_needed = PLOTLY_MARK in (context.get("body") or "")
    seen, kept = set(), []
    for script in scripts:
        key = _key(script)
        if key in seen or (key.rsplit("/", 1)[-1] == PLOTLY_JS and not plotly_needed):
            continue
        seen.add(key)
        kept.append(script)
    scripts[:] = kept


def setup(app):
    app.connect("html-page-context", dedupe_scripts, priority=1000)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
