#!/usr/bin/env bash
# The RAPIDS API contract, without a GPU: every cuDF / cuML / CuPy / cupyx / FAISS name and keyword that
# gpuclust uses must exist in the newest wheels (scripts/rapids_contract.py says how the uses are found).
# The wheels live in their own venv, .rapids-venv/ (ignored by git), made on the first run and refreshed
# when the requirement set below changes or a week has passed, so "newest" stays true on a cached venv.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${RAPIDS_VENV:-.rapids-venv}
# faiss-gpu-cu12 is what the `gpu-cu12` extra installs (gpu-cu13 has no FAISS GPU wheel): faiss-cpu's Python names plus the GPU ones (knn_gpu, ...).
REQUIREMENTS=(cudf-cu12 cuml-cu12 cupy-cuda12x faiss-gpu-cu12)
# Multi-GPU and friends join once gpuclust imports them (module=wheel); another RAPIDS import the venv
# lacks makes the checker fail with "not installed here", which is the reminder to list it here.
for pair in dask_cudf=dask-cudf-cu12 dask_cuda=dask-cuda cuml.dask=raft-dask-cu12 cuvs=cuvs-cu12 cugraph=cugraph-cu12; do
  if grep -rqE "^\s*(import|from)\s+${pair%%=*}\b" gpuclust; then
    REQUIREMENTS+=("${pair#*=}")
  fi
done

stamp="$VENV/.rapids-contract-stamp"
want="$(printf '%s\n' "${REQUIREMENTS[@]}" | sha256sum | cut -c1-16) $(date -u +%G-W%V)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  start=$SECONDS
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  # The whole dependency closure is needed: libcuml and libcuvs load cuBLAS, cuSOLVER, cuSPARSE, cuFFT,
  # cuRAND and NCCL when cuml is imported, and dropping any of them breaks the import (checked by hand).
  "$VENV/bin/python" -m pip install -q --upgrade "${REQUIREMENTS[@]}"
  echo "$want" > "$stamp"
  echo "rapids contract: installed ${REQUIREMENTS[*]} in $((SECONDS - start)) s ($(du -sh "$VENV" | cut -f1))"
fi

# First the checker must fail on calls known to be wrong, or a pass on the project means nothing.
wrong=tests/data/rapids_contract_wrong.py
expected=$(grep -c "# wrong:" "$wrong")
if out=$("$VENV/bin/python" scripts/rapids_contract.py "$wrong"); then
  echo "$out"
  echo "rapids contract: self-test FAILED: the deliberately wrong calls in $wrong passed" >&2
  exit 1
fi
found=$(grep -c "^FAIL " <<<"$out" || true)
if [ "$found" != "$expected" ]; then
  echo "$out"
  echo "rapids contract: self-test FAILED: $found failures in $wrong, expected $expected" >&2
  exit 1
fi
echo "rapids contract: self-test ok: all $expected deliberately wrong calls in $wrong fail"
echo "$out" | grep -A1 "^FAIL " | sed 's/^/    /'

exec "$VENV/bin/python" scripts/rapids_contract.py gpuclust "$@"
