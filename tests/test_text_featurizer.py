"""TextFeaturizer end to end (item and user-text modes), item texts, `embed_items` and `gpuclust embed`."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from gpuclust.backend import cpu_backend  # noqa: E402
from gpuclust.errors import UsageError  # noqa: E402
from gpuclust.features.text import TextFeaturizer, embed_items, load_encoder  # noqa: E402
from gpuclust.features.text.texts import item_texts  # noqa: E402
from gpuclust.features.text.usertext import user_texts  # noqa: E402
from gpuclust.preprocess.prepared import PreparedData  # noqa: E402

REF = pd.Timestamp("2024-01-31")
TITLES = ["red wool scarf", "blue wool scarf", "stainless steel saucepan", "non-stick frying pan", None, "mug"]
CATEGORIES = ["accessories", "accessories", "kitchen", "kitchen", "garden", None]
# user -> [(item, days ago, weight)]
BASKETS = {
    0: [(0, 1, 5.0)],                       # red scarf
    1: [(1, 2, 5.0)],                       # blue scarf
    2: [(2, 1, 5.0)],                       # saucepan
    3: [(3, 5, 1.0), (2, 3, 5.0), (5, 9, 1.0), (4, 40, 1.0)],
}


def prepared(text_columns: tuple[str, ...] = ("title",)) -> PreparedData:
    rows = [(u, i, REF - pd.Timedelta(days=d), w) for u, basket in BASKETS.items() for i, d, w in basket]
    events = pd.DataFrame({
        "user_id": [f"u{r[0]}" for r in rows], "item_id": [f"sku{r[1]}" for r in rows],
        "event_type": ["purchase" if r[3] > 1 else "view" for r in rows],
        "timestamp": pd.Series([r[2] for r in rows]).astype("datetime64[ns]"),
        "value": np.zeros(len(rows), dtype="float32"), "weight": np.array([r[3] for r in rows], dtype="float32"),
        "user_idx": np.array([r[0] for r in rows], dtype="int32"), "item_idx": np.array([r[1] for r in rows], dtype="int32"),
    })
    users = pd.DataFrame({"user_idx": np.arange(4, dtype="int32"), "user_id": [f"u{u}" for u in range(4)]})
    items = pd.DataFrame({"item_idx": np.arange(6, dtype="int32"), "item_id": [f"sku{i}" for i in range(6)],
                          "category": CATEGORIES, "price": np.arange(6, dtype="float32")})
    if text_columns:
        items["title"] = TITLES
    return PreparedData(events, users, items, 4, 6, REF, text_columns=text_columns)


@pytest.fixture(scope="module")
def model():
    return load_encoder("default")


def cos(a, b) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize("mode", ["item", "user"])
def test_fit_transform_end_to_end(model, mode):
    feat = TextFeaturizer(model=model, mode=mode, half_life_days=14.0)
    users = feat.fit_transform(prepared(), cpu_backend())
    assert isinstance(users, np.ndarray) and users.dtype == np.float32 and users.shape == (4, 384)
    np.testing.assert_allclose(np.linalg.norm(users, axis=1), 1.0, atol=1e-5)
    info = feat.info_
    for key in ("model", "mode", "precision", "n_items", "tokens", "non_pad_tokens", "padding_share", "seconds",
                "items_per_s", "tokens_per_s", "cache_hits", "cache_misses"):
        assert key in info
    assert info["mode"] == mode and info["precision"] == "fp32" and info["n_items"] == 6
    assert info["texts_encoded"] == (6 if mode == "item" else 4)
    if mode == "item":
        assert feat.item_vectors_.shape == (6, 384)
    else:
        assert feat.item_vectors_ is None
    json.dumps(info)


def test_similar_purchases_end_up_close(model):
    users = TextFeaturizer(model=model).fit_transform(prepared(), cpu_backend())
    red, blue, pan = users[0], users[1], users[2]
    assert cos(red, blue) > cos(red, pan) + 0.2
    assert cos(red, blue) > cos(blue, pan) + 0.2


def test_item_mode_matches_manual_pooling(model):
    feat = TextFeaturizer(model=model)
    users = feat.fit_transform(prepared(), cpu_backend())
    v = feat.item_vectors_
    manual = 1.0 * v[3] + 5.0 * v[2] + 1.0 * v[5] + 1.0 * v[4]
    np.testing.assert_allclose(users[3], manual / np.linalg.norm(manual), atol=1e-5)


def test_cache_dir_through_the_featurizer(model, tmp_path):
    TextFeaturizer(model=model, cache_dir=tmp_path).fit_transform(prepared(), cpu_backend())
    feat = TextFeaturizer(model=model, cache_dir=tmp_path)
    feat.fit_transform(prepared(), cpu_backend())
    assert feat.info_["cache_hits"] == 6 and feat.info_["cache_misses"] == 0 and feat.info_["tokens"] == 0


def test_item_texts_template_and_null_fallback():
    data = prepared()
    default = item_texts(data.items, data.text_columns)
    assert default[0] == "red wool scarf | accessories"
    assert default[4] == "garden"  # null title -> category
    assert default[5] == "mug"  # null category just drops out
    custom = item_texts(data.items, data.text_columns, "{title} (costs {price})")
    assert custom[1] == "blue wool scarf (costs 1.0)" and custom[4] == "garden"
    items = data.items.copy()
    items.loc[4, "category"] = None
    assert item_texts(items, ("title",))[4] == "sku4"  # then the item id


def test_user_texts_most_recent_first_distinct():
    from gpuclust.preprocess.prepared import event_frames

    data = prepared()
    data = data.with_table(data.table)  # as a run's prepared log is: the event table, no frame
    built = event_frames.built
    texts = user_texts(data, item_texts(data.items, data.text_columns))
    assert event_frames.built == built  # from the event table's arrays: no events frame
    assert texts[0] == "red wool scarf | accessories"
    assert texts[3].split("; ") == ["stainless steel saucepan | kitchen", "non-stick frying pan | kitchen", "mug", "garden"]
    assert user_texts(data, item_texts(data.items, data.text_columns), max_items=2)[3].count("; ") == 1


def test_no_text_columns_is_a_usage_error(model):
    with pytest.raises(UsageError, match="--text-cols \\(or a --text-template"):  # run's flags, which exist
        TextFeaturizer(model=model).fit_transform(prepared(text_columns=()), cpu_backend())
    with pytest.raises(UsageError, match="'colour'"):
        TextFeaturizer(model=model, template="{colour}").fit_transform(prepared(), cpu_backend())


@pytest.mark.parametrize("param,value", [("mode", "session"), ("pooling", "max"), ("precision", "int4"),
                                         ("half_life_days", 0)])
def test_bad_parameters_are_usage_errors(model, param, value):
    with pytest.raises(UsageError, match=param.split("_")[0]):
        TextFeaturizer(model=model, **{param: value}).fit_transform(prepared(), cpu_backend())


def test_constructor_only_stores_parameters():
    feat = TextFeaturizer(model="no-such-model", mode="bogus")
    assert feat.model == "no-such-model" and feat.mode == "bogus" and not hasattr(feat, "info_")


def _items_file(tmp_path):
    path = tmp_path / "items.csv"
    pd.DataFrame({"item_id": [10, 11, 12, 11], "title": ["red wool scarf", "blue wool scarf", None, "dup"],
                  "category": ["accessories", "accessories", "kitchen", "x"]}).to_csv(path, index=False)
    return path


def test_embed_items_parquet_and_npy(model, tmp_path):
    import pyarrow.parquet as pq

    summary = embed_items(_items_file(tmp_path), tmp_path / "vec.parquet", model=model, device="cpu")
    assert summary["n_items"] == 3 and summary["dim"] == 384 and summary["format"] == "parquet"
    table = pq.read_table(tmp_path / "vec.parquet")
    assert table.column("item_id").to_pylist() == [10, 11, 12]
    vectors = np.array(table.column("vector").to_pylist(), dtype=np.float32)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert b"gpuclust.embed" in table.schema.metadata

    summary = embed_items(_items_file(tmp_path), tmp_path / "vec.npy", model=model, device="cpu",
                          template="{title}", cache_dir=tmp_path / "cache")
    array = np.load(tmp_path / "vec.npy")
    assert array.shape == (3, 384)
    assert json.loads((tmp_path / "vec.ids.json").read_text())["item_id"] == [10, 11, 12]
    assert summary["cache_misses"] == 3
    assert cos(array[0], vectors[0]) < 0.9999  # template without category gives a different text
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_items_without_an_id_are_not_embedded(model, tmp_path):
    import pyarrow.parquet as pq

    path = tmp_path / "items.parquet"
    pd.DataFrame({"item_id": [None, "a", "b", None], "title": ["x", "y", "z", "w"]}).to_parquet(path)
    summary = embed_items(path, tmp_path / "vec.parquet", model=model, device="cpu")
    assert summary["n_items"] == 2
    assert pq.read_table(tmp_path / "vec.parquet").column("item_id").to_pylist() == ["a", "b"]
    pd.DataFrame({"item_id": [None, None], "title": ["x", "y"]}).to_parquet(path)
    with pytest.raises(UsageError, match="no items with an id"):
        embed_items(path, tmp_path / "vec2.parquet", model=model, device="cpu")


def test_embed_never_writes_its_vectors_over_its_items_file(tmp_path):
    """A synth items file carries gpuclust's mark: `embed --items F --out F` replaced the catalogue by vectors."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    items = tmp_path / "items.parquet"
    table = pa.Table.from_pandas(pd.read_csv(_items_file(tmp_path)), preserve_index=False)
    pq.write_table(table.replace_schema_metadata({"gpuclust.synth": "{}"}), items)
    before = items.read_bytes()
    with pytest.raises(UsageError, match="--out .* is the same file as --items"):
        embed_items(items, items, model="default", device="cpu")
    assert items.read_bytes() == before


def test_embed_items_bad_output_suffix(model, tmp_path):
    with pytest.raises(UsageError, match=r"\.parquet or \.npy"):
        embed_items(_items_file(tmp_path), tmp_path / "vec.csv", model=model)


def test_cli_embed_command(tmp_path, monkeypatch, model):
    import typer
    from typer.testing import CliRunner

    import gpuclust.features.text.embed as embed_module
    from gpuclust.cli.embed import embed

    real = embed_module.as_loaded
    monkeypatch.setattr(embed_module, "as_loaded", lambda name, device, allow: real(model, device, allow))
    app = typer.Typer()
    app.command()(embed)
    app.command("noop")(lambda: None)  # keep `embed` a named subcommand
    runner = CliRunner()
    items = _items_file(tmp_path)
    result = runner.invoke(app, ["embed", "--items", str(items), "--out", str(tmp_path / "v.npy"), "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["n_items"] == 3
    result = runner.invoke(app, ["embed", "--items", str(items), "--out", str(tmp_path / "v.parquet"), "--device", "cpu"])
    assert result.exit_code == 0 and "embedded 3 items" in result.stdout
    result = runner.invoke(app, ["embed", "--items", str(items), "--out", str(tmp_path / "v.txt")])
    assert isinstance(result.exception, UsageError)


def _tiny_model(device: str):
    from benchmarks.random_models import random_model, word_tokenizer

    words = " ".join(t for t in TITLES if t) + " " + " ".join(c for c in CATEGORIES if c) + " sku0 sku1 sku2 sku3 sku4 sku5"
    return random_model("tiny", seed=0, device=device, tokenizer=word_tokenizer(words.replace("-", " ").split()))


def test_random_tiny_model_runs_the_text_path_on_cpu():
    feat = TextFeaturizer(model=_tiny_model("cpu"), mode="item", half_life_days=7.0)
    users = feat.fit_transform(prepared(), cpu_backend())
    assert users.shape == (4, 32) and feat.info_["model"] == "random-tiny"


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["item", "user"])
def test_gpu_featurizer_returns_cupy_and_copies_nothing_to_host(mode):
    import cupy

    from gpuclust.backend import cuda_backend, transfers

    backend = cuda_backend()
    data = prepared()  # pandas frames: only host-to-device copies are allowed
    transfers.reset()
    feat = TextFeaturizer(model=_tiny_model("cuda"), mode=mode, half_life_days=7.0)
    users = feat.fit_transform(data, backend)
    assert isinstance(users, cupy.ndarray) and users.dtype == cupy.float32 and users.shape == (4, 32)
    if mode == "item":
        assert isinstance(feat.item_vectors_, cupy.ndarray)
        assert transfers.bytes == 0, f"{transfers.bytes} bytes went to the host"
    assert feat.info_["precision"] in ("bf16", "fp16")
    cpu = TextFeaturizer(model=_tiny_model("cpu"), mode=mode, half_life_days=7.0, precision="fp32")
    reference = cpu.fit_transform(prepared(), cpu_backend())
    assert float((users.get() * reference).sum(axis=1).min()) >= 0.99
