# Two commands do all set-up: `make run` (a node on 127.0.0.1:8000 with the
# embedded store) and `make test` (the whole suite). Both create .venv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STORE  ?= var/idnode.db
PREFIX ?= 88.100.1
HOST   ?= 127.0.0.1
PORT   ?= 8000

.PHONY: run test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Installed marker: reinstall when the project metadata changes.
$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[bench,dev,postgres,redis]'
	touch $@ $(VENV)/.installed-run

$(STORE): | $(VENV)/.installed-run
	$(BIN)/idnode init --store $(STORE) --prefix $(PREFIX) --if-new

run: $(VENV)/.installed-run $(STORE)
	$(BIN)/idnode serve --store $(STORE) --host $(HOST) --port $(PORT)

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -q
	$(BIN)/ruff check .
	$(BIN)/mypy protocol registry resolver

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/mypy protocol registry resolver

bench: $(VENV)/.installed-dev
	$(BIN)/python -m bench.core --preload 100000

clean:
	rm -rf $(VENV) var .pytest_cache
