# Two commands on a fresh machine: `make run` and `make test`. Both set up .venv by themselves.
#   make run   PROFILE=full|cpu|smoke SOURCE=URL|ZIP|DIR   execute the notebook series (build/: notebooks, html, report.json)
#   make smoke                                            the series on synthetic cells, offline
#   make test                                             the series on synthetic cells, then the test suite (what CI runs)
#   make edition SOURCE=ZIP|DIR                           the reader's edition: a cpu reference run rendered to docs/

PYTHON  ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
PROFILE ?= cpu
SOURCE  ?=
BUILD   ?= build
TEST_BUILD := $(BUILD)/test
STAMP   := $(VENV)/.installed-stamp

.PHONY: setup run smoke test lint html edition clean constraints

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $@

setup: $(STAMP)  ## create .venv and install malaria_lib with its dev tools

run: $(STAMP)  ## execute notebooks/ in order with configs/$(PROFILE).yaml; report.json and html/ in $(BUILD)
	$(BIN)/malaria run --profile $(PROFILE) --build $(BUILD) $(if $(SOURCE),--source $(SOURCE))

smoke:  ## the series on synthetic cells; runs offline
	$(MAKE) run PROFILE=smoke

test: $(STAMP)  ## smoke series, unit tests (+ browser check of its HTML), then nbval on the executed notebooks
	$(BIN)/malaria run --profile smoke --build $(TEST_BUILD)
	MALARIA_SERIES_BUILD=$(TEST_BUILD) $(BIN)/python -m pytest --durations=12
	$(BIN)/python -m pytest -p no:cacheprovider --nbval-lax --nbval-current-env \
	  --nbval-sanitize-with tests/nbval_sanitize.cfg $(TEST_BUILD)/notebooks

lint: $(STAMP)
	$(BIN)/ruff check malaria_lib tests benchmarks notebooks

html: $(STAMP)  ## re-render $(BUILD)/notebooks as $(BUILD)/html (make run does it too)
	$(BIN)/malaria html --build $(BUILD)

edition: $(STAMP)  ## the reader's edition: the series with the cpu profile in $(BUILD)/reference, rendered to docs/
	$(BIN)/malaria run --profile cpu --build $(BUILD)/reference $(if $(SOURCE),--source $(SOURCE))
	$(BIN)/malaria edition --build $(BUILD)/reference --out docs

constraints: $(STAMP)  ## re-pin constraints.txt to what .venv holds now
	(echo "# Exact versions the project's results were measured with (pip constraints: they pin, they do not add)."; \
	 echo "# Regenerate with: make constraints"; \
	 $(BIN)/python -m pip freeze --exclude-editable | grep -v -i '^malaria') > constraints.txt

clean:  ## remove build outputs (never the fetched data or .venv)
	rm -rf $(BUILD) .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
