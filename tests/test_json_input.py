"""JSON input: JSON Lines and JSON arrays of records both read; a wrong file is one short line."""

from __future__ import annotations

import codecs
import gzip
import json

import pandas as pd
import pytest

from gpuclust.errors import UsageError, listed
from gpuclust.io.readers import read_events
from tests.helpers import blob_events, cli


def _records(n_users: int = 120) -> list[dict]:
    events, _, _ = blob_events(n_users=n_users, events_per_user=10)
    events = events.assign(timestamp=events["timestamp"].astype("int64") // 10**9)
    return events.to_dict(orient="records")


@pytest.mark.parametrize("layout", ["array", "array-indented-bom", "array-gz", "lines", "lines-bom"])
def test_json_arrays_and_lines_read_alike(tmp_path, layout):
    records = _records()
    text = json.dumps(records, indent=1 if "indented" in layout else None) if layout.startswith("array") \
        else "\n".join(json.dumps(r) for r in records)
    data = (codecs.BOM_UTF8 if "bom" in layout else b"") + text.encode()
    path = tmp_path / ("events.json.gz" if layout.endswith("gz") else "events.json")
    path.write_bytes(gzip.compress(data) if layout.endswith("gz") else data)
    df = read_events(path, pd)
    assert list(df.columns) == ["user_id", "item_id", "event_type", "timestamp", "value"]
    assert len(df) == len(records)
    assert df["user_id"].tolist() == [r["user_id"] for r in records]


def test_array_of_misnamed_records_names_a_few_columns(tmp_path):
    wide = [{f"col{j}": j for j in range(40)} | {"item_id": 1} for _ in range(3)]
    path = tmp_path / "events.json"
    path.write_text(json.dumps(wide))
    with pytest.raises(UsageError) as err:
        read_events(path, pd)
    message = str(err.value)
    assert "'user_id'" in message and "and 29 more" in message and "--user-col" in message
    assert len(message) < 400 and "\n" not in message


def test_array_of_non_objects_is_refused(tmp_path):
    path = tmp_path / "events.json"
    path.write_text(json.dumps([[1, 2, 3]] * 5))
    with pytest.raises(UsageError, match="not objects"):
        read_events(path, pd)


def test_neither_lines_nor_array_is_refused(tmp_path):
    path = tmp_path / "events.json"
    path.write_text('"just a string"')
    with pytest.raises(UsageError, match="neither JSON Lines"):
        read_events(path, pd)


def test_listed_caps_long_lists():
    assert listed(["a", "b"]) == "a, b"
    assert listed(range(20000), limit=3) == "0, 1, 2 and 19997 more"


def test_cli_runs_on_a_json_array_and_a_tsv(tmp_path, monkeypatch, capsys):
    """The issue's case: a JSON array of 20,000 records was read as 20,000 columns (a 129 KB error)."""
    records = _records(n_users=300)
    (tmp_path / "events.json").write_text(json.dumps(records))
    code, _, err = cli(monkeypatch, capsys, "run", "--events", tmp_path / "events.json", "--k", "3",
                       "--out", tmp_path / "from-json", "--json")
    assert code == 0, err
    assert pd.read_parquet(tmp_path / "from-json" / "assignments.parquet")["user_id"].nunique() == 300
    pd.DataFrame(records).to_csv(tmp_path / "events.tsv", sep="\t", index=False)
    code, _, err = cli(monkeypatch, capsys, "run", "--events", tmp_path / "events.tsv", "--k", "3",
                       "--out", tmp_path / "from-tsv", "--json")
    assert code == 0, err
    (tmp_path / "wrong.json").write_text(json.dumps([{"customer": i, "sku": 1} for i in range(20000)]))
    code, _, err = cli(monkeypatch, capsys, "run", "--events", tmp_path / "wrong.json", "--k", "3",
                       "--out", tmp_path / "wrong")
    assert code == 2 and len(err) < 500 and "customer, sku" in err, err
    assert not (tmp_path / "wrong").exists()
