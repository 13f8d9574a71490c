#!/usr/bin/env bash
# Set up (once) and run the main job on the embedded default data: synthetic users with planted groups.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
HF_HUB_OFFLINE=1 exec .venv/bin/gpuclust demo "$@"
