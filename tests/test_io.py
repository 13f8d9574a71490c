import codecs
import gzip
from pathlib import Path

import pandas as pd
import pytest

from gpuclust.config import ColumnMap
from gpuclust.errors import UsageError
from gpuclust.io import read_events, read_items, write_json
from tests.helpers import blob_events


@pytest.fixture()
def events():
    return blob_events(n_users=20)[0]


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".csv.gz", ".jsonl", ".jsonl.gz"])
def test_every_format_reads_to_the_canonical_schema(tmp_path, events, suffix):
    path = tmp_path / f"events{suffix}"
    if suffix == ".parquet":
        events.to_parquet(path)
    elif ".csv" in suffix:
        events.to_csv(path, index=False)
    else:
        text = events.to_json(orient="records", lines=True, date_format="iso")
        path.write_bytes(gzip.compress(text.encode()) if suffix.endswith(".gz") else text.encode())
    out = read_events(path, pd)
    assert list(out.columns) == ["user_id", "item_id", "event_type", "timestamp", "value"]
    assert len(out) == len(events)


def test_column_mapping_renames_other_names(tmp_path, events):
    path = tmp_path / "e.csv"
    events.rename(columns={"user_id": "customer", "timestamp": "ts"}).to_csv(path, index=False)
    out = read_events(path, pd, ColumnMap(user_id="customer", timestamp="ts"))
    assert {"user_id", "timestamp"} <= set(out.columns)


def test_missing_column_names_it_and_lists_what_was_found(tmp_path, events):
    path = tmp_path / "e.parquet"
    events.rename(columns={"user_id": "customer"}).to_parquet(path)
    with pytest.raises(UsageError) as err:
        read_events(path, pd)
    msg = str(err.value)
    assert "'user_id'" in msg and "customer" in msg and "--user-col" in msg


def test_missing_file_and_corrupt_parquet_are_user_errors(tmp_path):
    with pytest.raises(UsageError, match="file not found"):
        read_events(tmp_path / "nope.parquet", pd)
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(UsageError, match="not a readable Parquet"):
        read_events(bad, pd)
    with pytest.raises(UsageError, match="cannot tell the format"):
        (tmp_path / "x.xlsx").write_text("x")
        read_events(tmp_path / "x.xlsx", pd)


def test_a_directory_is_reported_as_a_directory(tmp_path):
    with pytest.raises(UsageError, match="is a directory, not a Parquet, CSV, TSV or JSON file"):
        read_items(tmp_path, pd)
    # An events folder is what the Dask path reads: the line says where such a folder is read.
    with pytest.raises(UsageError, match="is a directory, not an events file: give the path of one file .run and "
                                         "assign read a folder of Parquet files as one dataset on a Dask cluster"):
        read_events(tmp_path, pd)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".jsonl.gz"])
def test_a_utf8_bom_and_crlf_lines_read_in_every_text_format(tmp_path, events, suffix):
    if suffix == ".csv":
        text = events.to_csv(index=False, lineterminator="\r\n")
    else:
        text = events.to_json(orient="records", lines=True, date_format="iso").replace("\n", "\r\n")
    data = codecs.BOM_UTF8 + text.encode()
    path = tmp_path / f"events{suffix}"
    path.write_bytes(gzip.compress(data) if suffix.endswith(".gz") else data)
    out = read_events(path, pd)
    assert list(out.columns) == ["user_id", "item_id", "event_type", "timestamp", "value"]
    assert len(out) == len(events) and out["user_id"].tolist() == events["user_id"].tolist()


def test_csv_with_another_separator_or_encoding_says_how_to_fix(tmp_path, events):
    semicolons = tmp_path / "semi.csv"
    events.to_csv(semicolons, sep=";", index=False)
    with pytest.raises(UsageError, match="separated by something other than commas"):
        read_events(semicolons, pd)
    latin1 = tmp_path / "latin1.csv"
    events.assign(event_type="caf\xe9").to_csv(latin1, index=False, encoding="latin-1")
    with pytest.raises(UsageError, match="save it as UTF-8 text"):
        read_events(latin1, pd)


def test_items_keep_catalogue_columns(tmp_path):
    _, items, _ = blob_events(n_users=5)
    path = tmp_path / "items.parquet"
    items.to_parquet(path)
    out = read_items(path, pd)
    assert list(out.columns) == ["item_id", "category", "price", "title"]


def test_json_writes_are_atomic_and_nan_becomes_null(tmp_path: Path):
    target = tmp_path / "m.json"
    write_json(target, {"a": float("nan"), "b": 1.5})
    assert target.read_text().count("null") == 1
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]
