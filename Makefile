# The two commands a newcomer needs: `make lab` and `make test` (and `make demo`
# for a headless demo).  Each bootstraps a local virtual environment (.venv) on first use
# and installs only what it needs there; `make test` also installs the system packages
# some tests need (scripts/system-deps.sh: as root with apt-get, else those tests skip).
# Prerequisites: Python >= 3.10 with its venv module, on Linux or macOS.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: lab demo test test-fast bench binder-links clean

$(VENV)/.created:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	touch $@

# shoal with the test extra (pytest, the notebook and browser test tools, joblib, scikit-learn).
$(VENV)/.installed: pyproject.toml $(VENV)/.created
	$(PY) -m pip install -q -e '.[test]'
	touch $@

# The prebuilt JupyterLab extension (labextension/ -> shoal/labextension/, which the package
# ships): scripts/build-labextension.sh builds it with npm, and does nothing when it is newer
# than its sources.  It needs JupyterLab in .venv (either extra has it).
BUILD_LABEXTENSION := PYTHON=$(PY) bash scripts/build-labextension.sh
LABEXT_SOURCES := $(wildcard labextension/src/* labextension/style/*) labextension/package.json labextension/package-lock.json

# shoal with the `lab` extra only (JupyterLab and what the examples use), the
# "Python 3 (shoal)" kernelspec and the dashboard, inside .venv: the server extension is
# enabled by pip, the labextension linked to this checkout's build.
$(VENV)/.lab-installed: pyproject.toml $(VENV)/.created $(LABEXT_SOURCES)
	$(PY) -m pip install -q -e '.[lab]'
	$(BUILD_LABEXTENSION)
	$(PY) -m shoal kernel install --sys-prefix
	mkdir -p $(VENV)/share/jupyter/labextensions && rm -rf $(VENV)/share/jupyter/labextensions/shoal
	ln -s $(abspath shoal/labextension) $(VENV)/share/jupyter/labextensions/shoal
	touch $@

# JupyterLab on examples/, opening the quickstart; LAB_ARGS adds options (e.g. --no-browser --port 8899).
lab: $(VENV)/.lab-installed
	cd examples && $(abspath $(PY)) -m jupyterlab $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS) 01-quickstart.ipynb

demo: $(VENV)/.lab-installed
	$(PY) examples/demo.py

test: $(VENV)/.installed
	bash scripts/system-deps.sh
	$(BUILD_LABEXTENSION)
	$(PY) -m pytest -q -p no:cacheprovider

test-fast: $(VENV)/.installed
	$(BUILD_LABEXTENSION)
	$(PY) -m pytest -q -m "not slow" -p no:cacheprovider

bench: $(VENV)/.installed
	bash benchmarks/setup-peers.sh
	$(PY) benchmarks/run.py

# README's and docs' Binder links, made from pyproject.toml's [project.urls] Repository.
binder-links:
	$(PYTHON) scripts/binder_links.py

clean:
	rm -rf $(VENV) build *.egg-info
