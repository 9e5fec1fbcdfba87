"""The book machinery: the papermill runner, the methods text written from manifests, the
performance table, and a small Sphinx extension.

Run the book with ``python -m emolib.book --profile demo`` (see :mod:`emolib.book.runner`).
Nothing in the science packages imports this one.
"""

__all__: list[str] = []
