"""The learned featurisers on CUDA (gpu-marked: skipped, with the reason, where no GPU is usable)."""

import numpy as np
import pytest

from gpuclust.backend import cpu_backend, resolve_backend, to_host, transfers
from gpuclust.features.learned.autoencoder import AutoencoderFeaturizer
from gpuclust.features.learned.sequence import SequenceFeaturizer
from gpuclust.frames import to_backend_frame
from gpuclust.preprocess.clean import Preprocessor
from gpuclust.synth import SynthSpec, generate

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def logs():
    data = generate(SynthSpec(n_users=1500, n_items=300, n_groups=4, seed=0, events_per_user=30, sequential=True))
    gpu = resolve_backend("cuda")
    prepared = Preprocessor().run(to_backend_frame(data.events, gpu), gpu, to_backend_frame(data.items, gpu))
    return gpu, prepared, Preprocessor().run(data.events, cpu_backend(), data.items)


@pytest.mark.parametrize("cell", ["gru", "lstm", "transformer"])
def test_sequence_trains_under_autocast_and_stays_on_the_device(logs, cell):
    gpu, prepared, _ = logs
    before = transfers.bytes
    f = SequenceFeaturizer(cell=cell, epochs=3, seed=0)
    x = f.fit_transform(prepared, gpu)
    assert type(x).__module__.startswith("cupy") and x.shape == (prepared.n_users, f.info_["dims"])
    assert f.info_["training"]["precision"] in ("bf16", "fp16") and np.isfinite(f.info_["training"]["final_train_loss"])
    # only small summaries cross: the per-user lengths go the other way, nothing of n_users x d comes back
    assert transfers.bytes - before < prepared.n_users * f.info_["dims"] * 4
    f.precision_ = "fp32"
    full = to_host(f.transform(prepared, gpu))
    low = to_host(x)
    assert float((full * low).sum(1).min()) > 0.98  # unit vectors: bf16/fp16 vs fp32 cosine


def test_sequence_cuda_and_cpu_find_the_same_groups(logs):
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    gpu, prepared, host = logs
    on_gpu = to_host(SequenceFeaturizer(epochs=4, precision="fp32", seed=0).fit_transform(prepared, gpu))
    on_cpu = SequenceFeaturizer(epochs=4, precision="fp32", seed=0).fit_transform(host, cpu_backend())
    a = KMeans(4, n_init=5, random_state=0).fit_predict(on_gpu)
    b = KMeans(4, n_init=5, random_state=0).fit_predict(on_cpu)
    assert adjusted_rand_score(a, b) > 0.6


@pytest.mark.parametrize("kind", ["dae", "vae"])
def test_autoencoder_trains_on_device_csr(logs, kind):
    gpu, prepared, _ = logs
    f = AutoencoderFeaturizer(kind=kind, epochs=5, seed=0)
    x = f.fit_transform(prepared, gpu)
    assert type(x).__module__.startswith("cupy") and np.isfinite(to_host(x)).all()
    assert f.info_["training"]["precision"] in ("bf16", "fp16")


def test_gpu_check_learned_script_runs_small():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check_learned.py"
    spec = importlib.util.spec_from_file_location("gpu_check_learned", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--users", "3000", "--items", "300", "--cpu-users", "1000", "--epochs", "2"]) == 0
