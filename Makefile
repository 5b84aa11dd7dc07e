# The two set-up commands: `make run` and `make test`. Everything they need is installed into .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install build run test lint bench annotate clean

$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "Cython==3.3.1" "setuptools>=68" wheel
	$(PY) -m pip install -q --no-build-isolation -e '.[test,bench]'
	touch $(STAMP)

install: $(STAMP)

build: install
	$(PY) setup.py -q build_ext --inplace

run: build
	$(VENV)/bin/mediarouter serve

test: build
	$(VENV)/bin/ruff check control router bench tests
	$(PY) -m pytest -q -p no:cacheprovider tests

bench: build
	$(PY) -m bench suite

annotate: install
	$(PY) setup.py -q build_ext --inplace --cython-annotate

clean:
	rm -rf build $(VENV) fastpath/*.so fastpath/*.c fastpath/*.html
