# The two commands a newcomer needs: `make lab` and `make test` (and `make demo`
# for a headless demo).  Each bootstraps a local virtual environment (.venv) on first use;
# `make test` also installs the system packages some tests need (scripts/system-deps.sh).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: lab demo test test-fast bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

# The prebuilt JupyterLab extension (shoal/labextension/, shipped in the package), built
# with npm by the repository's script whenever its sources change.
LABEXT_SOURCES := $(wildcard labextension/src/* labextension/style/*) labextension/package.json labextension/package-lock.json
$(VENV)/.labext-built: $(VENV)/.installed $(LABEXT_SOURCES)
	PYTHON=$(PY) bash scripts/build-labextension.sh
	touch $@

# JupyterLab (the `lab` extra), the "Python 3 (shoal)" kernelspec and the dashboard, inside .venv:
# the labextension linked to this checkout's build, the server extension enabled by pip.
$(VENV)/.lab-installed: $(VENV)/.labext-built
	$(PY) -m pip install -q -e '.[lab]'
	$(PY) -m shoal kernel install --sys-prefix
	mkdir -p $(VENV)/share/jupyter/labextensions && rm -rf $(VENV)/share/jupyter/labextensions/shoal
	ln -s $(abspath shoal/labextension) $(VENV)/share/jupyter/labextensions/shoal
	touch $@

# JupyterLab on examples/, opening the quickstart; LAB_ARGS adds options (e.g. --no-browser --port 8899).
lab: $(VENV)/.lab-installed
	cd examples && $(abspath $(PY)) -m jupyterlab $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS) 01-quickstart.ipynb

demo: $(VENV)/.installed
	$(PY) examples/demo.py

test: $(VENV)/.installed
	bash scripts/system-deps.sh
	$(MAKE) $(VENV)/.labext-built
	$(PY) -m pytest -q -p no:cacheprovider

test-fast: $(VENV)/.labext-built
	$(PY) -m pytest -q -m "not slow" -p no:cacheprovider

bench: $(VENV)/.installed
	bash benchmarks/setup-peers.sh
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) build *.egg-info
