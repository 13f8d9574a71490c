"""int8 text encoder on the CPU: agreement with fp32, the caller's model untouched, refused on a GPU."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from gpuclust.errors import UsageError  # noqa: E402
from gpuclust.features.text.encoder import ItemEncoder, resolve_precision  # noqa: E402
from gpuclust.features.text.model import load_encoder  # noqa: E402
from gpuclust.features.text.quantize import quantized_layers, serialized_bytes  # noqa: E402
from gpuclust.synth import SynthSpec, generate  # noqa: E402


@pytest.fixture(scope="module")
def model():
    return load_encoder("default", device="cpu")


def test_int8_agrees_with_fp32_and_leaves_the_callers_model_alone(model):
    texts = generate(SynthSpec(n_users=50, n_items=120, n_groups=3, seed=4)).items["title"].astype(str).tolist()
    fp32 = ItemEncoder(model, precision="fp32").encode(texts).numpy()
    int8_encoder = ItemEncoder(model, precision="int8")
    int8 = int8_encoder.encode(texts).numpy()
    cosine = (fp32 * int8).sum(axis=1)
    assert cosine.mean() >= 0.99 and cosine.min() >= 0.97
    np.testing.assert_allclose(np.linalg.norm(int8, axis=1), 1.0, rtol=1e-5)
    assert int8_encoder.precision_ == "int8" and quantized_layers(int8_encoder.module_) == 24  # 6 layers x q, k, v, o
    assert quantized_layers(model.model) == 0  # quantised on a copy
    assert serialized_bytes(int8_encoder.module_) < serialized_bytes(model.model)


def test_int8_is_for_the_cpu():
    assert resolve_precision("int8", "cpu") == "int8"
    with pytest.raises(UsageError, match="int8.*bf16"):
        resolve_precision("int8", "cuda:0")


def test_the_text_feature_takes_int8(model):
    from gpuclust import PipelineConfig, UserClusterer

    data = generate(SynthSpec(n_users=120, n_items=60, n_groups=3, seed=2))
    config = PipelineConfig(device="cpu", seed=0)
    config.cluster.k = 3
    config.features.features = ("text",)
    config.features.text.precision = "int8"
    fitted = UserClusterer(config=config, embedding_model=model).fit(data.events, data.items)
    assert fitted.manifest_["features"]["blocks"]["text"]["precision"] == "int8"
