"""What manifest.json records about the software that ran."""

from __future__ import annotations

import importlib.metadata

from gpuclust import manifest


def test_versions_names_the_build_that_is_installed(monkeypatch):
    installed = {"numpy": "2.4.6", "cupy-cuda13x": "13.6.0", "cudf-cu13": "25.12.0", "cuml": "25.12.0",
                 "rmm-cu13": "25.12.0", "faiss-gpu": "1.12.0", "dask-cuda": "25.12.0", "distributed": "2025.9.1",
                 "dask-cudf-cu13": "25.12.0", "nvidia-ml-py": "13.580.65"}

    def version(name: str) -> str:
        if name not in installed:
            raise importlib.metadata.PackageNotFoundError(name)
        return installed[name]

    monkeypatch.setattr(importlib.metadata, "version", version)
    found = manifest.versions()
    assert {k: v for k, v in found.items() if k != "python"} == installed  # CUDA 13 wheels and conda names too


def test_a_cpu_run_records_the_probes_it_ran_and_imports_no_accelerator_for_its_manifest(tmp_path):
    """A `--device cpu` run looks at no accelerator, so its manifest lists none; probing them all would
    import torch (about 1.3 s) and FAISS only to write that CUDA is absent. `gpuclust info` still probes
    every one (test_cli)."""
    import json
    import subprocess
    import sys

    code = """
import json, sys
import numpy as np, pandas as pd
from gpuclust import UserClusterer
from gpuclust.config import PipelineConfig
rng = np.random.default_rng(0)
events = pd.DataFrame({"user_id": rng.integers(0, 300, 6000), "item_id": rng.integers(0, 50, 6000),
                       "event_type": "view", "timestamp": pd.Timestamp("2026-01-01") + pd.to_timedelta(
                           rng.integers(0, 10**6, 6000), unit="s")})
m = UserClusterer(3, features=["behaviour"], device="cpu", seed=0, config=PipelineConfig()).fit(events)
print(json.dumps({"accelerators": m.manifest_["accelerators"], "torch": "torch" in sys.modules,
                  "faiss": "faiss" in sys.modules}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path)
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found == {"accelerators": [], "torch": False, "faiss": False}
