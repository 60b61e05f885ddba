# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test lint bench clean

$(BIN)/interlink: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

run: $(BIN)/interlink
	$(BIN)/interlink run --config $${INTERLINK_CONFIG:-conf/interlink.yaml}

test: $(BIN)/interlink
	$(BIN)/ruff check .
	tools/ensure-postgres
	tools/ensure-fhir-server
	tools/ensure-chromium
	$(BIN)/pytest

lint: $(BIN)/interlink
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(BIN)/interlink
	$(BIN)/python bench/receive_path.py
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/end_to_end.py

clean:
	rm -rf $(VENV) .venv-fhir var .pytest_cache .ruff_cache
