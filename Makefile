# The two commands of the README: `make book` (set-up, notebooks at the smoke profile, HTML book)
# and `make test` (all tests). Both create the virtual environment on first use.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
# The machine's pip configuration points at local package folders, some absent: drop those notices.
QUIET_PIP := { grep -v '^WARNING: Location' || true; }

# Scripts the built book serves itself instead of loading them from a CDN (book/offline_assets.sh).
OFFLINE := book/_static/offline
# `make rerun PROFILE=...`: every notebook executed by papermill at that profile into results/<profile>/.
PROFILE ?= gpu-short
NOTEBOOKS := $(sort $(wildcard notebooks/*.ipynb))

# The phantom datasets the notebooks read at the smoke profile (the notebooks' phantom_* defaults).
PHANTOM := --count 8 --height 64 --frames 16 --seed 0
# The cpu profile's phantom (params/cpu.yaml, 01_data): the stored CPU models were trained on it, and the
# notebooks that use them score on its TEST split.
CPU_PHANTOM := --count 60 --height 64 --frames 32 --seed 0
DATA := data/phantom-camus/phantom.json data/phantom-echonet/phantom.json data/cpu/phantom-camus/phantom.json

.PHONY: help env data test browser-test book rerun lab clean

help:
	@echo "make book   set up .venv, render the phantom data, run the notebooks (smoke profile), build the HTML book"
	@echo "make test   set up .venv and run every test (unit tests and the notebooks under nbval)"
	@echo "make lab    open the notebooks in JupyterLab with the project's environment"
	@echo "make browser-test   build the book and check every page in headless Chromium (installs it if missing)"
	@echo "make rerun PROFILE=gpu-short|paper   execute every notebook at that profile into results/<profile>/ (a GPU)"
	@echo "make data   render the phantom datasets (CAMUS and EchoNet formats) into data/"
	@echo "make clean  remove the book build, the phantom data and caches (keeps .venv)"

$(INSTALLED): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip 2>&1 | $(QUIET_PIP)
	$(BIN)/python -m pip install --quiet -e '.[book,test,mhd]' 2>&1 | $(QUIET_PIP)
	@touch $@

env: $(INSTALLED)

data: $(DATA)

data/phantom-%/phantom.json: | $(INSTALLED)
	$(BIN)/freeecho phantom --format $* --out data/phantom-$* $(PHANTOM)

data/cpu/phantom-camus/phantom.json: | $(INSTALLED)
	$(BIN)/freeecho phantom --format camus --out data/cpu/phantom-camus $(CPU_PHANTOM)

# The unit tests and the notebooks (nbval) in one run over TEST_WORKERS processes of one thread each: a test
# module or a notebook stays on one worker (--dist loadscope), so a notebook's cells run in order in one kernel.
TEST_WORKERS ?= 2

test: $(INSTALLED) $(DATA)
	OMP_NUM_THREADS=1 $(BIN)/pytest -n $(TEST_WORKERS) --dist loadscope -p no:cacheprovider \
		--nbval-lax --nbval-current-env notebooks tests --ignore=tests/browser

$(OFFLINE)/require.js:
	book/offline_assets.sh $(OFFLINE)

book: $(INSTALLED) $(DATA) $(OFFLINE)/require.js
	$(BIN)/jupyter-book build . -W -n --keep-going

# Headless Chromium opens every built page: no console errors, figures and animations present, links resolve.
browser-test: book
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		{ apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null; }
	$(BIN)/pytest tests/browser --site _build/html

rerun: $(INSTALLED)
	@test -f params/$(PROFILE).yaml || { echo "no profile params/$(PROFILE).yaml"; exit 2; }
	mkdir -p results/$(PROFILE)
	for nb in $(NOTEBOOKS); do \
		name=$$(basename $$nb .ipynb); \
		$(BIN)/python -c "import sys, yaml; yaml.safe_dump(yaml.safe_load(open('params/$(PROFILE).yaml'))[sys.argv[1]], sys.stdout)" $$name > results/$(PROFILE)/.$$name.yaml; \
		$(BIN)/papermill $$nb results/$(PROFILE)/$$name.ipynb --cwd notebooks -f results/$(PROFILE)/.$$name.yaml || exit 1; \
	done
	rm -f results/$(PROFILE)/.*.yaml
	@echo "stored in results/$(PROFILE)/; rebuild the book (make book) to show them"

lab: $(INSTALLED)
	$(BIN)/jupyter lab notebooks

clean:
	rm -rf _build .pytest_cache data
