#!/usr/bin/env bash
# Create .venv with the CPU set, Dask, the service and the dev tools; a second run reuses it unless
# pyproject.toml or this script changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TORCH=${GPUCLUST_TORCH:-torch==2.13.0}
# PyPI's torch wheels for Linux are CUDA builds (several GB of CUDA libraries); the CPU build lives on
# PyTorch's own index.
CPU_INDEX=${GPUCLUST_TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}
stamp=.venv/.gpuclust-setup
want=$(sha256sum pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch first: the CPU build pip finds on its own (a local CPU wheel, as on the project's CI machines)
# or else the one on PyTorch's CPU index. The project's torch range then accepts it instead of pulling
# a CUDA build. A dry run reads only the chosen wheel's metadata: a CPU build is `+cpu` or needs no CUDA.
is_cpu_build() {
  .venv/bin/python -m pip install -q --dry-run --no-deps --ignore-installed --report - "$@" "$TORCH" 2>/dev/null |
    .venv/bin/python -c 'import json, sys
meta = json.load(sys.stdin)["install"][0]["metadata"]
cuda = [r for r in meta.get("requires_dist", []) if r.startswith(("nvidia-", "cuda-"))]
sys.exit(0 if "+cpu" in meta["version"] or not cuda else 1)'
}
if is_cpu_build; then
  .venv/bin/python -m pip install -q "$TORCH"
else
  echo "setup: installing the CPU build of $TORCH from $CPU_INDEX"
  .venv/bin/python -m pip install -q "$TORCH" --index-url "$CPU_INDEX"
fi
.venv/bin/python -m pip install -q -e ".[cpu,dev,dask,serve]"
echo "$want" > "$stamp"
