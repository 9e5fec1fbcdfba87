"""``python -m emolib.book``: execute the notebooks of a profile and build the book."""

from emolib.book.runner import main

if __name__ == "__main__":
    raise SystemExit(main())
