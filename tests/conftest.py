"""Shared fixtures; gpu-marked tests skip themselves, with the reason, where CUDA is unusable."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# The CLI's progress lines (gpuclust.cli.console) are tested where they are the point (tests/test_progress.py);
# elsewhere a command's stderr is its result or its one line, however slowly the shared machine runs it.
os.environ.setdefault("GPUCLUST_PROGRESS", "off")

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


# Hypothesis profiles for the property tests (tests/test_contract_properties.py). `ci`, the default: a fixed,
# derandomised set of examples that runs in a minute or two, and no example database written into the repo.
# `long` (GPUCLUST_HYPOTHESIS=long): 25x the examples, random, for a search on demand.
settings.register_profile("ci", derandomize=True, database=None, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("long", derandomize=False, database=None, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile("long" if os.environ.get("GPUCLUST_HYPOTHESIS") == "long" else "ci")


# One 5000-user synthetic log and its default CPU fit (k = 8, seed 0, with truth), shared by the modules that
# read them (tests/test_pipeline.py, tests/test_gpu.py): the same fit was made three times a session. Tests
# only read these; one that changes a frame or the model must copy it first.
@pytest.fixture(scope="session")
def synthetic_5k():
    from gpuclust.synth import SynthSpec, generate

    return generate(SynthSpec(n_users=5000, n_groups=8, seed=0))


def fit_5k(synthetic, device: str):
    """The default pipeline's fit of `synthetic_5k` on `device`: k = 8, seed 0, with items and truth."""
    from gpuclust import PipelineConfig, UserClusterer

    config = PipelineConfig(device=device, seed=0)
    config.cluster.k = 8
    return UserClusterer(config=config).fit(synthetic.events, synthetic.items, synthetic.truth)


@pytest.fixture(scope="session")
def fitted_5k_cpu(synthetic_5k):
    return fit_5k(synthetic_5k, "cpu")
