"""Hostile input that the fuzz rounds found and left for a decision (round 8's "found, not fixed"): a flag
column mapped as user ids, prices written with a currency sign, and a featuriser name that is no name.
Each test failed before its fix; the CLI ones run in one process and on Dask alike."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gpuclust.errors import InputWarning, UsageError
from tests.helpers import blob_events, cli, quick_fit

DASK = ["--scheduler", "local", "--workers", "2", "--threads-per-worker", "1"]
PATHS = [pytest.param([], id="one-process"), pytest.param(DASK, id="dask")]


@pytest.fixture(scope="module")
def small():
    return blob_events(n_users=60, n_groups=3, events_per_user=6)


def _paths(flags: list[str]) -> None:
    if flags:
        pytest.importorskip("distributed")


@pytest.mark.parametrize("flags", PATHS)
def test_a_true_false_user_column_is_refused_not_read_as_two_users(small, tmp_path, monkeypatch, capsys, flags):
    """It exited 0 with a model of two users, True and False, whatever the log held."""
    _paths(flags)
    events = small[0].assign(user_id=small[0]["user_id"] % 2 == 0)
    events.to_parquet(tmp_path / "events.parquet")
    code, _, err = cli(monkeypatch, capsys, "run", "--events", tmp_path / "events.parquet", "--k", "2", *flags,
                       "--out", tmp_path / "out")
    assert code == 2 and not (tmp_path / "out").exists(), err
    assert "the user_id column holds true/false values, not ids" in err and "[columns]" in err, err


@pytest.mark.parametrize("words", [("True", "False"), ("true", " false")])
def test_a_true_false_user_column_in_a_csv_is_refused(small, tmp_path, monkeypatch, capsys, words):
    """A text file's ids are read as text (round 9): a column of true and false only is still a flag column."""
    events = small[0].assign(user_id=np.where(small[0]["user_id"] % 2 == 0, *words))
    events.to_csv(tmp_path / "events.csv", index=False)
    code, _, err = cli(monkeypatch, capsys, "run", "--events", tmp_path / "events.csv", "--k", "2",
                       "--out", tmp_path / "out")
    assert code == 2 and not (tmp_path / "out").exists(), err
    assert "the user_id column holds true/false values, not ids" in err, err


@pytest.mark.parametrize("ids", [lambda s: s % 2 == 0, lambda s: (s % 2 == 0).astype(object),
                                 lambda s: (s % 2 == 0).astype("boolean")], ids=["bool", "object", "nullable"])
def test_true_false_ids_are_refused_by_the_estimator(small, ids):
    events = small[0].assign(item_id=ids(small[0]["item_id"]))
    with pytest.raises(UsageError, match="the item_id column holds true/false values"):
        quick_fit(events)


def test_ids_that_merely_look_like_flags_are_ids(small):
    """Text "True"/"False" is a user's choice of ids (two users), not a flag column: read as given."""
    events = small[0].assign(user_id=np.where(small[0]["user_id"] % 2 == 0, "True", "False"))
    model = quick_fit(events, n_clusters=2)
    assert len(model.labels_) == 2


@pytest.mark.parametrize("flags", PATHS)
def test_prices_with_a_currency_sign_are_warned_about(small, tmp_path, monkeypatch, capsys, flags):
    """'$1' became a missing price without a word (only the manifest counted it)."""
    _paths(flags)
    events, items, _ = small
    events.to_parquet(tmp_path / "events.parquet")
    prices = ["$1"] * 3 + [f"{i}.50" for i in range(len(items) - 3)]
    items.assign(price=prices).to_parquet(tmp_path / "items.parquet")
    code, _, err = cli(monkeypatch, capsys, "run", "--events", tmp_path / "events.parquet", "--items",
                       tmp_path / "items.parquet", "--k", "2", *flags, "--out", tmp_path / "out")
    assert code == 0, err
    assert f"warning: 3 of {len(items)} item prices are not numbers and count as missing, e.g. '$1'" in err, err


def test_plain_price_text_reads_without_a_warning(small, recwarn):
    from gpuclust.preprocess.parse import catalogue_columns

    items = small[1].assign(price=[f"{i}.5" for i in range(len(small[1]))])
    read, bad = catalogue_columns(items, pd)
    assert bad == 0 and read["price"].dtype.kind == "f"
    assert not [w for w in recwarn if issubclass(w.category, InputWarning)]


class Named:
    """A featuriser whose name is set per test."""

    def __init__(self, name):
        self.name = name

    def fit_transform(self, data, backend):
        return np.ones((data.n_users, 1), dtype=np.float32)

    def transform(self, data, backend):
        return np.ones((data.n_users, 1), dtype=np.float32)


@pytest.mark.parametrize("name", [3, None, "", "my.feature", "a,b", " "])
def test_a_featuriser_name_that_is_no_name_is_refused(small, name):
    """3, None and "" were accepted; a dotted name keys its saved arrays under another block's prefix."""
    with pytest.raises(UsageError, match="is not a feature name"):
        quick_fit(small[0], features=["behaviour", Named(name)])


def test_a_plain_featuriser_name_fits(small):
    model = quick_fit(small[0], features=["behaviour", Named("my_feature-2")])
    assert "my_feature-2" in model.manifest_["features"]["blocks"]


@pytest.mark.parametrize("name", ["a.b", "x,y", ""])
def test_register_feature_refuses_a_name_that_is_no_name(name):
    from gpuclust.registry import FEATURES, register_feature

    with pytest.raises(UsageError, match="is not one"):
        register_feature(name, "tests.test_fuzz_leftovers:Named")
    assert name not in FEATURES
