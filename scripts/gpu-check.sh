#!/usr/bin/env bash
# Everything that needs CUDA, in one go, from the source tree (no install): the gpu-marked tests and
# the small GPU checks. Results go to $OUT when set (the project's GPU test machine), else ./gpu-check-out.
# That machine has CUDA torch, CuPy, transformers, pandas, scikit-learn, pyarrow and typer, but no
# cuDF, cuML, FAISS or model weights: the checks report by name what they could not reach, and the last
# one (gpu_check_coverage) prints what was usable, what was not exercised, and each stage's libraries.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export OUT=${OUT:-$PWD/gpu-check-out}  # the checks write their JSON there
mkdir -p "$OUT"
status=0
PY=${PYTHON:-python3}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$OUT/nvidia-smi.txt"
$PY -m gpuclust.cli.app info --json > "$OUT/info.json" 2>&1; cat "$OUT/info.json"

echo "== gpu-marked tests"
$PY -m pytest -q -m gpu -p no:cacheprovider tests 2>&1 | tee "$OUT/pytest-gpu.txt" || status=1

for check in gpu_check_encoder gpu_check_kmeans gpu_check_pipeline gpu_check_learned gpu_check_ease gpu_check_bench gpu_check_coverage; do
  if [ -f "scripts/$check.py" ]; then
    echo "== $check"
    timeout 240 $PY "scripts/$check.py" 2>&1 | tee "$OUT/$check.txt" || status=1
  fi
done
exit $status
