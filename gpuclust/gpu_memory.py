"""Peak GPU memory of a stage, from each allocator that can hold the GPU: torch, CuPy and RMM.

Three pools share one GPU: torch's caching allocator, CuPy's memory pool and RMM (cuDF, cuML). A pool's
size is memory held, not a peak of use, and it outlives the stage (and the run) that filled it. So a
stage is measured by each allocator's own peak of bytes in use while it ran:

- torch: `reset_peak_memory_stats` at the start, `max_memory_allocated` at the end;
- CuPy: a memory hook on the pool's malloc and free (bytes in use and their peak), counted from the
  pool's `used_bytes()` at the start; hooks are per thread, and the pipeline runs on one;
- RMM, where cuDF or cuML are usable: `rmm.statistics`, one counter frame pushed per stage, whose peak
  counts from the bytes in use at the push. Statistics start with the first measured stage: device
  frames made before it (a caller's cuDF input) are in no RMM figure.

The allocators' peaks need not fall at the same moment, so their sum is an upper bound of the stage's
peak: that is what sizing uses. The CUDA context and library workspaces are in no allocator's count.
"""

from __future__ import annotations

from typing import Any

from gpuclust import accelerators

ALLOCATORS = ("torch", "cupy", "rmm")
MIB = 2**20


class PeakCounter:
    """Bytes in use and their peak, from the allocations and frees an allocator hook reports."""

    def __init__(self, in_use: int = 0) -> None:
        self.in_use = int(in_use)
        self.peak = int(in_use)

    def on_malloc(self, mem_size: int = 0, mem_ptr: int = 0, **_: Any) -> None:
        """CuPy's malloc_postprocess keywords; mem_ptr 0 means the allocation failed."""
        if mem_ptr:
            self.in_use += int(mem_size)
            self.peak = max(self.peak, self.in_use)

    def on_free(self, mem_size: int = 0, **_: Any) -> None:
        """CuPy's free_postprocess keywords; frees of blocks taken before the start count too."""
        self.in_use -= int(mem_size)


def rmm_stage_peak(at_push: Any, popped: Any) -> int:
    """Peak bytes in use over an RMM counter frame: the bytes in use when it was pushed plus the frame's
    own peak, which librmm counts from zero at the push (`statistics_resource_adaptor`)."""
    return int(at_push.current_bytes) + int(popped.peak_bytes)


def allocators() -> dict[str, str]:
    """For each allocator, "measured" or why a GPU run here cannot measure it."""
    torch_cuda, cupy = accelerators.torch_cuda(), accelerators.cupy()
    out = {"torch": "measured" if torch_cuda.usable else f"not measured: {torch_cuda.reason}",
           "cupy": "measured" if cupy.usable else f"not measured: {cupy.reason}"}
    users = [a.name for a in (accelerators.cudf(), accelerators.cuml()) if a.usable]
    if not users:
        out["rmm"] = "not measured: neither cuDF nor cuML is usable here, so nothing allocates through RMM"
    else:
        try:
            import rmm.statistics  # noqa: F401 - rmm >= 24.06
        except ImportError as exc:
            out["rmm"] = f"not measured: rmm.statistics unavailable ({exc})"
        else:
            out["rmm"] = "measured"
    return out


class StagePeaks:
    """`with StagePeaks() as peaks:` measures each usable allocator's peak bytes in use over the block.

    After the block, `peaks.mib` maps each measured allocator to its peak in MiB, and `record()` gives
    what a stage's manifest entry keeps.
    """

    def __init__(self) -> None:
        self.status = allocators()
        self.mib: dict[str, float] = {}
        self._cupy: PeakCounter | None = None
        self._hook: Any = None
        self._rmm_at_push: Any = None

    def __enter__(self) -> StagePeaks:
        if self._measured("torch"):
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        if self._measured("rmm"):
            import rmm.statistics

            rmm.statistics.enable_statistics()  # idempotent: wraps the current resource once
            self._rmm_at_push = rmm.statistics.push_statistics()
        if self._measured("cupy"):  # last in, first out: a hook left registered would refuse the next stage
            import cupy

            self._cupy = PeakCounter(cupy.get_default_memory_pool().used_bytes())
            self._hook = _cupy_hook(self._cupy)
            self._hook.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._hook is not None:
            self._hook.__exit__(*exc)
            self.mib["cupy"] = self._cupy.peak / MIB
        if self._rmm_at_push is not None:
            import rmm.statistics

            self.mib["rmm"] = rmm_stage_peak(self._rmm_at_push, rmm.statistics.pop_statistics()) / MIB
        if self._measured("torch"):
            import torch

            torch.cuda.synchronize()
            self.mib["torch"] = torch.cuda.max_memory_allocated() / MIB

    def record(self) -> dict[str, Any]:
        return {"gpu_peak_mib": {name: round(v, 1) for name, v in self.mib.items()},
                "gpu_peak_sum_mib": round(sum(self.mib.values()), 1)}

    def _measured(self, name: str) -> bool:
        return self.status.get(name) == "measured"


def _cupy_hook(counter: PeakCounter):
    """A CuPy memory hook that reports the pool's malloc and free to `counter`."""
    from cupy.cuda.memory_hook import MemoryHook

    class PeakHook(MemoryHook):
        name = "gpuclust-stage-peak"

        def malloc_postprocess(self, **kwargs: Any) -> None:
            counter.on_malloc(**kwargs)

        def free_postprocess(self, **kwargs: Any) -> None:
            counter.on_free(**kwargs)

    return PeakHook()
