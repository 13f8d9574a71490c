import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from gpuclust import accelerators
from gpuclust.backend import from_torch, pandas_nbytes, resolve_backend, to_host, to_torch, transfers
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


def test_pandas_nbytes_counts_series_index_and_frames():
    # A cuDF object's to_pandas() is one of these; Series and Index memory_usage is an int, not a Series.
    series = pd.Series(np.arange(100, dtype=np.int64))
    assert pandas_nbytes(series) == 800 + series.index.memory_usage()
    assert pandas_nbytes(pd.Index(np.arange(10, dtype=np.int32))) == 40
    frame = pd.DataFrame({"a": np.zeros(10, np.float32), "b": np.zeros(10, np.int64)})
    assert pandas_nbytes(frame) == 40 + 80 + frame.index.memory_usage()


class _CudfStandIn:
    """Dispatches as a cuDF object does in to_host (by module name); to_pandas() is all to_host calls."""

    __module__ = "cudf.core.series"

    def __init__(self, host):
        self.host = host

    def to_pandas(self):
        return self.host


@pytest.mark.parametrize("host", [pd.Series(np.arange(8, dtype=np.int32)), pd.Index(np.arange(8, dtype=np.int32)),
                                  pd.DataFrame({"a": np.arange(8, dtype=np.int32)})])
def test_cudf_series_index_and_frames_cross_counted(host):
    transfers.reset()
    out = to_host(_CudfStandIn(host))
    assert isinstance(out, np.ndarray) and out.shape[0] == 8
    assert transfers.bytes == pandas_nbytes(host) and transfers.copies == 1


def test_dlpack_handoff_shares_memory_on_cpu():
    b = resolve_backend("cpu")
    t = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    a = from_torch(t, b)
    assert isinstance(a, np.ndarray) and np.shares_memory(a, t.numpy())
    back = to_torch(a)
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


def test_row_blocks_run_on_threads_and_come_back_in_order(monkeypatch):
    import threading

    from gpuclust import backend as backend_module

    monkeypatch.setattr(backend_module, "cpu_threads", lambda: 4)
    names = set()

    def block(start, stop):
        names.add(threading.current_thread().name)
        return np.arange(start, stop)

    out = backend_module.map_row_blocks(block, 1000, 10, 400, resolve_backend("cpu"))
    assert len(out) == 100 and (np.concatenate(out) == np.arange(1000)).all()  # 4 workers x 10 rows x 10 cells
    assert all(name.startswith("gpuclust-block") for name in names)
    assert backend_module.map_row_blocks(block, 0, 10, 400, resolve_backend("cpu")) == []


def test_a_failing_row_block_stops_the_blocks_not_yet_started(monkeypatch):
    import time

    from gpuclust import backend as backend_module

    monkeypatch.setattr(backend_module, "cpu_threads", lambda: 2)
    started = []

    def block(start, stop):
        started.append(start)
        if start == 0:
            raise ValueError("bad block")
        time.sleep(0.01)
        return start

    with pytest.raises(ValueError, match="bad block"):
        backend_module.map_row_blocks(block, 10_000, 1, 2, resolve_backend("cpu"))
    assert len(started) < 100  # of 10,000 blocks


def test_blocks_on_threads_run_torch_on_one_thread_each_and_restore_it(monkeypatch):
    from gpuclust import backend as backend_module

    monkeypatch.setattr(backend_module, "cpu_threads", lambda: 2)
    before = torch.get_num_threads()
    inside = backend_module.map_row_blocks(lambda start, stop: torch.get_num_threads(), 8, 1, 2, resolve_backend("cpu"))
    assert set(inside) == {1} and torch.get_num_threads() == before


@pytest.mark.parametrize("index", [np.int32, np.int64])
def test_the_one_pass_dense_product_equals_scipys_product(index):
    """SciPy's kernel run once into dense-size buffers: the same numbers as the public product (summed
    repeats, unsorted rows, empty rows, int64 indices, float64 data cast to float32)."""
    from gpuclust.backend import dense_product

    rng = np.random.default_rng(3)
    a = sp.random(41, 300, density=0.08, random_state=1, format="csr", dtype=np.float32)
    b = sp.random(300, 57, density=0.08, random_state=2, format="csr", dtype=np.float64)
    a.data[:] = rng.integers(1, 5, a.nnz)
    a = sp.csr_matrix((a.data, a.indices.astype(index), a.indptr.astype(index)), shape=a.shape)
    a.indices[a.indptr[3]:a.indptr[4]] = a.indices[a.indptr[3]:a.indptr[4]][::-1]  # a row not sorted
    a.data[a.indptr[5]:a.indptr[6]] = 0
    a.eliminate_zeros()  # an empty row
    assert a.indptr[5] == a.indptr[6]
    got = dense_product(a, b, resolve_backend("cpu"))
    assert got.dtype == np.float32 and got.shape == (41, 57)
    np.testing.assert_allclose(got, (a @ b).toarray(), rtol=1e-6)
