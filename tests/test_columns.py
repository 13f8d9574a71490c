"""The column mapping means the same from Python as on the command line: the README's own TOML, with its
`[columns]`, fits a frame in the user's names; a named column that is not there is one clear line."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from gpuclust import PipelineConfig, UserClusterer
from gpuclust.config import ColumnMap
from gpuclust.errors import UsageError
from tests.helpers import blob_events, cli

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_toml() -> str:
    """The README's TOML example, as a user copies it."""
    return re.search(r"```toml\n(.*?)```", README.read_text(encoding="utf-8"), re.S).group(1)


@pytest.fixture()
def renamed(tmp_path):
    events, items, _ = blob_events(n_users=90)
    config = PipelineConfig.from_toml(_write(tmp_path / "run.toml", readme_toml()))
    columns = config.columns
    events = events.rename(columns={"user_id": columns.user_id, "timestamp": columns.timestamp})
    assert columns.user_id != "user_id" and columns.timestamp != "timestamp"  # the README still maps something
    events.to_parquet(tmp_path / "events.parquet")
    items.to_parquet(tmp_path / "items.parquet")
    return tmp_path, events, items


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_the_readme_toml_fits_from_python_as_on_the_command_line(renamed, monkeypatch, capsys):
    folder, events, items = renamed
    config = PipelineConfig.from_toml(folder / "run.toml")
    config.device = "cpu"
    model = UserClusterer(config=config).fit(events, items)
    code, _, err = cli(monkeypatch, capsys, "run", "--events", folder / "events.parquet", "--items",
                       folder / "items.parquet", "--config", folder / "run.toml", "--device", "cpu",
                       "--out", folder / "out", "--json")
    assert code == 0, err
    on_cli = pd.read_parquet(folder / "out" / "assignments.parquet")
    assert model.labels_["user_id"].tolist() == on_cli["user_id"].tolist()
    assert model.labels_["cluster"].tolist() == on_cli["cluster"].tolist()
    again = model.predict(events)  # a fitted (and a saved) model maps the same names when placing users
    assert (again["cluster"].to_numpy() == model.labels_["cluster"].to_numpy()).mean() > 0.95


def test_columns_may_be_given_as_a_dict_and_are_checked_like_the_toml():
    config = PipelineConfig(columns=dict(user_id="customer", timestamp="ts"))
    assert isinstance(config.columns, ColumnMap) and config.columns.user_id == "customer"
    with pytest.raises(UsageError, match=r"unknown key\(s\) user in \[columns\]"):
        PipelineConfig(columns=dict(user="customer"))
    with pytest.raises(UsageError, match="config value columns.user_id = 3 has the wrong type"):
        PipelineConfig(columns=dict(user_id=3))


def test_a_mapped_column_missing_from_the_frame_is_named():
    events, _, _ = blob_events(n_users=30)
    events = events.rename(columns={"user_id": "uid"})
    with pytest.raises(UsageError, match=r"events has no column 'customer', which \[columns\] user_id = 'customer'"):
        UserClusterer(3, config=PipelineConfig(columns={"user_id": "customer"})).fit(events)


def test_category_and_text_columns_map_from_python(tmp_path):
    events, items, _ = blob_events(n_users=60)
    items = items.rename(columns={"category": "cat", "title": "name"})
    config = PipelineConfig(device="cpu", columns={"category": "cat", "text": ["name"]})
    model = UserClusterer(3, config=config).fit(events, items)
    assert all(p["top_categories"] for p in model.profiles_)
    assert sorted(model.vocabulary_.columns) == ["category", "item_id", "item_idx", "name", "price"]


@pytest.mark.parametrize(("flag", "value", "expected"), [
    ("--category-col", "cat", r"item column\(s\) 'cat' \(--category-col \(columns.category\)\) not found in"),
    ("--text-cols", "desc", r"item column\(s\) 'desc' \(--text-cols \(columns.text\)\) not found in"),
])
def test_a_named_item_column_that_is_not_there_is_one_line_with_the_real_columns(renamed, monkeypatch, capsys,
                                                                                 flag, value, expected):
    folder, _, _ = renamed
    code, _, err = cli(monkeypatch, capsys, "run", "--events", folder / "events.parquet", "--items",
                       folder / "items.parquet", "--config", folder / "run.toml", "--out", folder / "bad", flag, value)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and re.search(expected, lines[0]), err
    assert "columns found: item_id, title, category, price" in lines[0] and "item_idx" not in lines[0]
    assert not (folder / "bad").exists()


def test_a_named_item_column_is_checked_against_the_header_before_the_file_is_read(renamed, monkeypatch, capsys):
    from gpuclust.io.readers import read_items

    folder, _, items = renamed
    broken = folder / "items.csv"  # a good header, and a row further down that no CSV reader takes
    broken.write_text(items.to_csv(index=False) + "1,2,3,4,5,6,7\n", encoding="utf-8")
    expected = r"item column\(s\) 'cat' \(--category-col \(columns.category\)\) not found in .*items.csv"
    with pytest.raises(UsageError, match=expected):
        read_items(broken, pd, ColumnMap(category="cat"))
    with pytest.raises(UsageError, match="could not read"):  # the row is bad indeed, once the columns are right
        read_items(broken, pd, ColumnMap())
    code, _, err = cli(monkeypatch, capsys, "run", "--events", folder / "events.parquet", "--items", broken,
                       "--config", folder / "run.toml", "--out", folder / "bad", "--category-col", "cat")
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and re.search(expected, lines[0]), err
    assert "columns found: item_id, title, category, price" in lines[0] and not (folder / "bad").exists()
