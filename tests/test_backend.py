import numpy as np
import pytest
import torch

from gpuclust import accelerators
from gpuclust.backend import from_torch, resolve_backend, to_host, to_torch, transfers
from gpuclust.errors import DeviceUnavailableError, UsageError


def test_cpu_backend_uses_numpy_scipy_pandas():
    b = resolve_backend("cpu")
    assert (b.device, b.xp.__name__, b.sparse.__name__, b.frame_library) == ("cpu", "numpy", "scipy.sparse", "pandas")


def test_unknown_device_names_the_choices():
    with pytest.raises(UsageError, match="auto, cpu, cuda"):
        resolve_backend("tpu")


@pytest.mark.skipif(accelerators.torch_cuda().usable and accelerators.cupy().usable, reason="a GPU is usable here")
def test_cuda_without_gpu_is_an_error_not_a_silent_cpu_run():
    with pytest.raises(DeviceUnavailableError, match="--device cpu"):
        resolve_backend("cuda")
    assert resolve_backend("auto").device == "cpu"


def test_host_arrays_pass_through_uncounted():
    transfers.reset()
    a = np.arange(10)
    assert to_host(a) is a
    assert transfers.bytes == 0


def test_dlpack_handoff_shares_memory_on_cpu():
    b = resolve_backend("cpu")
    t = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    a = from_torch(t, b)
    assert isinstance(a, np.ndarray) and np.shares_memory(a, t.numpy())
    back = to_torch(a, b)
    back[0, 0] = 42.0
    assert t[0, 0].item() == 42.0


def test_probes_report_a_reason_for_anything_unusable():
    for a in accelerators.all_accelerators():
        assert a.usable or a.reason


@pytest.mark.gpu
def test_cuda_transfers_are_counted():
    import cupy

    transfers.reset()
    host = to_host(cupy.arange(1000, dtype=cupy.float32))
    assert host.shape == (1000,) and transfers.bytes == 4000
