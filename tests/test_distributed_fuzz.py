"""Hostile input found by a fuzz round of the Dask path (`--scheduler local`), each checked against what one
process does with the same input: the same refusal in one line and exit 2, nothing written, and a user id
never in clear where a key was asked for."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from gpuclust.errors import UsageError
from tests.helpers import blob_events, cli

distributed = pytest.importorskip("distributed")

LOCAL = ["--scheduler", "local", "--workers", "2", "--threads-per-worker", "1"]


@pytest.fixture(scope="module")
def dask_flags():
    """The Dask flags of these tests: the address of one cluster, started as `LOCAL` starts one (gpuclust's own
    start_local: two single-threaded worker processes with the worker setup preloaded) and shared by the
    module, where each command started and closed its own (seconds each). What a command does with a cluster
    is the same either way; `--scheduler local` itself runs in test_a_frame_with_mixed_ids_gets_the_same_note
    here and in tests/test_distributed.py, tests/test_distributed_hostile.py and tests/test_fuzz_leftovers.py."""
    from gpuclust.config import DaskConfig
    from gpuclust.distributed.cluster import start_local

    cluster, _, _ = start_local(DaskConfig("local", 2, 1), "cpu")
    yield ["--scheduler", cluster.scheduler_address]
    cluster.close()


def _one_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if not line[:2].isdigit()]  # progress lines: hh:mm:ss
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture(scope="module")
def private_run(tmp_path_factory) -> tuple[Path, Path, Path]:
    """A run fitted in one process on pseudonymised ids: (its folder, the key file, the events file)."""
    from gpuclust.config import PipelineConfig
    from gpuclust.run import run_files

    folder = tmp_path_factory.mktemp("private")
    events, _, _ = blob_events(n_users=60, events_per_user=8)
    events.to_parquet(folder / "events.parquet")
    (folder / "key").write_text("k" * 32)
    config = PipelineConfig()
    config.cluster.k = 2
    run_files(config, folder / "events.parquet", folder / "run", pseudonymise=folder / "key")
    return folder / "run", folder / "key", folder / "events.parquet"


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory) -> tuple[Path, Path]:
    """A run fitted in one process on raw ids: (its folder, its events file)."""
    from gpuclust.config import PipelineConfig
    from gpuclust.run import run_files

    folder = tmp_path_factory.mktemp("plain")
    events, _, _ = blob_events(n_users=60, events_per_user=8)
    events.to_parquet(folder / "events.parquet")
    config = PipelineConfig()
    config.cluster.k = 2
    run_files(config, folder / "events.parquet", folder / "run")
    return folder / "run", folder / "events.parquet"


def test_assign_on_the_cluster_refuses_a_private_model_without_writing_raw_ids(dask_flags, private_run, tmp_path, monkeypatch,
                                                                              capsys):
    """One process refuses a private model without its key; on Dask the users were placed and written with
    their raw ids (exit 0), the ids the key was there to hide."""
    run, _, events = private_run
    code, _, err = cli(monkeypatch, capsys, "assign", "--model", run / "model", "--events", events, "--out",
                       tmp_path / "one")
    assert code == 2 and "fitted on pseudonymised user ids" in _one_line(err)
    code, _, err = cli(monkeypatch, capsys, "assign", "--model", run / "model", "--events", events, *dask_flags, "--out",
                       tmp_path / "dask")
    line = _one_line(err)
    assert code == 2 and "fitted on pseudonymised user ids" in line and "without --scheduler" in line, err
    assert not (tmp_path / "one").exists() and not (tmp_path / "dask").exists()



def test_id_notes_count_the_rows_they_read_as_in_one_process(dask_flags, tmp_path, monkeypatch, capsys):
    """Float ids with gaps are read as integers on both paths; the manifest's note said so over 0 rows on Dask
    (rows_in 0, rows_out 0 between steps of thousands), and over the rows left in one process."""
    import json

    import numpy as np

    events, _, _ = blob_events(n_users=40, events_per_user=6)
    events = events.astype({"user_id": "float64", "item_id": "float64"})
    events.loc[::7, "user_id"] = np.nan
    events.to_parquet(tmp_path / "events.parquet")
    steps = []
    for where, flags in (("one", []), ("dask", dask_flags)):
        code, _, err = cli(monkeypatch, capsys, "run", "--events", tmp_path / "events.parquet", "--k", "2", *flags,
                           "--out", tmp_path / where)
        assert code == 0, err
        manifest = json.loads((tmp_path / where / "manifest.json").read_text())
        steps.append([(s["step"], s["rows_in"], s["rows_out"]) for s in manifest["rows"]["steps"]])
    assert steps[0] == steps[1]
    assert ("user_id_types", len(events) - len(events[::7]), len(events) - len(events[::7])) in steps[1]


def test_assign_on_the_cluster_writes_empty_partitions_with_the_ids_type(dask_flags, plain_run, tmp_path, monkeypatch, capsys):
    """A partition without users wrote user_id as int64 beside text ids in the others: the dataset's files
    disagreed, and pandas/pyarrow could not read it back when an empty file came first ("Failed to parse
    string ... as a scalar of type int64")."""
    import pyarrow.parquet as pq

    run, events = plain_run
    one = pd.read_parquet(events).query("user_id == 100").assign(user_id="u100")
    one.to_parquet(tmp_path / "one.parquet")
    code, _, err = cli(monkeypatch, capsys, "assign", "--model", run / "model", "--events", tmp_path / "one.parquet",
                       *dask_flags, "--partitions", "8", "--out", tmp_path / "placed")
    assert code == 0, err
    files = sorted((tmp_path / "placed" / "assignments").glob("part.*.parquet"))
    assert len(files) == 8
    assert {str(pq.read_schema(f).field("user_id").type) for f in files} == {"large_string"}
    assert pd.read_parquet(tmp_path / "placed" / "assignments")["user_id"].tolist() == ["u100"]


@pytest.mark.parametrize("fault, code, words", [
    (lambda df: df.assign(event_type="teleport"), 2, "map yours to these in the events file, or refit"),
    (lambda df: df.assign(event_type=df["event_type"].where(df.index % 2 == 0, "teleport")), 0,
     "the model knows only view, click, cart, purchase, rating; refit with gpuclust run --event-weights"),
    (lambda df: df.assign(item_id=df["item_id"] + 10**6), 2, "none of the events is on an item the saved model knows"),
    (lambda df: df.assign(item_id=df["item_id"].where(df.index % 2 == 0, df["item_id"] + 10**6)), 0,
     "item not in the model's vocabulary; the model places users by the items it was fitted on"),
])
def test_assign_on_the_cluster_says_what_one_process_says(dask_flags, plain_run, tmp_path, monkeypatch, capsys, fault, code,
                                                          words):
    """Events of types or on items the model does not know: on Dask, assign told the user to pass
    --event-weights (a flag assign does not have), named another step when no item was known, and dropped
    half the events on unknown items without a word."""
    run, events = plain_run
    fault(pd.read_parquet(events)).reset_index(drop=True).to_parquet(tmp_path / "new.parquet")
    said = []
    for where, flags in (("one", []), ("dask", dask_flags)):
        got, _, err = cli(monkeypatch, capsys, "assign", "--model", run / "model", "--events", tmp_path / "new.parquet",
                          *flags, "--out", tmp_path / where)
        assert got == code and (tmp_path / where).exists() == (code == 0), err
        said.append(_one_line(err))
    assert said[0] == said[1] and words in said[1], said


def test_report_and_export_read_a_run_made_on_the_cluster(dask_flags, plain_run, tmp_path, monkeypatch, capsys):
    """A `run --scheduler` writes its assignments as a dataset (assignments/part.N.parquet); report and export
    refused that finished run as "assignments.parquet not found; ... is not a finished run"."""
    import json

    _, events = plain_run
    code, _, err = cli(monkeypatch, capsys, "run", "--events", events, "--k", "2", *dask_flags, "--out", tmp_path / "run")
    assert code == 0, err
    code, _, err = cli(monkeypatch, capsys, "report", "--run", tmp_path / "run")
    assert code == 0 and (tmp_path / "run" / "report.html").is_file(), err
    code, _, err = cli(monkeypatch, capsys, "export", "--run", tmp_path / "run", "--format", "csv", "--out",
                       tmp_path / "audiences")
    assert code == 0, err
    index = json.loads((tmp_path / "audiences" / "export.json").read_text())
    assert sum(s["users"] for s in index["segments"]) == pd.read_parquet(events)["user_id"].nunique()


def test_recommend_takes_the_key_of_a_private_model_and_prints_pseudonyms(private_run, monkeypatch, capsys):
    """`recommend --events` on a pseudonymised run said "give the same key (--pseudonymise KEY_FILE ...)", and
    recommend had no such option: a private model's users could get no list from the command line."""
    import io

    run, key, events = private_run
    code, _, err = cli(monkeypatch, capsys, "recommend", "--run", run, "--events", events, "--top-k", "2")
    assert code == 2 and "--pseudonymise KEY_FILE" in _one_line(err)
    code, out, err = cli(monkeypatch, capsys, "recommend", "--run", run, "--events", events, "--top-k", "2",
                         "--pseudonymise", key)
    assert code == 0, err
    lists = pd.read_csv(io.StringIO(out), dtype={"user_id": str})
    raw = set(pd.read_parquet(events)["user_id"].astype(str))
    assert len(lists) and not raw & set(lists["user_id"]) and lists["user_id"].str.fullmatch("[0-9a-f]{32}").all()


def test_a_value_column_of_text_is_refused_with_the_whole_inputs_count(dask_flags, tmp_path, monkeypatch, capsys):
    """Values written with a decimal comma: one process counts every such row in its one line; on Dask the
    first partition to fail counted only its own rows (e.g. 4,799 of 18,398)."""
    events, _, _ = blob_events(n_users=60, events_per_user=5)
    events = events.assign(value=events["value"].map(lambda v: f"{v:.2f}".replace(".", ",")))
    (tmp_path / "parts").mkdir()
    for i, part in enumerate((events.iloc[:100], events.iloc[100:200], events.iloc[200:])):
        part.to_parquet(tmp_path / "parts" / f"part.{i}.parquet")
    events.to_parquet(tmp_path / "all.parquet")
    said = []
    for source, flags in ((tmp_path / "all.parquet", []), (tmp_path / "parts", dask_flags)):
        code, _, err = cli(monkeypatch, capsys, "run", "--events", source, "--k", "2", *flags, "--out", tmp_path / "o")
        assert code == 2 and not (tmp_path / "o").exists(), err
        said.append(_one_line(err))
    assert said[0] == said[1] and "e.g. '0,00' (300 rows)" in said[0], said


def test_missing_event_types_in_a_string_column_are_counted_not_a_traceback(dask_flags, tmp_path, monkeypatch, capsys):
    """A missing event type is pd.NA in a pyarrow string column (what Dask reads from Parquet): counting the
    unknown types asked `NA != NA` for a truth value and every such run ended in "TypeError: boolean value of NA
    is ambiguous", exit 1; one process read the same file (NaN) and warned."""
    from gpuclust.estimator import UserClusterer

    events, _, _ = blob_events(n_users=60, events_per_user=5)
    events.loc[::25, "event_type"] = None
    with pytest.warns(UserWarning, match=r"'\(missing\)' 12"):
        UserClusterer(2, seed=0).fit(events.astype({"event_type": "string[pyarrow]"}))
    events.to_parquet(tmp_path / "events.parquet")
    said = []
    for where, flags in (("one", []), ("dask", dask_flags)):
        code, _, err = cli(monkeypatch, capsys, "run", "--events", tmp_path / "events.parquet", "--k", "2", *flags,
                           "--out", tmp_path / where)
        assert code == 0, err
        said.append([line for line in err.splitlines() if line.startswith("warning: dropped")])
    assert said[0] == said[1] and len(said[0]) == 1 and "'(missing)' 12" in said[0][0]


def test_rows_without_an_event_type_are_told_to_fill_it_not_to_weigh_it(tmp_path):
    """The fix of a drop of rows without an event type read "--event-weights view=1,...,(missing)=W": a weight
    for a name that is no type and that no flag can give."""
    from gpuclust.estimator import UserClusterer

    events, _, _ = blob_events(n_users=60, events_per_user=5)
    events.loc[::25, "event_type"] = None
    with pytest.warns(UserWarning) as caught:
        UserClusterer(2, seed=0).fit(events)
    said = [str(w.message) for w in caught if "event type without a weight" in str(w.message)]
    assert len(said) == 1 and "(missing)=W" not in said[0] and "fill in the missing event types" in said[0]
    events.loc[1::25, "event_type"] = "teleport"
    with pytest.warns(UserWarning) as caught:
        UserClusterer(2, seed=0).fit(events)
    said = [str(w.message) for w in caught if "event type without a weight" in str(w.message)]
    assert len(said) == 1 and "(missing)=W" not in said[0] and ",teleport=W" in said[0]
    assert said[0].endswith("; and fill in the missing event types")


def test_a_catalogue_of_mixed_kinds_is_read_on_the_cluster_as_in_one_process(dask_flags, tmp_path, monkeypatch, capsys):
    """An items file (JSON Lines) whose category mixes numbers and words and whose prices are partly words: one
    process reads categories as text and prices as numbers (a manifest note); the Dask path skipped that and
    ended in "TypeError: '<' not supported between instances of 'str' and 'int'", exit 1."""
    import json

    events, items, _ = blob_events(n_users=60, events_per_user=5)
    events.to_parquet(tmp_path / "events.parquet")
    items = items.astype({"category": object, "price": object})
    items.loc[::3, "category"] = 7
    items.loc[::4, "price"] = "cheap"
    items.to_json(tmp_path / "items.jsonl", orient="records", lines=True)
    steps = []
    for where, flags in (("one", []), ("dask", dask_flags)):
        code, _, err = cli(monkeypatch, capsys, "run", "--events", tmp_path / "events.parquet", "--items",
                           tmp_path / "items.jsonl", "--k", "2", *flags, "--out", tmp_path / where)
        assert code == 0, err
        manifest = json.loads((tmp_path / where / "manifest.json").read_text())
        steps.append([(s["step"], s["rows_in"], s["rows_out"], s["why"]) for s in manifest["rows"]["steps"]])
    assert steps[0] == steps[1]
    assert ("item_prices", 90, 90, "23 item prices are not numbers and count as missing") in steps[1]


def test_a_dataset_folder_with_a_readme_is_read_without_it(dask_flags, tmp_path, monkeypatch, capsys):
    """A README beside the Parquet files: the files gpuclust lists leave it out, but the schema was read from the
    whole folder, and the run was refused as "part.0.parquet is not a readable Parquet file (... Could not read
    schema from '.../README.md' ...)", blaming a good file."""
    events, _, _ = blob_events(n_users=60, events_per_user=5)
    (tmp_path / "events").mkdir()
    for i, part in enumerate((events.iloc[:150], events.iloc[150:])):
        part.to_parquet(tmp_path / "events" / f"part.{i}.parquet")
    (tmp_path / "events" / "README.md").write_text("exported on Monday\n")
    code, _, err = cli(monkeypatch, capsys, "run", "--events", tmp_path / "events", "--k", "2", *dask_flags, "--out",
                       tmp_path / "run")
    assert code == 0, err
    assert pd.read_parquet(tmp_path / "run" / "assignments")["user_id"].nunique() == 60


@pytest.mark.parametrize("command", ["run", "assign"])
def test_an_output_inside_the_events_dataset_folder_is_refused(dask_flags, plain_run, tmp_path, monkeypatch, capsys, command):
    """`--events data/ --out data/run` was written, and the next run over data/ read the outputs' Parquet files
    (assignments, map, the model's) and its JSON as events: refused, naming a good file, or worse."""
    run, events = plain_run
    (tmp_path / "data").mkdir()
    pd.read_parquet(events).to_parquet(tmp_path / "data" / "part.0.parquet")
    before = sorted(p.name for p in (tmp_path / "data").iterdir())
    fitted = ["--k", "2"] if command == "run" else ["--model", run / "model"]
    code, _, err = cli(monkeypatch, capsys, command, "--events", tmp_path / "data", *fitted, *dask_flags, "--out",
                       tmp_path / "data" / "out")
    assert code == 2 and "is inside the events dataset folder" in _one_line(err), err
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == before


def test_item_rows_left_out_are_warned_about_on_both_paths(dask_flags, tmp_path, monkeypatch, capsys):
    """A catalogue with a row per item twice and rows without an id: the first row per id is kept, and both
    paths say how many rows were left out and why (the reader dropped them silently)."""

    events, items, _ = blob_events(n_users=60, events_per_user=5)
    events.to_parquet(tmp_path / "events.parquet")
    first_title = items["title"].iloc[0]
    repeated = items.head(3).assign(title="a later row")
    no_id = items.head(2).astype({"item_id": object}).assign(item_id=None)
    pd.concat([items.astype({"item_id": object}), repeated, no_id]).to_parquet(tmp_path / "items.parquet")
    total = len(items) + 5
    for where, flags in (("one", []), ("dask", dask_flags)):
        code, _, err = cli(monkeypatch, capsys, "run", "--events", tmp_path / "events.parquet", "--items",
                           tmp_path / "items.parquet", "--k", "2", *flags, "--out", tmp_path / where)
        assert code == 0, err
        assert f"warning: dropped 2 of {total} item rows" in err and "the row has no item id" in err, err
        assert f"warning: dropped 3 of {total} item rows" in err and "the same item id" in err, err
        assert "a later row" not in (tmp_path / where / "clusters.json").read_text()
    from gpuclust.preprocess.parse import keyed_items

    with pytest.warns(UserWarning, match="first row per id is kept"):
        kept = keyed_items(pd.concat([items, repeated]))
    assert kept["title"].iloc[0] == first_title and len(kept) == len(items)


@pytest.mark.parametrize("pattern, out, refused", [
    ("data/**/*.parquet", "data/run", True),   # recursive: every depth below data/
    ("data/*/*.parquet", "data/run", True),    # data/run/assignments.parquet matches
    ("data/*.parquet", "data/run", False),     # one level: data/run's files are a level deeper
    ("data/p*/*.parquet", "data/run", False),  # data/run is not data/p*
    ("data/*.parquet", "elsewhere/run", False),
])
def test_an_output_where_the_events_glob_reaches_is_refused(tmp_path, monkeypatch, pattern, out, refused):
    """The folder rule (`check_out_outside`) for a glob: refused only where the next run's pattern would read the
    outputs, so that `--events 'data/*.parquet' --out data/run` stays allowed."""
    from gpuclust.distributed.run import check_out_outside

    monkeypatch.chdir(tmp_path)
    if refused:
        with pytest.raises(UsageError, match="is where the events pattern .* reaches"):
            check_out_outside(pattern, out)
    else:
        check_out_outside(pattern, out)


def test_a_frame_with_mixed_ids_gets_the_same_note_on_the_cluster():
    """A pandas frame whose item ids mix numbers and text, fitted on Dask: Dask's from_pandas turned the column
    into text itself, so the fit read it as text without the note one process writes."""
    import warnings

    from gpuclust import PipelineConfig, UserClusterer

    events, _, _ = blob_events(n_users=60, events_per_user=5)
    events["item_id"] = events["item_id"].astype(object)
    events.loc[::7, "item_id"] = events.loc[::7, "item_id"].astype(str) + "x"
    notes = []
    for scheduler in (None, "local"):
        config = PipelineConfig(device="cpu")
        config.cluster.k = 2
        if scheduler:
            config.dask.scheduler, config.dask.workers, config.dask.threads_per_worker = scheduler, 2, 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fitted = UserClusterer(config=config, features=["behaviour", "tfidf"]).fit(events)
        notes.append([(s["step"], s["rows_in"], s["why"]) for s in fitted.manifest_["rows"]["steps"]
                      if s["step"].endswith("_types")])
    assert notes[0] == notes[1]
    assert ("item_id_types", len(events), "item_id: ids of mixed types or wider than int64 read as text") in notes[1]


@pytest.mark.parametrize("unknown", ["item", "event type"])
def test_assign_on_the_cluster_counts_the_users_left_without_a_known_item(dask_flags, plain_run, tmp_path, monkeypatch, capsys,
                                                                          unknown):
    """A user whose every event is on an unknown item, or of an unknown type, gets no cluster: one process and
    Dask count those users in one and the same warning (the partitions hold whole users, so their counts add
    up)."""
    run, events = plain_run
    frame = pd.read_parquet(events)
    if unknown == "item":
        frame = frame.assign(item_id=frame["item_id"].where(frame["user_id"] != 100, frame["item_id"] + 10**6))
    else:
        frame = frame.assign(event_type=frame["event_type"].astype(str).where(frame["user_id"] != 100, "wishlist"))
    frame.to_parquet(tmp_path / "new.parquet")
    said = []
    for where, flags in (("one", []), ("dask", dask_flags)):
        code, _, err = cli(monkeypatch, capsys, "assign", "--model", run / "model", "--events", tmp_path / "new.parquet",
                           *flags, "--out", tmp_path / where)
        assert code == 0, err
        said.append([line for line in err.splitlines() if line.startswith("warning: dropped 1 of 60 users")])
    assert len(said[0]) == 1 and said[0] == said[1], said
