"""Round 10 of fuzzing: what gpuclust writes, as the next program reads it. Each test is a finding, failing
before its fix: an output that was wrong, lossy or dangerous for whoever opens it (a spreadsheet, a strict
JSON parser, a terminal, a Markdown page)."""

from __future__ import annotations

import csv
import html
import io
import json
import re
from urllib.parse import unquote

import pandas as pd
import pytest

from gpuclust.io.writers import FORMULA_START
from tests.helpers import blob_events, cli, log_runs

# User ids a shop may well have, each a trap for some reader: formulas, a zero-padded code, CSV's own
# characters, markup, unicode, a leading tab or space.
HOSTILE_IDS = ["=cmd|' /C calc'!A0", "+1+1", "-2+3", "@SUM(1)", "007", "a,b", 'q"uote', "new\nline", "ünï",
               "<script>alert(1)</script>", "\tTAB", "-5", "cr\rid"]
TITLE = '=HYPERLINK("http://evil.example","x")'


def _hostile_log() -> tuple[pd.DataFrame, pd.DataFrame]:
    """90 users in 3 groups, the first 12 with HOSTILE_IDS; a catalogue whose titles and categories are
    formulas and markup."""
    events, items, _ = blob_events(n_users=90, n_groups=3, events_per_user=10)
    users = sorted(events["user_id"].unique())
    names = {u: (HOSTILE_IDS[i] if i < len(HOSTILE_IDS) else str(u)) for i, u in enumerate(users)}
    events = events.assign(user_id=events["user_id"].map(names))
    items = items.assign(title=[f"{TITLE} {i}" for i in range(len(items))],
                         category=[["=1+1", "[/x] <b>", "@cat"][i // 30] for i in range(len(items))])
    return events, items


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory):
    """A finished run (k=3) on `_hostile_log`, and its folder's parent."""
    return log_runs(tmp_path_factory.mktemp("round10"), *_hostile_log(), k=3)


def _formula_cells(rows: list[list[str]]) -> list[str]:
    """Cells a spreadsheet would run as a formula (a plain number such as -5 it reads as a number)."""
    return [cell for row in rows for cell in row
            if cell.startswith(FORMULA_START) and not re.fullmatch(r"[+-]?\d+(\.\d*)?", cell)]


# --- CSV: formulas in ids, names and titles -----------------------------------------------------------

def test_an_exported_csv_runs_no_formula_in_a_spreadsheet(hostile_run, tmp_path, monkeypatch, capsys):
    """User ids `=cmd|' /C calc'!A0`, `@SUM(1)` and segment names from a category `=1+1` went into the
    audience CSV as they were: opened in Excel, each cell ran as a formula (CSV injection)."""
    out = tmp_path / "aud"
    code, _, err = cli(monkeypatch, capsys, "export", "--run", hostile_run / "run", "--single-file", "--out", out)
    assert code == 0, err
    rows = list(csv.reader(io.StringIO((out / "audiences.csv").read_text())))
    assert _formula_cells(rows) == []
    assert "warning:" in err and "leading '" in err
    index = json.loads((out / "export.json").read_text())
    assert index["user_id_type"] == "text"  # how to read the column back: '007' is not 7
    assert index["spreadsheet_escaped"]["cells"]["user_id"] == 5  # =cmd, +1+1, -2+3, @SUM(1), a tab; not -5
    # what was escaped is the id with a quote before it, nothing else: every id is still recoverable
    read = pd.read_csv(out / "audiences.csv", dtype={"user_id": str}, keep_default_na=False)
    ids = [i[1:] if i.startswith("'") and i[1:].startswith(FORMULA_START) else i for i in read["user_id"]]
    assert sorted(ids) == sorted(pd.read_parquet(hostile_run / "run" / "assignments.parquet")["user_id"])


def test_an_id_with_a_carriage_return_keeps_its_row(hostile_run, tmp_path, monkeypatch, capsys):
    """pandas writes CSV lines ending in "\\n" and quotes only fields holding one: the id "cr\\rid" went out
    bare, and a CSV reader split its row in two (a user "cr" with no segment, a user "id,2,..." )."""
    out = tmp_path / "aud"
    code, _, err = cli(monkeypatch, capsys, "export", "--run", hostile_run / "run", "--single-file", "--out", out)
    assert code == 0, err
    with open(out / "audiences.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert all(len(row) == 6 for row in rows)
    assert "cr\rid" in {row[0] for row in rows}
    assert len(rows) == 1 + len(pd.read_parquet(hostile_run / "run" / "assignments.parquet"))
    code, printed, err = cli(monkeypatch, capsys, "recommend", "--run", hostile_run / "run", "--events",
                             hostile_run / "events.parquet", "--top-k", 2)
    assert code == 0, err
    rows = list(csv.reader(io.StringIO(printed, newline="")))
    assert all(len(row) == 5 for row in rows) and "cr\rid" in {row[0] for row in rows}


def test_a_parquet_export_keeps_every_id_exact(hostile_run, tmp_path, monkeypatch, capsys):
    """The other side of the guard: Parquet is typed, nothing in it runs, so the ids stay as they were."""
    out = tmp_path / "aud"
    code, _, err = cli(monkeypatch, capsys, "export", "--run", hostile_run / "run", "--single-file", "--format",
                       "parquet", "--out", out)
    assert code == 0, err
    assert "warning" not in err
    got = pd.read_parquet(out / "audiences.parquet")["user_id"]
    assert set(HOSTILE_IDS) <= set(got)
    assert "spreadsheet_escaped" not in json.loads((out / "export.json").read_text())


def test_the_reports_csv_downloads_run_no_formula(hostile_run, monkeypatch, capsys):
    """The report's 'Download CSV' links carried catalogue titles `=HYPERLINK(...)` as they were."""
    code, _, err = cli(monkeypatch, capsys, "report", "--run", hostile_run / "run")
    assert code == 0, err
    page = (hostile_run / "run" / "report.html").read_text()
    links = re.findall(r"href='(data:text/csv[^']*)'", page)
    assert links
    rows = [row for link in links
            for row in csv.reader(io.StringIO(unquote(html.unescape(link).split(",", 1)[1])))]
    assert any(TITLE in cell for row in rows for cell in row)  # the titles are there, shown as text
    assert _formula_cells(rows) == []


def test_recommended_lists_as_csv_run_no_formula(hostile_run, monkeypatch, capsys):
    """`recommend --events` printed each user's list as CSV with the ids as they were: `@SUM(1)` ran."""
    code, out, err = cli(monkeypatch, capsys, "recommend", "--run", hostile_run / "run", "--events",
                         hostile_run / "events.parquet", "--top-k", 2)
    assert code == 0, err
    rows = list(csv.reader(io.StringIO(out)))
    assert {"'@SUM(1)", "'=cmd|' /C calc'!A0", "-5"} <= {row[0] for row in rows}
    assert _formula_cells(rows) == []
    assert "warning:" in err and "leading '" in err


# --- JSON on stdout: strict, as the files are ---------------------------------------------------------

def _strict(text: str):
    """json.loads that refuses NaN and Infinity, as JavaScript's JSON.parse, Go and jq do."""
    def refuse(constant: str):
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_run_json_on_stdout_is_strict_json_when_a_metric_is_undefined(tmp_path, monkeypatch, capsys):
    """One DBSCAN cluster has no silhouette: manifest.json said null, but `run --json` printed NaN, which
    strict parsers refuse (the whole result lost for one metric)."""
    events, _, _ = blob_events(n_users=60, n_groups=2, events_per_user=8)
    events.to_parquet(tmp_path / "events.parquet")
    code, out, err = cli(monkeypatch, capsys, "run", "--events", tmp_path / "events.parquet", "--algorithm",
                         "dbscan", "--eps", 100, "--device", "cpu", "--out", tmp_path / "run", "--json")
    assert code == 0, err
    printed = _strict(out)
    assert printed["metrics"]["silhouette"] is None
    assert _strict((tmp_path / "run" / "manifest.json").read_text())["metrics"]["silhouette"] is None


# --- the terminal: user data is shown, never obeyed ----------------------------------------------------

def test_the_run_table_shows_categories_that_look_like_markup_or_terminal_codes(tmp_path, monkeypatch, capsys):
    """A category `[/x] ...` ended the run (its outputs already written) in rich's MarkupError, a traceback
    and exit 1; an ESC sequence in one (`\\x1b]0;...\\x07` retitles a terminal, `\\x1b[2J` clears it) reached
    the terminal as it was."""
    events, items, _ = blob_events(n_users=60, n_groups=2, events_per_user=8)
    items = items.assign(category=[["[/x] odd", "\x1b]0;pwned\x07 \x1b[2Jgone"][i // 30] for i in range(len(items))])
    events.to_parquet(tmp_path / "events.parquet")
    items.to_parquet(tmp_path / "items.parquet")
    code, out, err = cli(monkeypatch, capsys, "run", "--events", tmp_path / "events.parquet", "--items",
                         tmp_path / "items.parquet", "--k", 2, "--device", "cpu", "--out", tmp_path / "run")
    assert code == 0, err
    assert "[/x] odd" in out
    assert "\x1b" not in out and "\x07" not in out
    assert "\\x1b" in out and "pwned" in out  # shown, as an escape


def test_the_campaign_table_keeps_one_row_per_item_whatever_its_title(tmp_path, monkeypatch, capsys):
    """`recommend --segments` prints a Markdown table: a title with a '|' split its row into more columns,
    and one with a line break into two rows, the second of which no Markdown reader takes as a row."""
    code, _, err = cli(monkeypatch, capsys, "synth", "--users", 300, "--items", 80, "--groups", 3, "--out",
                       tmp_path / "data")
    assert code == 0, err
    items = pd.read_parquet(tmp_path / "data" / "items.parquet")
    items = items.assign(title=[f"left | right\nnext line {i}" for i in range(len(items))])
    items.to_parquet(tmp_path / "items.parquet")
    code, _, err = cli(monkeypatch, capsys, "run", "--events", tmp_path / "data" / "events.parquet", "--items",
                       tmp_path / "items.parquet", "--k", 3, "--device", "cpu", "--out", tmp_path / "run", "--json")
    assert code == 0, err
    code, out, err = cli(monkeypatch, capsys, "recommend", "--run", tmp_path / "run", "--segments", "--top-k", 3)
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) > 2
    assert all(len(re.split(r"(?<!\\)\|", line)) == 8 for line in lines)  # 6 cells between 7 pipes
    assert all("left \\| right next line" in line for line in lines[2:])


# --- the report's pictures -------------------------------------------------------------------------------

def test_the_report_draws_names_with_dollar_signs_as_text(tmp_path, monkeypatch, capsys):
    """matplotlib read a category between two `$` as TeX: `save $\\frac{ now$` ended `gpuclust report` in a
    traceback (exit 1, no report), and `under $5 or $10` would have been drawn as an italic formula."""
    events, items, _ = blob_events(n_users=60, n_groups=2, events_per_user=8)
    items = items.assign(category=[["save $\\frac{ now$", "under $5 or $10"][i // 30] for i in range(len(items))])
    events.to_parquet(tmp_path / "events.parquet")
    items.to_parquet(tmp_path / "items.parquet")
    code, _, err = cli(monkeypatch, capsys, "run", "--events", tmp_path / "events.parquet", "--items",
                       tmp_path / "items.parquet", "--k", 2, "--device", "cpu", "--out", tmp_path / "run", "--json")
    assert code == 0, err
    code, _, err = cli(monkeypatch, capsys, "report", "--run", tmp_path / "run")
    assert code == 0, err
    assert {"map.png", "sizes.png", "lift.png"} <= {p.name for p in (tmp_path / "run" / "report").iterdir()}
    assert "save $\\frac{ now$" in html.unescape((tmp_path / "run" / "report.html").read_text())


# --- dtypes a consumer's schema can count on -------------------------------------------------------------

def test_one_missing_user_id_in_a_csv_leaves_the_outputs_ids_int64(tmp_path, monkeypatch, capsys):
    """A CSV whose integer user ids had one gap was read nullable (Int64); the row was dropped (and warned
    about), but assignments.parquet, map.parquet and assign's output kept the nullable type, so a consumer
    read Int64 from one day's run and int64 from the next."""
    events, _, _ = blob_events(n_users=60, n_groups=2, events_per_user=8)
    events.to_csv(tmp_path / "full.csv", index=False)
    gap = events.astype({"user_id": "object"})
    gap.loc[0, "user_id"] = None
    gap.to_csv(tmp_path / "gap.csv", index=False)
    for name in ("full", "gap"):
        code, _, err = cli(monkeypatch, capsys, "run", "--events", tmp_path / f"{name}.csv", "--k", 2, "--device",
                           "cpu", "--out", tmp_path / name, "--json")
        assert code == 0, err
    code, _, err = cli(monkeypatch, capsys, "assign", "--model", tmp_path / "full" / "model", "--events",
                       tmp_path / "gap.csv", "--out", tmp_path / "placed", "--json")
    assert code == 0, err
    for path in (tmp_path / "gap" / "assignments.parquet", tmp_path / "gap" / "map.parquet",
                 tmp_path / "placed" / "assignments.parquet", tmp_path / "full" / "assignments.parquet"):
        assert str(pd.read_parquet(path)["user_id"].dtype) == "int64", path
    code, _, err = cli(monkeypatch, capsys, "export", "--run", tmp_path / "gap", "--out", tmp_path / "aud")
    assert code == 0, err
    assert json.loads((tmp_path / "aud" / "export.json").read_text())["user_id_type"] == "integer"


def test_names_from_a_language_model_are_shown_not_obeyed(tmp_path, capsys):
    """A described run's table printed the model's answers and its path through rich markup: a name with
    `[/b]` (or a model folder `models/[/v2]`) ended the command in MarkupError after the outputs were written."""
    from gpuclust import UserClusterer
    from gpuclust.cli.app import report
    from gpuclust.explain.describe import Describer, Generation

    class Answers:
        name = "models/[/v2]"

        def generate(self, prompts: list[str]) -> Generation:
            return Generation(["Name: [/b] loyal \x1b[2J buyers\nDescription: They buy often and spend well on "
                               "most visits. Offers reach them." for _ in prompts])

    events, items, _ = blob_events(n_users=60, n_groups=2, events_per_user=8)
    model = UserClusterer(n_clusters=2, features=["behaviour"], device="cpu",
                          describer=Describer(Answers())).fit(events, items)
    assert all(p["described_by"] == "models/[/v2]" for p in model.profiles_)
    report(model, tmp_path, json_out=False)
    out = capsys.readouterr().out
    assert "[/b] loyal" in out and "models/[/v2]" in out and "\x1b" not in out


@pytest.mark.parametrize("folder", ["[old]", "[/v2]"])
def test_the_output_path_is_printed_as_it_is(tmp_path, monkeypatch, capsys, folder):
    """`--out runs/[old]/run` was reported as written to `runs//run` (rich read `[old]` as a style), and a
    folder `[/v2]` ended the run in MarkupError, a traceback and exit 1 after every output was written."""
    events, _, _ = blob_events(n_users=60, n_groups=2, events_per_user=8)
    events.to_parquet(tmp_path / "events.parquet")
    out = tmp_path / folder / "run"
    code, printed, err = cli(monkeypatch, capsys, "run", "--events", tmp_path / "events.parquet", "--k", 2,
                             "--device", "cpu", "--out", out)
    assert code == 0, err
    assert f"{folder}/run" in "".join(printed.split())  # the table may wrap the line; the path is whole
    code, printed, err = cli(monkeypatch, capsys, "assign", "--model", out / "model", "--events",
                             tmp_path / "events.parquet", "--out", tmp_path / folder / "placed")
    assert code == 0, err
    assert f"{folder}/placed" in "".join(printed.split())


def test_embed_prints_its_output_path_as_it_is(tmp_path, monkeypatch, capsys):
    """embed's summary table read its output path as markup: a folder `[/v2]` ended it in MarkupError after
    the vectors were written."""
    pytest.importorskip("transformers")
    _, items, _ = blob_events(n_users=30, n_groups=1, events_per_user=2)
    items.head(8).to_parquet(tmp_path / "items.parquet")
    out = tmp_path / "[" / "v2]" / "vectors.parquet"
    code, printed, err = cli(monkeypatch, capsys, "embed", "--items", tmp_path / "items.parquet", "--out", out,
                             "--device", "cpu")
    assert code == 0, err
    assert "[/v2]" in "".join(printed.split())


def test_strict_json_takes_numpy_flags_and_dates():
    """--json printed with `default=str` before it was strict; json_text, which it prints with now, refused
    NumPy's bool and dates (TypeError after the work), where the old print gave them as text."""
    import datetime

    import numpy as np

    from gpuclust.io.writers import json_text

    text = json_text({"flag": np.bool_(True), "day": datetime.date(2026, 1, 2), "n": np.int64(2**60 + 7),
                      "bad": float("nan")})
    assert _strict(text) == {"flag": True, "day": "2026-01-02", "n": 2**60 + 7, "bad": None}
