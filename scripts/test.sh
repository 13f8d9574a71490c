#!/usr/bin/env bash
# Set up (once) and run the test suite on the CPU; gpu-marked tests skip themselves with the reason.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
.venv/bin/ruff check gpuclust tests benchmarks scripts
exec .venv/bin/python -m pytest -q "$@"
