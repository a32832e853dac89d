#!/usr/bin/env bash
# Create benchmarks/.venv-peers with the peer frameworks (Ray, Dask, ipyparallel).
# Kept separate from the project's environment on purpose: peers must never become
# shoal dependencies. Idempotent: re-running only installs what is missing.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/.venv-peers"
py="${PYTHON:-python3}"

[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"

# `ray[client]` (Ray Client, no dashboard extras); `dask[distributed]` for LocalCluster.
pkgs=("ray[client]" "dask[distributed]" ipyparallel ipykernel numpy pyarrow joblib)
# shoal's own runtime dependencies too (not shoal itself): the Ray backend's tests run shoal
# from the source tree (PYTHONPATH) in this venv, with a real Ray (tests/ray_env.py).
shoal_deps=$("$venv/bin/python" - "$here/../pyproject.toml" <<'PY'
import re, sys
text = open(sys.argv[1], encoding="utf-8").read()       # no tomllib before Python 3.11
block = re.search(r"^dependencies = \[(.*?)^\]", text, re.M | re.S).group(1)
print(" ".join(re.findall(r'"([^"]+)"', block)))
PY
)
read -r -a shoal_pkgs <<< "$shoal_deps"
pkgs+=("${shoal_pkgs[@]}")
if "$venv/bin/python" -c 'import ray, dask.distributed, ipyparallel, ipykernel, numpy, pyarrow, joblib' 2>/dev/null \
   && "$venv/bin/python" -c 'import grpc, cloudpickle, tornado, ipywidgets, anywidget, jupyter_client, cryptography' 2>/dev/null; then
    echo "peers already installed in $venv"
else
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    "$venv/bin/python" -m pip install --quiet "${pkgs[@]}"
fi
"$venv/bin/python" - <<'PY'
import ray, dask, distributed, ipyparallel, numpy, pyarrow, joblib
print("ray", ray.__version__, "| dask", dask.__version__, "| distributed", distributed.__version__,
      "| ipyparallel", ipyparallel.__version__, "| numpy", numpy.__version__, "| pyarrow", pyarrow.__version__,
      "| joblib", joblib.__version__)
PY
