"""Per-stage GPU memory peaks: the arithmetic on the CPU, the allocators themselves on a GPU."""

from __future__ import annotations

import types

import numpy as np
import pandas as pd
import pytest
import scipy.sparse

from gpuclust import accelerators, gpu_memory
from gpuclust.accelerators import Accelerator
from gpuclust.backend import Backend
from gpuclust.gpu_memory import PeakCounter, StagePeaks, rmm_stage_peak
from gpuclust.manifest import StageRecorder

MIB = 2**20


def test_peak_counter_follows_cupy_malloc_and_free_calls():
    counter = PeakCounter(in_use=1024)  # the pool's used_bytes() when the stage starts
    # The keywords CuPy passes to malloc_postprocess / free_postprocess.
    counter.on_malloc(device_id=0, size=500, mem_size=512, mem_ptr=0x1000, pmem_id=1)
    counter.on_malloc(device_id=0, size=2000, mem_size=2048, mem_ptr=0x2000, pmem_id=2)
    counter.on_free(device_id=0, mem_size=512, mem_ptr=0x1000, pmem_id=1)
    counter.on_free(device_id=0, mem_size=1024, mem_ptr=0x0800, pmem_id=0)  # taken before the stage
    counter.on_malloc(device_id=0, size=10**9, mem_size=10**9, mem_ptr=0, pmem_id=0)  # failed: not in use
    counter.on_malloc(device_id=0, size=256, mem_size=256, mem_ptr=0x3000, pmem_id=3)
    assert counter.in_use == 1024 + 512 + 2048 - 512 - 1024 + 256
    assert counter.peak == 1024 + 512 + 2048  # a peak of use, not the pool's size


def test_rmm_frame_peak_counts_from_the_bytes_in_use_at_the_push():
    # librmm's statistics adaptor starts a pushed frame at zero: 300 bytes were live at the push, the
    # stage allocated 500 more at its peak, then freed 700 (some of them allocated before the push).
    at_push = types.SimpleNamespace(current_bytes=300, peak_bytes=900)
    popped = types.SimpleNamespace(current_bytes=-200, peak_bytes=500)
    assert rmm_stage_peak(at_push, popped) == 800


def _usable(name: str) -> Accelerator:
    return Accelerator(name, True, "1.0")


def _unusable(name: str) -> Accelerator:
    return Accelerator(name, False, None, "not importable: ModuleNotFoundError")


def test_allocators_say_which_are_measured_and_why_not(monkeypatch):
    for probe in ("torch_cuda", "cupy", "cudf", "cuml"):
        monkeypatch.setattr(accelerators, probe, lambda probe=probe: _unusable(probe))
    status = gpu_memory.allocators()
    assert list(status) == list(gpu_memory.ALLOCATORS)
    assert all(why.startswith("not measured: ") for why in status.values())
    assert "cuDF nor cuML" in status["rmm"]

    monkeypatch.setattr(accelerators, "torch_cuda", lambda: _usable("torch (CUDA)"))
    monkeypatch.setattr(accelerators, "cupy", lambda: _usable("CuPy"))
    monkeypatch.setattr(accelerators, "cudf", lambda: _usable("cuDF"))
    status = gpu_memory.allocators()
    assert status["torch"] == status["cupy"] == "measured"
    try:
        import rmm.statistics  # noqa: F401
    except ImportError:
        assert status["rmm"].startswith("not measured: rmm.statistics unavailable")
    else:
        assert status["rmm"] == "measured"


def test_stage_records_name_the_frame_library_and_the_gpu_allocators(monkeypatch):
    for probe in ("torch_cuda", "cupy", "cudf", "cuml"):
        monkeypatch.setattr(accelerators, probe, lambda probe=probe: _unusable(probe))
    gpu_like = Backend("cuda", np, scipy.sparse, pd, "cuda")  # nothing measurable here: the wiring only
    recorder = StageRecorder(gpu_like)
    with recorder.stage("features"):
        pass
    stage = recorder.stages["features"]
    assert stage["frame"] == "pandas" and stage["array"] == "numpy"
    assert stage["gpu_peak_mib"] == {} and stage["gpu_peak_sum_mib"] == 0
    summary = recorder.summary()
    assert set(summary["gpu_allocators"]) == {"torch", "cupy", "rmm"} and "upper bound" in summary["gpu_peak_note"]
    cpu = StageRecorder(None)
    with cpu.stage("read"):
        pass
    assert "gpu_allocators" not in cpu.summary() and "gpu_peak_mib" not in cpu.stages["read"]


@pytest.mark.gpu
def test_a_small_stage_does_not_inherit_a_big_stages_pools():
    import cupy
    import torch

    with StagePeaks() as big:
        a = cupy.zeros(64 * MIB, dtype=cupy.uint8)
        t = torch.zeros(64 * MIB, dtype=torch.uint8, device="cuda")
        del a, t
    with StagePeaks() as small:
        b = cupy.zeros(MIB, dtype=cupy.uint8)
        u = torch.zeros(MIB, dtype=torch.uint8, device="cuda")
        del b, u
    assert cupy.get_default_memory_pool().total_bytes() >= 64 * MIB  # the pool still holds the big block
    for name in ("cupy", "torch"):
        assert big.mib[name] >= 64 and big.mib[name] - small.mib[name] >= 60, (name, big.mib, small.mib)
