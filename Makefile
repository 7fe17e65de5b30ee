# Two commands do all set-up on a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

# Offline, quiet defaults (no hub downloads, no analytics; flows/offline.py lists them) for
# the commands run from here; variables already set win. The flows' command lines set them too.
OFFLINE := $(PY) -m flows.offline

.PHONY: demo test lint bench browser clean

# (Re)create the virtual environment when it is missing or older than pyproject.toml.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m flows.embed_corpus

# The browser test needs Debian's chromium; install it when missing and we may.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null; \
	  else echo "chromium missing and cannot be installed here: the browser test will skip"; fi; }

test: $(STAMP) browser
	$(PY) -m ruff check .
	$(OFFLINE) $(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

bench: $(STAMP)
	$(OFFLINE) $(PY) -m benchmarks.cache

clean:
	rm -rf $(VENV) out .pytest_cache
