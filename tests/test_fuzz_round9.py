"""Round 9 of fuzzing: silent wrong answers. Each test is a finding, failing before its fix: an input that
gpuclust took without a word and answered wrongly (users merged or split, items lost, times misread)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tests.helpers import blob_events, cli


@pytest.fixture()
def log(tmp_path):
    """(events, items) of 90 users in 3 groups, and the folder to write them to."""
    events, items, _ = blob_events(n_users=90, n_groups=3, events_per_user=10)
    return events, items, tmp_path


def _run(monkeypatch, capsys, events, out, *more) -> tuple[pd.DataFrame, dict, str]:
    code, _, stderr = cli(monkeypatch, capsys, "run", "--events", events, *more, "--k", 3, "--out", out, "--json")
    assert code == 0, stderr
    assignments = out / "assignments.parquet"  # a folder of parts on Dask
    return (pd.read_parquet(assignments if assignments.exists() else out / "assignments"),
            json.loads((out / "manifest.json").read_text()), stderr)


def _write(frame: pd.DataFrame, path) -> None:
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    elif path.suffix == ".json":
        path.write_text(frame.to_json(orient="records", date_format="iso"))
    else:
        frame.to_json(path, orient="records", lines=True, date_format="iso")


# --- JSON: pandas' type guessing ------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_json_epochs_mixing_seconds_and_milliseconds_are_read_by_magnitude(log, monkeypatch, capsys, suffix):
    """pandas' JSON reader turned a column named 'timestamp' into dates by one unit for the whole column:
    with seconds beside milliseconds, every seconds epoch became a date in January 1970 (the run went on)."""
    events, _, folder = log
    seconds = events["timestamp"].astype("datetime64[s]").astype("int64")
    mixed = events.assign(timestamp=seconds.where(events.index % 2 == 0, seconds * 1000))
    mixed.to_parquet(folder / "mixed.parquet")
    _write(mixed, folder / f"mixed{suffix}")
    want, _, _ = _run(monkeypatch, capsys, folder / "mixed.parquet", folder / "a")
    got, manifest, _ = _run(monkeypatch, capsys, folder / f"mixed{suffix}", folder / "b")
    steps = {s["step"]: s["why"] for s in manifest["rows"]["steps"]}
    assert steps["epoch_units"] == "Unix epochs read per value by magnitude: 450 in s, 450 in ms"
    pd.testing.assert_frame_equal(got, want)


# --- ids a text reader guessed were numbers -------------------------------------------------------

def _padded(events: pd.DataFrame, items: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Text ids, half of the users zero-padded so that '0100' and '100' are two people, and every item
    zero-padded ('0007'), as a shop's codes often are."""
    users = events["user_id"]
    user = users.astype(str).where(users < 145, "0" + (users - 45).astype(str))
    return (events.assign(user_id=user, item_id=events["item_id"].map("{:04d}".format)),
            items.assign(item_id=items["item_id"].map("{:04d}".format)))


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".json"])
def test_zero_padded_ids_in_a_text_file_keep_their_zeros(log, monkeypatch, capsys, suffix):
    """'0100' and '100' were read as the one number 100: two users silently merged into one (45 of 90
    users placed), and the items' '0007' became 7, unknown to a Parquet file of the same shop."""
    events, items, folder = log
    events, items = _padded(events, items)
    _write(events, folder / f"events{suffix}")
    _write(items, folder / f"items{suffix}")
    got, _, stderr = _run(monkeypatch, capsys, folder / f"events{suffix}", folder / "out", "--items",
                          folder / f"items{suffix}")
    assert stderr == ""
    assert sorted(got["user_id"]) == sorted(events["user_id"].unique())  # 90 users, "0100" beside "100"
    clusters = json.loads((folder / "out" / "clusters.json").read_text())["clusters"]
    assert all(c["top_categories"] for c in clusters)
    events.to_parquet(folder / "new.parquet")  # the same shop's ids in a typed file: every item known
    code, _, stderr = cli(monkeypatch, capsys, "assign", "--model", folder / "out" / "model", "--events",
                          folder / "new.parquet", "--out", folder / "placed", "--json")
    assert code == 0 and stderr == "", stderr
    placed = pd.read_parquet(folder / "placed" / "assignments.parquet")
    assert placed.sort_values("user_id")["cluster"].tolist() == got.sort_values("user_id")["cluster"].tolist()


def test_plain_integer_ids_in_a_text_file_are_still_integers(log, monkeypatch, capsys):
    """The other side of the fix: '7', ' 7' and '7.0' (a float column with a gap) are all the number 7."""
    events, _, folder = log
    text = events.astype({"user_id": str, "item_id": str})
    text["user_id"] = text["user_id"].where(events.index % 3 != 0, " " + text["user_id"] + " ")
    text["item_id"] = text["item_id"].where(events.index % 2 == 0, text["item_id"] + ".0")
    text.to_csv(folder / "plain.csv", index=False)
    got, _, _ = _run(monkeypatch, capsys, folder / "plain.csv", folder / "out")
    assert str(got["user_id"].dtype) == "int64" and sorted(got["user_id"]) == sorted(events["user_id"].unique())


# --- ids mixing integral floats and text ------------------------------------------------------------

def _mixed(events: pd.DataFrame) -> pd.DataFrame:
    """The same log with every other id an integral float (7.0) and the rest text ('7'): what concatenating
    a CSV read with a gap (floats) and a JSON export (text) makes."""
    mixed = events.astype({"user_id": object, "item_id": object})
    for column in ("user_id", "item_id"):
        mixed.loc[::2, column] = events[column][::2].astype(float)
        mixed.loc[1::2, column] = events[column][1::2].astype(str)
    return mixed


def test_ids_mixing_integral_floats_and_text_are_one_id_each(log):
    """7.0 was written '7.0' beside '7': each user split in two (180 users placed for 90) and half the
    events dropped as on unknown items, where the service and the pseudonyms read 7.0 as 7."""
    from tests.helpers import quick_fit

    events, items, _ = log
    model = quick_fit(events, items, features=("behaviour", "tfidf"))
    want = model.predict(events)
    got = model.predict(_mixed(events))
    assert sorted(got["user_id"]) == sorted(want["user_id"].astype(str))
    got = got.assign(user_id=got["user_id"].astype("int64")).sort_values("user_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want.sort_values("user_id").reset_index(drop=True), check_dtype=False)
    refit = quick_fit(_mixed(events), items, features=("behaviour", "tfidf"))
    assert len(refit.labels_) == 90 and refit.vocabulary_["item_id"].nunique() == events["item_id"].nunique()


def test_ids_mixing_integral_floats_and_text_are_one_id_each_on_the_cluster(log):
    """Dask cast such a column to text by its own route (a plain cast): the same split on the cluster."""
    pytest.importorskip("distributed")
    import warnings

    from gpuclust import PipelineConfig, UserClusterer

    events, _, _ = log
    labels = []
    for scheduler in (None, "local"):
        config = PipelineConfig(device="cpu")
        config.cluster.k = 3
        if scheduler:
            config.dask.scheduler, config.dask.workers, config.dask.threads_per_worker = scheduler, 2, 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fitted = UserClusterer(config=config, features=["behaviour", "tfidf"]).fit(_mixed(events))
        labels.append(fitted.labels_.sort_values("user_id").reset_index(drop=True))
    assert len(labels[1]) == len(labels[0]) == 90
    assert labels[1]["user_id"].tolist() == labels[0]["user_id"].tolist()


# --- one process and Dask say the same about the same log -----------------------------------------------

def test_epoch_units_are_counted_over_the_whole_log_on_the_cluster(log, monkeypatch, capsys):
    """On Dask the manifest's epoch_units note kept the first partition's counts (206 in s, 104 in ms of
    900 events), and each partition printed its own "timestamps mix Unix epoch units" line."""
    pytest.importorskip("distributed")
    events, _, folder = log
    seconds = events["timestamp"].astype("datetime64[s]").astype("int64")
    events.assign(timestamp=seconds.where(events.index % 3 != 0, seconds * 1000)).to_parquet(folder / "mixed.parquet")
    said = []
    for name, more in (("one", ()), ("dask", ("--scheduler", "local", "--workers", 2, "--threads-per-worker", 1))):
        _, manifest, stderr = _run(monkeypatch, capsys, folder / "mixed.parquet", folder / name, *more)
        steps = {s["step"]: s["why"] for s in manifest["rows"]["steps"]}
        said.append((steps["epoch_units"], [line for line in stderr.splitlines() if "epoch" in line]))
    assert said[0] == said[1]
    assert said[0] == ("Unix epochs read per value by magnitude: 600 in s, 300 in ms",
                       ["warning: timestamps mix Unix epoch units; each was read by its magnitude: 600 in s, 300 in ms"])


# --- dates written as numbers ------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_dates_written_as_numbers_are_read_as_dates(log, monkeypatch, capsys, suffix):
    """20260101 in a numeric column was read as Unix seconds: every event fell in August 1970, the days of
    a month 1 second apart (one session each), the run went on without a word."""
    events, _, folder = log
    days = events.assign(timestamp=events["timestamp"].dt.normalize())
    days.to_parquet(folder / "days.parquet")
    numbers = days.assign(timestamp=days["timestamp"].dt.strftime("%Y%m%d").astype("int64"))
    (numbers.to_parquet if suffix == ".parquet" else lambda p: numbers.to_csv(p, index=False))(folder / f"n{suffix}")
    want, _, _ = _run(monkeypatch, capsys, folder / "days.parquet", folder / "a")
    got, manifest, stderr = _run(monkeypatch, capsys, folder / f"n{suffix}", folder / "b")
    pd.testing.assert_frame_equal(got, want)
    assert stderr.splitlines()[0] == (
        "warning: timestamps are dates written as numbers (YYYYMMDD, e.g. 20260101) and were read as dates, not as "
        "Unix seconds in 1970; write them as ISO-8601 dates (2026-01-01) to say so")
    assert "dates_as_numbers" in {s["step"] for s in manifest["rows"]["steps"]}


def test_a_true_false_timestamp_column_is_refused(log, monkeypatch, capsys):
    """True and False were read as the epochs 1 and 0 (1970-01-01), and the run went on."""
    events, _, folder = log
    events.assign(timestamp=events.index % 2 == 0).to_parquet(folder / "flags.parquet")
    code, _, stderr = cli(monkeypatch, capsys, "run", "--events", folder / "flags.parquet", "--k", 3, "--out",
                          folder / "out")
    assert code == 2 and stderr.strip() == ("error: the timestamp column holds true/false values, not times; map the "
                                            "column that holds the time with --time-col")
    assert not (folder / "out").exists()


@pytest.mark.parametrize("timestamp", [20260101, "20260101"])
def test_the_service_refuses_a_date_written_as_a_number(timestamp):
    """The service read 20260101 as seconds (August 1970) where predict reads the same column as dates."""
    from gpuclust.serve.events import RequestError, read_body

    event = {"user_id": 1, "item_id": 2, "event_type": "view", "timestamp": timestamp}
    with pytest.raises(RequestError, match=r"event 1: timestamp .*20260101.* looks like a date written as a number"):
        read_body({"events": [{**event, "timestamp": 1767225600}, event]}, 10)


# --- event types as the log's types are read --------------------------------------------------------

def test_event_weights_name_types_as_the_log_is_read(log, monkeypatch, capsys):
    """--event-weights View=1,Purchase=5 weighed types no row could have (the log's 'View' reads as 'view'):
    every view and purchase dropped as "without a weight", and the fix it gave was to add view=W."""
    events, _, folder = log
    events.assign(event_type=events["event_type"].str.title()).to_parquet(folder / "titled.parquet")
    want, _, _ = _run(monkeypatch, capsys, folder / "titled.parquet", folder / "a", "--event-weights",
                      "view=1,click=2,cart=3,purchase=5")
    got, manifest, stderr = _run(monkeypatch, capsys, folder / "titled.parquet", folder / "b", "--event-weights",
                                 "View=1,Click=2, cart =3,PURCHASE=5")
    assert stderr == "" and manifest["config"]["preprocess"]["event_weights"] == {
        "view": 1.0, "click": 2.0, "cart": 3.0, "purchase": 5.0}
    pd.testing.assert_frame_equal(got, want)
    code, _, stderr = cli(monkeypatch, capsys, "run", "--events", folder / "titled.parquet", "--event-weights",
                          "view=1,View=2", "--out", folder / "c")
    assert code == 2 and stderr.strip() == ("error: event weights 'view' and 'View' name one event type, 'view' "
                                            "(event types are read trimmed and in lower case); give it one weight")
