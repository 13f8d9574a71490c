"""The on-disk vector cache: a rerun encodes only new or changed texts."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from gpuclust.errors import UsageError  # noqa: E402
from gpuclust.features.text.cache import VectorCache, text_key  # noqa: E402
from gpuclust.features.text.embed import encode_texts  # noqa: E402
from gpuclust.features.text.encoder import ItemEncoder  # noqa: E402
from gpuclust.features.text.model import load_encoder  # noqa: E402

TEXTS = ["red wool scarf", "blue wool scarf", "stainless steel saucepan", "red wool scarf"]


@pytest.fixture(scope="module")
def model():
    return load_encoder("default")


def test_cache_hit_skips_encoding(model, tmp_path, monkeypatch):
    enc = ItemEncoder(model)
    first, info1 = encode_texts(enc, TEXTS, tmp_path)
    assert info1["cache_hits"] == 0 and info1["cache_misses"] == 3 and info1["unique_texts"] == 3
    assert info1["non_pad_tokens"] > 0

    def no_model(*args, **kwargs):
        raise AssertionError("the model must not run on a full cache hit")

    monkeypatch.setattr(enc, "encode", no_model)
    second, info2 = encode_texts(enc, TEXTS, tmp_path)
    assert info2["cache_hits"] == 3 and info2["cache_misses"] == 0 and info2["non_pad_tokens"] == 0
    assert np.array_equal(first.numpy(), second.numpy())


def test_only_new_texts_are_encoded(model, tmp_path):
    enc = ItemEncoder(model)
    encode_texts(enc, TEXTS[:2], tmp_path)
    vectors, info = encode_texts(enc, TEXTS, tmp_path)
    assert info["cache_hits"] == 2 and info["cache_misses"] == 1 and info["items"] == 1
    direct = ItemEncoder(model).encode(TEXTS).numpy()
    np.testing.assert_allclose(vectors.numpy(), direct, atol=1e-5)


def test_namespace_separates_settings(model, tmp_path):
    encode_texts(ItemEncoder(model, pooling="mean"), TEXTS, tmp_path)
    _, info = encode_texts(ItemEncoder(model, pooling="cls"), TEXTS, tmp_path)
    assert info["cache_hits"] == 0
    assert len(list(tmp_path.iterdir())) == 2


def test_store_and_lookup_roundtrip_without_pickle(tmp_path):
    cache = VectorCache(tmp_path, {"model": "m"})
    keys = [text_key(t) for t in ("a", "b")]
    cache.store(keys, np.eye(2, dtype=np.float32))
    cache.store([keys[0], text_key("c")], np.full((2, 2), 7, dtype=np.float32))  # a is kept, c is new
    again = VectorCache(tmp_path, {"model": "m"})
    hit, vecs = again.lookup([text_key("c"), text_key("zzz"), keys[0]])
    assert hit.tolist() == [True, False, True]
    np.testing.assert_array_equal(vecs, [[7, 7], [1, 0]])
    files = sorted(p.name for p in again.dir.iterdir())
    assert files[:2] == ["index.json", "namespace.json"] and len(files) == 3  # the old vectors file is gone
    assert not [p for p in again.dir.iterdir() if p.suffix == ".tmp"]


def test_broken_cache_is_a_usage_error(tmp_path):
    cache = VectorCache(tmp_path, {"model": "m"})
    cache.store([text_key("a")], np.ones((1, 3), dtype=np.float32))
    index = json.loads((cache.dir / "index.json").read_text())
    (cache.dir / index["vectors"]).unlink()
    with pytest.raises(UsageError, match="delete that folder"):
        VectorCache(tmp_path, {"model": "m"}).lookup(["x"])
