# Two entry points (see README): `make run` and `make test`. Both install into .venv when needed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8501
# The dashboard reads files and writes folders on this machine: it listens on localhost only, and only
# `make run HOST=0.0.0.0` opens it to the network (a plain assignment, so a shell's $HOST never does).
HOST = 127.0.0.1
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install run test chromium

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

# Debian's chromium drives the browser tests and kaleido's figure export (never `playwright install`).
chromium:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium >/dev/null; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq chromium >/dev/null; fi; }

run: install chromium
	$(PY) -m analysis.cli demo text
	@echo "NPEFF Explorer: open http://localhost:$(PORT) (listening on $(HOST); see README, Security)"
	$(PY) -m streamlit run app.py --server.address $(HOST) --server.port $(PORT) --server.headless true \
	  --browser.gatherUsageStats false

test: install chromium
	$(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder --durations=25
