#!/usr/bin/env bash
# Build the prebuilt JupyterLab extension (labextension/ -> shoal/labextension/), which the
# Python package ships: users install it without Node.  Needs node and npm (for the
# @jupyterlab/builder it runs) and JupyterLab in $PYTHON's environment.  `make test`, CI and
# Binder's postBuild run it; it does nothing when the build is newer than its sources.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
out=shoal/labextension/package.json
if [ -f "$out" ] && [ -z "$(find labextension/src labextension/style labextension/package.json \
        labextension/package-lock.json -newer "$out" 2>/dev/null)" ]; then
    exit 0
fi
command -v npm >/dev/null || { echo "build-labextension: npm (Node.js 18+) is needed" >&2; exit 1; }
if [ ! labextension/node_modules/.package-lock.json -nt labextension/package-lock.json ]; then
    (cd labextension && npm ci --no-audit --no-fund --loglevel=error)
fi
# What `jupyter labextension build` ran up to JupyterLab 4.5: @jupyterlab/builder against the
# installed JupyterLab's core (its shared packages and their versions), so the extension
# shares JupyterLab's own copies of them.
core=$("$PYTHON" -c 'import os, jupyterlab; print(os.path.join(os.path.dirname(jupyterlab.__file__), "staging"))')
node labextension/node_modules/@jupyterlab/builder/lib/build-labextension.js --core-path "$core" labextension
test -f "$out"
