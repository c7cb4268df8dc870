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

# The phantom datasets the notebooks read at the smoke profile (the notebooks' phantom_* defaults).
PHANTOM := --count 8 --height 64 --frames 16 --seed 0
DATA := data/phantom-camus/phantom.json data/phantom-echonet/phantom.json

.PHONY: help env data test book lab clean

help:
	@echo "make book   set up .venv, render the phantom data, run the notebooks (smoke profile), build the HTML book"
	@echo "make test   set up .venv and run every test (unit tests and the notebooks under nbval)"
	@echo "make lab    open the notebooks in JupyterLab with the project's environment"
	@echo "make data   render the phantom datasets (CAMUS and EchoNet formats) into data/"
	@echo "make clean  remove the book build, the phantom data and caches (keeps .venv)"

$(INSTALLED): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip 2>&1 | $(QUIET_PIP)
	$(BIN)/python -m pip install --quiet -e . 2>&1 | $(QUIET_PIP)
	@touch $@

env: $(INSTALLED)

data: $(DATA)

data/phantom-%/phantom.json: | $(INSTALLED)
	$(BIN)/freeecho phantom --format $* --out data/phantom-$* $(PHANTOM)

test: $(INSTALLED)
	$(BIN)/pytest tests
	$(BIN)/pytest --nbval-lax --nbval-current-env -p no:cacheprovider notebooks

book: $(INSTALLED) $(DATA)
	$(BIN)/jupyter-book build . -W -n --keep-going

lab: $(INSTALLED)
	$(BIN)/jupyter lab notebooks

clean:
	rm -rf _build .pytest_cache data
