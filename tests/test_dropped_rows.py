"""No row is dropped without a word: every drop the user did not ask for is a `DroppedRowsWarning` from
Python and one `warning:` line from the CLI, with the count, why, and what keeps the rows."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from gpuclust.backend import resolve_backend
from gpuclust.config import PreprocessConfig
from gpuclust.errors import DroppedRowsWarning, InputWarning, UsageError
from gpuclust.preprocess.clean import Preprocessor
from tests.helpers import blob_events, cli


def retailrocket_style(n_users: int = 60) -> pd.DataFrame:
    """A RetailRocket-like log: views plus 'addtocart' and 'transaction', which the default weights lack."""
    events, _, _ = blob_events(n_users=n_users)
    kinds = np.array(["view", "addtocart", "transaction"])[np.arange(len(events)) % 10 // 8 + np.arange(len(events)) % 20 // 19]
    return events.assign(event_type=kinds)


def test_no_known_event_type_names_only_the_types_the_rows_have():
    """A categorical event_type column may list categories no row has; the error named them as the log's."""
    events, _, _ = blob_events(n_users=20)
    events = events.assign(event_type=pd.Categorical(events["event_type"],
                                                     categories=["view", "click", "cart", "purchase", "never"]))
    config = PreprocessConfig(event_weights={"like": 1.0})
    with pytest.raises(UsageError, match=r"none of the event types \['view', 'click', 'cart', 'purchase'\] is known"):
        Preprocessor(config).run(events, resolve_backend("cpu"))


def test_unknown_event_types_warn_with_counts_names_and_the_fix():
    events = retailrocket_style()
    unknown = events["event_type"].value_counts()
    with pytest.warns(DroppedRowsWarning) as caught:
        data = Preprocessor().run(events, resolve_backend("cpu"))
    message = next(str(w.message) for w in caught if "event type" in str(w.message))
    n = int(unknown["addtocart"] + unknown["transaction"])
    assert message.startswith(f"dropped {n:,} of {len(events):,} events ({n / len(events):.1%}): event type without "
                              f"a weight ('addtocart' {unknown['addtocart']:,}, 'transaction' "
                              f"{unknown['transaction']:,})")
    assert "--event-weights view=1,click=2,cart=3,purchase=5,rating=3,addtocart=W,transaction=W" in message
    assert "[preprocess]" in message and issubclass(DroppedRowsWarning, InputWarning)
    assert data.n_events == len(events) - n


def test_many_unknown_types_are_capped_in_the_message():
    events, _, _ = blob_events(n_users=30)
    events["event_type"] = np.where(np.arange(len(events)) % 2 == 0, "view",
                                    [f"kind{i % 9}" for i in range(len(events))])
    with pytest.warns(DroppedRowsWarning, match=r"and 4 more types\)") as caught:
        Preprocessor().run(events, resolve_backend("cpu"))
    message = next(str(w.message) for w in caught if "event type" in str(w.message))
    assert message.count("'kind") + message.count("=W") == 10  # 5 named in why, 5 in the fix


def test_duplicates_and_missing_ids_warn_and_weighted_types_do_not():
    events, _, _ = blob_events(n_users=20)
    doubled = pd.concat([events, events.iloc[:7]], ignore_index=True)
    doubled.loc[50, "user_id"] = None
    with pytest.warns(DroppedRowsWarning) as caught:
        Preprocessor().run(doubled, resolve_backend("cpu"))
    messages = [str(w.message) for w in caught]
    assert any(m.startswith(f"dropped 1 of {len(doubled):,} events") and "missing" in m for m in messages)
    assert any(m.startswith("dropped 7 of ") and "identical to an earlier row" in m
               and "drop_duplicates = false" in m for m in messages)
    config = PreprocessConfig(event_weights={"view": 1, "click": 2, "cart": 3, "purchase": 5})
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", DroppedRowsWarning)  # a clean log with every type weighted: no warning
        Preprocessor(config).run(events, resolve_backend("cpu"))


def test_the_online_retail_adapter_warns_for_each_kind_of_row_it_drops():
    from gpuclust.io.adapters import online_retail

    raw = pd.DataFrame({
        "InvoiceNo": ["1", "1", "C2", "3", "4", "5"], "StockCode": ["A", "X1", "A", "A", "POST", "X1"],
        "Description": ["a", "b", "a", "a", "postage", "b"], "Quantity": [1, 2, -1, 0, 1, 1],
        "InvoiceDate": ["2011-01-01"] * 6, "UnitPrice": [1.0, 2.0, 1.0, 1.0, 5.0, 2.0],
        "CustomerID": [7.0, 7.0, 7.0, 8.0, 8.0, None]})
    with pytest.warns(DroppedRowsWarning) as caught:
        events, _, steps = online_retail(raw, pd)
    messages = [str(w.message) for w in caught]
    assert len(events) == 2 and len(messages) == 4 == sum(s.dropped > 0 for s in steps)
    assert messages[0].startswith("dropped 1 of 6 rows (16.7%): no CustomerID (the online-retail adapter")
    assert any("cancellation" in m for m in messages) and any("fee or adjustment" in m for m in messages)


def test_the_cli_prints_each_drop_as_one_line_and_the_manifest_counts_it(monkeypatch, capsys, tmp_path):
    events = retailrocket_style()
    events.to_parquet(tmp_path / "rr.parquet")
    code, _, stderr = cli(monkeypatch, capsys, "run", "--events", tmp_path / "rr.parquet", "--k", 3,
                          "--out", tmp_path / "out", "--json")
    assert code == 0
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("warning: dropped ") and "'addtocart'" in lines[0], stderr
    steps = {s["step"]: s for s in json.loads((tmp_path / "out" / "manifest.json").read_text())["rows"]["steps"]}
    assert steps["unknown_event_types"]["dropped"] == int((events["event_type"] != "view").sum())
    # The fix it names works: with the weights given, nothing is dropped and nothing is said.
    code, _, stderr = cli(monkeypatch, capsys, "run", "--events", tmp_path / "rr.parquet", "--k", 3,
                          "--out", tmp_path / "out2", "--json", "--event-weights", "view=1,addtocart=3,transaction=5")
    assert code == 0 and stderr.strip() == ""


def test_a_dask_partitioned_clean_warns_once_with_the_summed_counts():
    from gpuclust.distributed.prepare import check_cleaned, clean_partition

    events = retailrocket_style()
    config = PreprocessConfig()
    halves = [events[events["user_id"] % 2 == r].reset_index(drop=True) for r in (0, 1)]
    summaries = [clean_partition(half, config, 0, "cpu").summary() for half in halves]
    with pytest.warns(DroppedRowsWarning) as caught:
        check_cleaned(summaries, config, len(events))
    messages = [str(w.message) for w in caught]
    unknown = events["event_type"].value_counts()
    n = int(unknown["addtocart"] + unknown["transaction"])
    assert len(messages) == 1 and messages[0].startswith(f"dropped {n:,} of {len(events):,} events")
    assert f"'addtocart' {unknown['addtocart']:,}" in messages[0] and "transaction=W" in messages[0]
