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
