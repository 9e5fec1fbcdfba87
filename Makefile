# The README's two commands: `make book` and `make test`. Both create the project's own
# virtual environment (.venv) on first use and install what they need into it.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROFILE ?= demo
# chapters run at the same time, each once those it reads are done (emolib.book.runner)
JOBS ?= 2
# pip on the project's build machines warns about missing local mirror folders; hide that noise.
PIPFILTER := { grep -v "is ignored: it is neither a file nor a directory" || true; }

.PHONY: book test smoke venv clean chromium lab data linkcheck

venv: $(STAMP)

# pip byte-compiles the installed modules one by one (over 2 minutes here); compileall does
# the same on every core. Never skipped: where PYTHONDONTWRITEBYTECODE is set, nothing would
# be cached, and every process (each notebook kernel, each test worker) would compile torch
# again. compileall's status is ignored: some packages ship files that do not compile.
$(STAMP): requirements.txt pyproject.toml
	@echo ">> creating $(VENV) and installing requirements (first run only, a few minutes)"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --no-compile -r requirements.txt 2>&1 | $(PIPFILTER)
	$(PY) -m compileall -q -j 0 $(VENV)/lib >/dev/null 2>&1 || true
	$(PY) -m pip install --quiet --no-deps -e . 2>&1 | $(PIPFILTER)
	touch $(STAMP)

## Execute every notebook with the demo profile (generated data) and build the book's HTML.
book: $(STAMP)
	$(PY) -m emolib.book --profile $(PROFILE) --jobs $(JOBS)

## The smallest end-to-end book (smoke profile).
smoke: $(STAMP)
	$(PY) -m emolib.book --profile smoke

## Open the project in JupyterLab (from the project's environment): the chapters in notebooks/
## open as notebooks (jupytext pairing). LAB_ARGS: more options, e.g. --no-browser --port=8890.
LAB_ARGS ?=
lab: $(STAMP)
	$(VENV)/bin/jupyter lab --ServerApp.root_dir="$(CURDIR)" $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

## Fetch the real data the paper profile reads (network needed): the Labs et al. annotations,
## ds000113 ses-movie, the BOLD5000 release and the ResNet-50 weights, into <data>/real.
data: $(STAMP)
	$(PY) -m emolib.datasets.fetch all

## Check the book's external links (network needed), on the smoke book.
linkcheck: $(STAMP)
	$(PY) -m emolib.book --profile smoke --no-build
	$(PY) -c "from emolib.book.runner import build_book; build_book(builder='linkcheck', warnings_as_errors=False)"

## Run the test suite on every core (pytest-xdist; offline, seeded; runs every notebook with the smoke profile, builds the
## smoke book and opens every page in headless Chromium, installed here where it is missing).
test: $(STAMP) chromium
	$(PY) -m pytest -n auto --durations=20

chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo ">> installing Chromium for the browser test (apt-get)"; \
	  (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || \
	  echo ">> could not install Chromium: the browser test will be skipped"; }

clean:
	rm -rf book/_build book/*.ipynb book/execution.md book/.execution.json data/derived data/synthetic
