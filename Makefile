# HARweb: `make run` sets up and starts the demo; `make test` sets up and tests.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8000
OPEN_CLIP := open-clip-torch==3.3.0

.PHONY: setup run test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install -q --upgrade pip
	# torch==2.13.0 is pinned in pyproject; constraints.txt pins the rest.
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	# Only for its CLIP BPE vocabulary file; its dependencies (torchvision) are
	# not wanted, and the app never imports it.
	$(BIN)/pip install -q --no-deps $(OPEN_CLIP)
	touch $@

setup: $(VENV)/.installed

run: setup
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py collectstatic --noinput -v0
	$(BIN)/python manage.py setup_demo --queue
	@echo "HARweb on http://127.0.0.1:$(PORT)/ (log in as demo / demo)"
	PORT=$(PORT) $(BIN)/honcho start -f Procfile

test: setup
	bash .ci/browser-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: setup
	$(BIN)/python bench/encode.py --quick
	$(BIN)/python bench/train.py --quick

clean:
	rm -rf var .pytest_cache
