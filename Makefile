# The two commands a newcomer needs: `make demo` and `make test`.
# Each bootstraps a local virtual environment (.venv) on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test test-fast bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	$(PY) examples/demo.py

test: $(VENV)/.installed
	bash scripts/system-deps.sh
	$(PY) -m pytest -q -p no:cacheprovider

test-fast: $(VENV)/.installed
	$(PY) -m pytest -q -m "not slow" -p no:cacheprovider

bench: $(VENV)/.installed
	bash benchmarks/setup-peers.sh
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) build *.egg-info
