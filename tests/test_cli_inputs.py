"""Odd inputs on the command line: a clear line and exit 2, or a correct result; never silently wrong."""

import json
import warnings

import numpy as np
import pandas as pd
import pytest

from gpuclust.errors import UsageError
from tests.helpers import blob_events, cli


@pytest.fixture()
def files(tmp_path):
    events, items, _ = blob_events(n_users=120)
    events.to_parquet(tmp_path / "events.parquet")
    items.to_parquet(tmp_path / "items.parquet")
    return tmp_path


def events_frame(files) -> pd.DataFrame:
    return pd.read_parquet(files / "events.parquet")


def stderr_lines(stderr: str) -> list[str]:
    return [line for line in stderr.strip().splitlines() if line.strip()]


def assert_one_error_line(code, stderr, out, expected):
    assert code == 2
    lines = stderr_lines(stderr)
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error:") and expected in " ".join(stderr.split())
    assert not out.exists() or not any(out.iterdir())


def bad_inputs(files):
    events = files / "events.parquet"
    frame = events_frame(files)
    dollars = files / "dollars.csv"
    frame.assign(value="$12.50").to_csv(dollars, index=False)
    far = files / "far.csv"
    frame.assign(timestamp="9999-12-31").to_csv(far, index=False)
    header_only = files / "header_only.csv"
    frame.head(0).to_csv(header_only, index=False)
    no_types = files / "no_types.parquet"
    frame.assign(event_type=None).to_parquet(no_types)
    wrong_type = files / "wrong_type.toml"
    wrong_type.write_text('[cluster]\nk = "eight"\n')
    latin1 = files / "latin1.toml"
    latin1.write_bytes(b"seed = 1\n# caf\xe9\n")
    return {
        "value not numeric": (["--events", dollars], "value column is not numeric, e.g. '$12.50'"),
        "timestamps out of range": (["--events", far], "outside the years 1678-2261, e.g. '9999-12-31'"),
        "events is a directory": (["--events", files], "is a directory, not an events file: give the path of one file"),
        "header-only csv": (["--events", header_only], "has no rows"),
        "event types all null": (["--events", no_types], "empty in every row; map the column"),
        "negative seed": (["--events", events, "--seed", -1], "--seed (seed) must be between 0 and 4294967295"),
        "one column two roles": (["--events", events, "--time-col", "value"], "mapped to both timestamp and value"),
        "feature weight typo": (["--events", events, "--feature-weights", "behavior=1"],
                                "unknown name 'behavior' for a feature weight: choose from behaviour, tfidf, text"),
        "feature weight nan": (["--events", events, "--feature-weights", "tfidf=nan"], "tfidf=nan must be a finite"),
        # was a finished run with "silhouette nan": sqrt(3e38) scaled the block past float32's range
        "feature weight huge": (["--events", events, "--feature-weights", "tfidf=3e38"],
                                "feature weight tfidf=3e+38 is over 1e+06: weights are relative shares"),
        "event weights all zero": (["--events", events, "--event-weights", "view=0,click=0,cart=0,purchase=0"],
                                   "no event weight is positive"),
        "toml value of the wrong type": (["--events", events, "--config", wrong_type],
                                         "cluster.k = 'eight' has the wrong type: expected an integer"),
        "toml not utf-8": (["--events", events, "--config", latin1], "is not UTF-8 text"),
        # was "map group with the config NAME": no flag maps truth's group column
        "truth without group": (["--events", events, "--truth", events], "'group' not found in"),
    }


@pytest.mark.parametrize("case", [
    "value not numeric", "timestamps out of range", "events is a directory", "header-only csv",
    "event types all null", "negative seed", "one column two roles", "feature weight typo", "feature weight nan",
    "event weights all zero", "toml value of the wrong type", "toml not utf-8", "truth without group"])
def test_odd_input_is_one_line_exit_2_and_no_output(monkeypatch, capsys, files, case):
    args, expected = bad_inputs(files)[case]
    out = files / "out"
    code, _, stderr = cli(monkeypatch, capsys, "run", *args, "--k", 3, "--out", out)
    assert_one_error_line(code, stderr, out, expected)
    assert "config NAME" not in stderr


def test_a_truth_file_without_its_group_column_says_to_name_it(monkeypatch, capsys, files):
    out = files / "out"
    code, _, stderr = cli(monkeypatch, capsys, "run", "--events", files / "events.parquet", "--truth",
                          files / "events.parquet", "--k", 3, "--out", out)
    assert_one_error_line(code, stderr, out, "name the column holding group 'group'")


def with_inf_values_and_mixed_epochs(files):
    frame = events_frame(files)
    frame["value"] = frame["value"].astype("float64")
    frame.loc[::10, "value"] = np.inf
    frame.loc[1::10, "value"] = 1e300  # overflows float32
    seconds = frame["timestamp"].astype("datetime64[s]").astype("int64")
    frame["timestamp"] = seconds.where(frame.index % 2 == 0, seconds * 1000)
    path = files / "odd.parquet"
    frame.to_parquet(path)
    return path, frame


def test_input_warnings_are_one_line_each_after_a_successful_run(monkeypatch, capsys, files):
    path, frame = with_inf_values_and_mixed_epochs(files)
    out = files / "out"
    code, _, stderr = cli(monkeypatch, capsys, "run", "--events", path, "--k", 3, "--out", out, "--json")
    assert code == 0
    lines = stderr_lines(stderr)
    assert len(lines) == 2 and all(line.startswith("warning: ") for line in lines), stderr
    assert "dropped 480 of 2,400 events (20.0%): value is infinite or too large for float32, e.g. inf" in lines[0]
    assert "mix Unix epoch units" in lines[1]
    steps = {s["step"]: s for s in json.loads((out / "manifest.json").read_text())["rows"]["steps"]}
    assert steps["non_finite_values"]["dropped"] == 480
    assert steps["epoch_units"]["why"] == "Unix epochs read per value by magnitude: 960 in s, 960 in ms"
    assert len(pd.read_parquet(out / "assignments.parquet")) == frame["user_id"].nunique()


def test_input_warnings_give_way_to_the_error_line(monkeypatch, capsys, files):
    path, _ = with_inf_values_and_mixed_epochs(files)
    out = files / "out"
    code, _, stderr = cli(monkeypatch, capsys, "run", "--events", path, "--k", 500, "--out", out)
    assert_one_error_line(code, stderr, out, "k=500 is larger than the number of users")


def test_library_warnings_stay_off_stderr_unless_debug(monkeypatch, capsys, files):
    from gpuclust.preprocess.clean import Preprocessor

    original = Preprocessor.run
    fail = {"now": False}

    def noisy_run(self, *args, **kwargs):
        for n in range(23):
            warnings.warn(f"library chatter {n}", FutureWarning if n % 2 else RuntimeWarning, stacklevel=2)
        if fail["now"]:
            raise UsageError("the one line that matters")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Preprocessor, "run", noisy_run)
    code, _, stderr = cli(monkeypatch, capsys, "run", "--events", files / "events.parquet", "--k", 3,
                          "--out", files / "ok", "--json")
    assert code == 0 and stderr == ""
    fail["now"] = True
    code, _, stderr = cli(monkeypatch, capsys, "run", "--events", files / "events.parquet", "--k", 3,
                          "--out", files / "bad")
    assert_one_error_line(code, stderr, files / "bad", "the one line that matters")
    with pytest.warns((RuntimeWarning, FutureWarning), match="library chatter"), pytest.raises(UsageError):
        cli(monkeypatch, capsys, "--debug", "run", "--events", files / "events.parquet", "--out", files / "dbg")


def test_assign_drops_infinite_values_instead_of_placing_users_at_infinite_distance(monkeypatch, capsys, files):
    # Users with unequal event counts: a count that is the same for every user has no scale to learn.
    frame = events_frame(files).sample(frac=0.9, random_state=0).sort_index()
    frame.to_parquet(files / "fit.parquet")
    code, _, _ = cli(monkeypatch, capsys, "run", "--events", files / "fit.parquet", "--k", 3,
                     "--out", files / "run", "--json")
    assert code == 0
    frame = frame.astype({"value": "float64"}).reset_index(drop=True)
    frame.loc[::3, "value"] = np.inf
    frame.to_parquet(files / "new.parquet")
    code, stdout, stderr = cli(monkeypatch, capsys, "assign", "--model", files / "run" / "model", "--events",
                               files / "new.parquet", "--out", files / "assigned", "--json")
    assert code == 0 and stderr_lines(stderr)[0].startswith("warning: dropped 720 of 2,160 events")
    placed = pd.read_parquet(files / "assigned" / "assignments.parquet")
    first = pd.read_parquet(files / "run" / "assignments.parquet")
    assert np.isfinite(placed["distance"]).all() and placed["cluster"].nunique() == 3
    assert (placed["cluster"].to_numpy() == first["cluster"].to_numpy()).mean() > 0.95
    steps = {s["step"]: s for s in json.loads(stdout)["rows"]["steps"]}
    assert steps["non_finite_values"]["dropped"] == 720


def test_float_item_ids_still_find_their_categories(monkeypatch, capsys, files):
    events = events_frame(files).astype({"item_id": "float64"})
    events.loc[0, "item_id"] = np.nan  # the gap that made pandas read the column as floats
    events.to_csv(files / "float_items.csv", index=False)
    out = files / "out"
    code, _, stderr = cli(monkeypatch, capsys, "run", "--events", files / "float_items.csv", "--items",
                          files / "items.parquet", "--k", 3, "--out", out, "--json")
    assert code == 0 and stderr_lines(stderr) == ["warning: dropped 1 of 2,400 events (0.0%): user_id, item_id or "
                                                  "timestamp is missing; fill those values, or map the columns that "
                                                  "hold them (--user-col, --item-col, --time-col)"]
    clusters = json.loads((out / "clusters.json").read_text())["clusters"]
    assert all(c["top_categories"] for c in clusters)
    assert not any(c["label"].startswith("cluster ") for c in clusters)


def test_a_low_join_rate_with_the_items_table_is_a_warning_line(monkeypatch, capsys, files):
    items = pd.read_parquet(files / "items.parquet")
    items.assign(item_id="sku-" + items["item_id"].astype(str)).to_parquet(files / "skus.parquet")
    code, _, stderr = cli(monkeypatch, capsys, "run", "--events", files / "events.parquet", "--items",
                          files / "skus.parquet", "--k", 3, "--out", files / "out", "--json")
    assert code == 0
    assert stderr_lines(stderr) == ["warning: only 0.0% of events have their item in the items table; check that "
                                    "both files use the same item ids (--item-col, --item-key-col)"]


def test_user_ids_wider_than_int64_are_written_as_text(monkeypatch, capsys, files):
    events = events_frame(files)
    wide = events.assign(user_id=events["user_id"].astype(str) + "0" * 20)
    wide.to_csv(files / "wide.csv", index=False)
    code, _, _ = cli(monkeypatch, capsys, "run", "--events", files / "wide.csv", "--k", 3, "--out", files / "out",
                     "--json")
    assert code == 0
    written = pd.read_parquet(files / "out" / "assignments.parquet")["user_id"]
    assert sorted(written) == sorted(wide["user_id"].unique())


def test_epochs_in_a_text_column_and_iso_strings_with_and_without_z_cluster_like_datetimes(monkeypatch, capsys,
                                                                                           files):
    events = events_frame(files)
    seconds = events["timestamp"].astype("datetime64[s]").astype("int64")
    iso = events["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%S")
    variants = {"epoch_text.parquet": events.assign(timestamp=seconds.astype(str)),
                "iso_z.parquet": events.assign(timestamp=iso.where(events.index % 2 == 0, iso + "Z"))}
    expected = None
    for name, frame in {"events.parquet": events, **variants}.items():
        frame.to_parquet(files / name)
        code, _, stderr = cli(monkeypatch, capsys, "run", "--events", files / name, "--k", 3, "--out",
                              files / f"out-{name}", "--json")
        assert code == 0 and stderr == "", stderr
        got = pd.read_parquet(files / f"out-{name}" / "assignments.parquet")
        expected = got if expected is None else expected
        pd.testing.assert_frame_equal(got, expected)


def test_truth_ids_read_as_floats_still_match_the_users(monkeypatch, capsys, files):
    _, _, truth = blob_events(n_users=120)
    truth = truth.astype({"user_id": "float64"})
    truth.loc[0, "user_id"] = np.nan
    truth.to_csv(files / "truth.csv", index=False)
    code, stdout, _ = cli(monkeypatch, capsys, "run", "--events", files / "events.parquet", "--truth",
                          files / "truth.csv", "--k", 3, "--out", files / "out", "--json")
    assert code == 0 and json.loads(stdout)["metrics"]["ari"] == pytest.approx(1.0)


@pytest.mark.parametrize("engine", ["sklearn", "torch", "faiss"])
def test_the_largest_seed_runs_on_every_cpu_engine(monkeypatch, capsys, files, engine):
    from gpuclust import accelerators

    if engine == "faiss" and not accelerators.faiss_cpu().usable:
        pytest.skip("faiss-cpu is not installed")
    code, _, stderr = cli(monkeypatch, capsys, "run", "--events", files / "events.parquet", "--k", 3, "--engine",
                          engine, "--seed", 2**32 - 1, "--device", "cpu", "--out", files / "out", "--json")
    assert code == 0, stderr
