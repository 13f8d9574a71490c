"""Shared fixtures; gpu-marked tests skip themselves, with the reason, where CUDA is unusable."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
RETAIL = ROOT.parent / "shared" / "datasets" / "online-retail" / "online_retail.csv.gz"


def pytest_collection_modifyitems(config, items):
    from gpuclust import accelerators

    torch_cuda, cupy = accelerators.torch_cuda(), accelerators.cupy()
    if torch_cuda.usable and cupy.usable:
        return
    reason = "no usable GPU: " + "; ".join(f"{a.name}: {a.reason}" for a in (torch_cuda, cupy) if not a.usable)
    skip = pytest.mark.skip(reason=reason)
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
