# Two commands on a fresh machine: `make run` and `make test`. Both set up .venv by themselves.
#   make run   PROFILE=full|cpu|smoke SOURCE=URL|ZIP|DIR   the whole pipeline
#   make smoke                                            the pipeline on synthetic cells, offline
#   make test                                             the test suite (what CI runs)

PYTHON  ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
PROFILE ?= cpu
SOURCE  ?=
BUILD   ?= build
DATA_DIR ?= data
STAMP   := $(VENV)/.installed-stamp

ifeq ($(PROFILE),smoke)
  DATA_DIR := $(BUILD)/synthetic
endif

.PHONY: setup run smoke test lint html clean constraints

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $@

setup: $(STAMP)  ## create .venv and install malaria_lib with its dev tools

run: $(STAMP)  ## fetch, inventory and split (PROFILE=smoke draws synthetic cells instead of fetching)
ifeq ($(PROFILE),smoke)
	$(BIN)/malaria synth --out $(DATA_DIR) --n 400 --quiet || test -d $(DATA_DIR)/cell_images
else
	$(BIN)/malaria fetch --data-dir $(DATA_DIR) $(if $(SOURCE),--source $(SOURCE))
endif
	$(BIN)/malaria inventory --data-dir $(DATA_DIR)
	$(BIN)/malaria split --data-dir $(DATA_DIR) --strategy patient --out $(BUILD)/$(PROFILE)/split_patient
	$(BIN)/malaria split --data-dir $(DATA_DIR) --strategy random --ratios 0.7 0.3 0 --out $(BUILD)/$(PROFILE)/split_random

smoke:  ## the pipeline on synthetic cells; runs offline
	$(MAKE) run PROFILE=smoke

test: $(STAMP)  ## the test suite; real-data tests run when MALARIA_DEV_ZIP names the dev zip
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check malaria_lib tests

html: $(STAMP)
	@echo "html: the notebook series is not written yet (issue 5)"; exit 1

constraints: $(STAMP)  ## re-pin constraints.txt to what .venv holds now
	(echo "# Exact versions the project's results were measured with (pip constraints: they pin, they do not add)."; \
	 echo "# Regenerate with: make constraints"; \
	 $(BIN)/python -m pip freeze --exclude-editable | grep -v -i '^malaria') > constraints.txt

clean:  ## remove build outputs (never the fetched data or .venv)
	rm -rf $(BUILD) .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
