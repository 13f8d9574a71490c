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
# Exit 3 is "not checked": the disk cannot hold the wheels. It is said loudly, never passed off as a pass.
not_checked() {
  echo "rapids contract: NOT CHECKED: $1" >&2
  exit 3
}
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  start=$SECONDS
  made_here=0
  if [ ! -x "$VENV/bin/python" ]; then
    # The venv takes ~7 GB and pip unpacks beside it; with no cache (below) about 8 GB free is enough.
    parent=$(dirname "$VENV")
    mkdir -p "$parent"  # as venv would make it; df needs a folder that exists
    free_gb=$(df -Pk "$parent" | awk 'NR == 2 { print int($4 / 1048576) }')
    if [ "$free_gb" -lt 8 ]; then
      not_checked "$free_gb GB free under $parent; the RAPIDS wheels need about 8 GB (free space, or set RAPIDS_VENV to a larger disk)"
    fi
    "$PY" -m venv "$VENV"
    made_here=1
  fi
  log=$(mktemp)
  # The whole dependency closure is needed: libcuml and libcuvs load cuBLAS, cuSOLVER, cuSPARSE, cuFFT,
  # cuRAND and NCCL when cuml is imported, and dropping any of them breaks the import (checked by hand).
  # No pip cache: it would hold a second copy of ~3 GB of wheels on a disk that CI machines keep small.
  if ! { "$VENV/bin/python" -m pip install -q --no-cache-dir --upgrade pip &&
         "$VENV/bin/python" -m pip install -q --no-cache-dir --upgrade "${REQUIREMENTS[@]}"; } >"$log" 2>&1; then
    grep -v "^WARNING: Location" "$log" | tail -20 >&2
    if grep -q "No space left on device" "$log"; then
      [ "$made_here" = 1 ] && rm -rf "$VENV"  # only the half-made venv this run created
      rm -f "$log"
      not_checked "the disk filled while installing the RAPIDS wheels into $VENV (free space, or set RAPIDS_VENV to a larger disk)"
    fi
    rm -f "$log"
    echo "rapids contract: installing ${REQUIREMENTS[*]} FAILED (above)" >&2
    exit 1
  fi
  rm -f "$log"
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
