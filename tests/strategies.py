"""Hypothesis strategies for hostile-but-plausible gpuclust inputs.

What a new user might feed the CLI: event and item tables with columns missing, renamed or aliased; ids,
timestamps, event types and values of every dtype and range (NaNs, nulls, huge and negative numbers, mixed
objects, epochs in every unit, ISO strings with and without offsets, years out of range, garbage); files in
every supported format (with and without a BOM) or not files at all; TOML configs with right- and
wrong-typed values and unknown keys; option values in and out of range.

Tables stay small (at most 200 rows) so that one example runs in well under a second. Bulk per-row values
come from a NumPy generator seeded by Hypothesis, so the *shape* of an example (row count, families, column
layout) shrinks while the rows stay reproducible.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from hypothesis import settings
from hypothesis import strategies as st

# GPUCLUST_HYPOTHESIS=long (see tests/conftest.py) multiplies every property's example count.
LONG_FACTOR = 25


def examples(ci_count: int) -> settings:
    """Settings for a property worth `ci_count` examples in the ci profile (more under the long one)."""
    factor = LONG_FACTOR if os.environ.get("GPUCLUST_HYPOTHESIS") == "long" else 1
    return settings(max_examples=ci_count * factor)


KNOWN_EVENTS = ("view", "click", "cart", "purchase", "rating")
EVENT_COLUMN_FLAGS = {"user_id": "--user-col", "item_id": "--item-col", "event_type": "--event-col",
                      "timestamp": "--time-col", "value": "--value-col"}
MAX_ROWS = 200

# --- scalar families -----------------------------------------------------------------------------------

# Strings that look like data to a CSV reader (NaN markers, numbers) or break naive quoting.
AWKWARD_STRINGS = ("", " ", "nan", "NULL", "None", "NaN", "-0", "1e5", "007", "a,b", 'q"uote', "tab\there",
                   "line\nbreak", "ünïcödé", "用户", "🙂", "x" * 60)
plain_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=12)
text_values = st.one_of(plain_text, st.sampled_from(AWKWARD_STRINGS))
small_ints = st.integers(-3, 1000)
huge_ints = st.sampled_from([2**63 - 1, -(2**63), 2**63, 2**64 - 1, 10**20, -(10**20)])
any_floats = st.floats(allow_nan=True, allow_infinity=True)
special_floats = st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -1e308, 5e-324, -0.0])

ID_FAMILIES = {
    "int": small_ints,
    "int64": st.integers(-(2**63), 2**63 - 1),
    "huge int": st.one_of(huge_ints, small_ints),
    "float": st.one_of(small_ints.map(float), any_floats),
    "str": text_values,
    "bool": st.booleans(),
    "mixed": st.one_of(small_ints, text_values, any_floats, st.none(), st.booleans()),
}


@st.composite
def id_pool(draw, family: str, size: int, known: list | None = None) -> list:
    """About `size` distinct id values of one family (or, for 'known', ids a fitted model knows)."""
    if family == "known":
        size = min(size, len(known))
        return draw(st.lists(st.sampled_from(known), min_size=size, max_size=size, unique=True))
    least = 1 if family == "bool" else size  # two booleans are all there are
    return draw(st.lists(ID_FAMILIES[family], min_size=least, max_size=size, unique_by=repr))


# --- columns -----------------------------------------------------------------------------------------

def _object(values) -> pd.Series:
    return pd.Series(list(values), dtype=object)


def _as_series(values: list) -> pd.Series:
    """Let pandas infer the dtype, as a reader would; fall back to object where it cannot."""
    try:
        return pd.Series(values)
    except (TypeError, ValueError, OverflowError):
        return _object(values)


def _with_nulls(series: pd.Series, share: float, rng: np.random.Generator) -> pd.Series:
    if share == 0 or len(series) == 0:
        return series
    mask = rng.random(len(series)) < share
    if not mask.any():
        return series
    out = series.astype(object) if series.dtype.kind in "biu" or series.dtype == bool else series.copy()
    out[mask] = None
    return out


def plausible_first(plausible: tuple, hostile: tuple, weight: int = 3) -> st.SearchStrategy:
    """Mostly plausible choices (so examples reach deep code), sometimes hostile ones; shrinks to the first."""
    return st.sampled_from([*plausible * weight, *hostile])


def choice(plausible: tuple, hostile: tuple, allow_hostile: bool) -> st.SearchStrategy:
    """A plausible choice, or, where this aspect of the example may be hostile, any choice."""
    return st.sampled_from([*plausible, *hostile]) if allow_hostile else st.sampled_from(plausible)


@st.composite
def id_column(draw, n: int, distinct: int, rng: np.random.Generator, known: list | None = None,
              hostile: bool = True):
    plausible = ("known", "int", "str") if known else ("int", "str")
    family = draw(choice(plausible, ("int64", "huge int", "float", "bool", "mixed", "all null"), hostile))
    if family == "all null":
        return family, _object([None] * n)
    pool = draw(id_pool(family, distinct, known))
    picks = rng.integers(0, len(pool), n)
    column = _as_series([pool[i] for i in picks])
    return family, _with_nulls(column, draw(choice((0, 0.02), (0.5,), hostile)), rng)


# Timestamps: one family per column (mostly), each a way some log stores time.
PLAUSIBLE_TIMES = ("datetime64", "iso naive", "epoch s", "epoch ms", "iso Z", "iso offset", "iso date",
                   "iso space", "epoch float s", "datetime64 tz")
HOSTILE_TIMES = ("epoch us", "epoch ns", "datetime64 far", "epoch any", "year out of range", "garbage", "bool",
                 "mixed")
TIME_FAMILIES = PLAUSIBLE_TIMES + HOSTILE_TIMES
GARBAGE_TIMES = ("soon", "", "yesterday", "2026-13-45", "2026-02-30T25:61:00", "NaT", "null", "1e400",
                 "١٢٣٤", "12/31/2025", "31/12/2025", "2026-01-01T00:00:00+99:00", "0", "-1")
TIMEZONES = ("UTC", "Europe/Berlin", "Asia/Kolkata", "America/New_York", "Pacific/Chatham")


def _time_values(family: str, n: int, rng: np.random.Generator, garbage: list[str]) -> pd.Series:
    seconds = rng.integers(1_500_000_000, 1_800_000_000, n)
    stamps = pd.to_datetime(seconds, unit="s")
    if family == "datetime64":
        return pd.Series(stamps)
    if family == "datetime64 tz":
        return pd.Series(stamps).dt.tz_localize("UTC").dt.tz_convert(TIMEZONES[int(rng.integers(len(TIMEZONES)))])
    if family == "datetime64 far":
        years = rng.choice([1, 1000, 1677, 1678, 2261, 2262, 2500, 9999], n)
        return pd.Series(np.array([f"{y:04d}-06-15T12:00:00" for y in years], dtype="datetime64[s]"))
    if family == "epoch s":
        return pd.Series(seconds)
    if family == "epoch ms":
        return pd.Series(seconds * 1000 + rng.integers(0, 1000, n))
    if family == "epoch us":
        return pd.Series(seconds * 1_000_000)
    if family == "epoch ns":
        return pd.Series(seconds * 1_000_000_000)
    if family == "epoch float s":
        return pd.Series(seconds + rng.random(n))
    if family == "epoch any":
        return pd.Series(rng.choice([-(10**12), -1, 0, 1, 10**10, 10**13, 10**16, 2**62, 2**63 - 1], n))
    if family == "iso naive":
        return _object(stamps.strftime("%Y-%m-%dT%H:%M:%S"))
    if family == "iso Z":
        return _object(stamps.strftime("%Y-%m-%dT%H:%M:%SZ"))
    if family == "iso offset":
        offsets = rng.choice(["+00:00", "+05:30", "-08:00", "+14:00"], n)
        return _object(s + o for s, o in zip(stamps.strftime("%Y-%m-%dT%H:%M:%S"), offsets, strict=True))
    if family == "iso date":
        return _object(stamps.strftime("%Y-%m-%d"))
    if family == "iso space":
        return _object(stamps.strftime("%Y-%m-%d %H:%M:%S.%f"))
    if family == "year out of range":
        years = rng.choice(["0000", "0001", "1000", "1677", "2262", "9999", "10000", "99999"], n)
        return _object(f"{y}-01-02T03:04:05" for y in years)
    if family == "garbage":
        return _object(garbage[int(i)] for i in rng.integers(0, len(garbage), n))
    if family == "bool":
        return pd.Series(rng.random(n) < 0.5)
    raise AssertionError(family)


@st.composite
def time_column(draw, n: int, rng: np.random.Generator, hostile: bool = True):
    family = draw(choice(PLAUSIBLE_TIMES, HOSTILE_TIMES, hostile))
    garbage = [*GARBAGE_TIMES, *draw(st.lists(plain_text, max_size=3))]
    if family == "mixed":  # each row from its own family: a log stitched together from several sources
        parts = [_time_values(f, n, rng, garbage).astype(object) for f in TIME_FAMILIES[:-1]]
        chosen = rng.integers(0, len(parts), n)
        column = _object(parts[c].iloc[i] for i, c in enumerate(chosen))
    else:
        column = _time_values(family, n, rng, garbage)
    return family, _with_nulls(column, draw(choice((0, 0.005), (0.2, 1.0), hostile)), rng)


EVENT_FAMILIES = ("known", "mixed case", "partly unknown", "unknown", "int", "mixed", "all null")
HOSTILE_EVENTS = EVENT_FAMILIES[1:]


@st.composite
def event_type_column(draw, n: int, rng: np.random.Generator, hostile: bool = True):
    family = draw(choice(("known",), HOSTILE_EVENTS, hostile))
    if family == "all null":
        return family, _object([None] * n)
    if family == "known":
        pool = draw(st.lists(st.sampled_from(KNOWN_EVENTS), min_size=1, max_size=5, unique=True))
    elif family == "mixed case":
        pool = ["VIEW", " Click ", "Purchase", "cart\t", "RATING", "view"]
    elif family == "partly unknown":
        pool = [*KNOWN_EVENTS, *draw(st.lists(text_values, min_size=1, max_size=3))]
    elif family == "unknown":
        pool = draw(st.lists(st.one_of(text_values, st.sampled_from(["like", "share", "wishlist"])), min_size=1,
                             max_size=4))
    elif family == "int":
        pool = [0, 1, 2, 3]
    else:
        pool = [*KNOWN_EVENTS, 1, 2.5, None, True, "VIEW"]
    column = _as_series([pool[i] for i in rng.integers(0, len(pool), n)])
    return family, _with_nulls(column, draw(choice((0,), (0.1,), hostile)), rng)


VALUE_FAMILIES = ("float", "int", "specials", "numeric strings", "garbage strings", "mixed", "bool", "all null")


@st.composite
def value_column(draw, n: int, rng: np.random.Generator, hostile: bool = True):
    family = draw(choice(("float", "int"), VALUE_FAMILIES[2:], hostile))
    if family == "float":
        column = pd.Series(np.round(rng.gamma(2.0, 20.0, n), 2))
    elif family == "int":
        column = pd.Series(rng.integers(-5, 1000, n))
    elif family == "specials":
        pool = draw(st.lists(st.one_of(special_floats, any_floats), min_size=1, max_size=4))
        column = pd.Series([float(pool[i]) for i in rng.integers(0, len(pool), n)])
    elif family == "numeric strings":
        column = _object(rng.choice(["12.5", "0", "-3", "1e3", "1,5", " 7 ", "inf"], n))
    elif family == "garbage strings":
        column = _object(rng.choice(["abc", "", "free", "N/A", "€12"], n))
    elif family == "mixed":
        pool = [1, 2.5, "3", "x", None, True, math.inf]
        column = _object(pool[i] for i in rng.integers(0, len(pool), n))
    elif family == "bool":
        column = pd.Series(rng.random(n) < 0.5)
    else:
        column = _object([None] * n)
    return family, _with_nulls(column, draw(choice((0,), (0.1,), hostile)), rng)


# --- tables --------------------------------------------------------------------------------------------

@dataclass
class Table:
    """A table to write in some format, and the column-mapping flags the CLI is given for it."""

    frame: pd.DataFrame
    flags: tuple[str, ...] = ()
    families: dict[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:  # readable falsifying examples: layout, dtypes and the first rows
        head = {c: self.frame[c].head(6).tolist() for c in self.frame.columns}
        dtypes = {c: str(t) for c, t in self.frame.dtypes.items()}
        return (f"Table(rows={len(self.frame)}, flags={list(self.flags)}, families={self.families}, "
                f"dtypes={dtypes}, head={head})")


# How each canonical column appears: under its own name; renamed with the flag that maps it; renamed
# without the flag (a misnamed column); absent; or absent with its flag pointing at another column.
LAYOUTS = ("canonical", "renamed+flag", "renamed", "absent", "aliased")
OTHER_NAMES = ("customer", "uid", "User ID", "ts", "when", "kind", "sku", "amount", "événement", "col,1", "1")


@st.composite
def _layout(draw, columns: dict[str, pd.Series], flags: dict[str, str], families: dict[str, str],
            optional: tuple[str, ...], rng: np.random.Generator, fuzz: bool = True) -> Table:
    out: dict[str, pd.Series] = {}
    args: list[str] = []
    taken = set(columns)
    aliased = []
    for name, column in columns.items():
        choices = LAYOUTS if name not in optional else ("canonical", "absent", *LAYOUTS)
        layout = draw(plausible_first(choices[:1], choices[1:], weight=4)) if fuzz else "canonical"
        if layout == "canonical":
            out[name] = column
        elif layout in ("renamed+flag", "renamed"):
            new = draw(st.sampled_from([n for n in OTHER_NAMES if n not in taken]))
            taken.add(new)
            out[new] = column
            if layout == "renamed+flag" and name in flags:
                args += [flags[name], new]
        elif layout == "aliased" and name in flags:
            aliased.append(name)
        if layout != "canonical":
            families[f"{name} layout"] = layout
    for name in aliased:  # e.g. --user-col item_id: two canonical names for one column
        if out:
            args += [flags[name], draw(st.sampled_from(sorted(out)))]
    for _ in range(draw(st.integers(0, 2)) if fuzz else 0):
        junk = draw(st.sampled_from([n for n in (*OTHER_NAMES, "Unnamed: 0", "extra") if n not in taken]))
        taken.add(junk)
        out[junk] = pd.Series(rng.integers(0, 9, len(next(iter(columns.values())))))
    order = draw(st.permutations(sorted(out)))
    frame = pd.DataFrame({name: out[name].reset_index(drop=True) for name in order})
    return Table(frame, tuple(args), families)


TABLE_MODES = ("plausible", "one hostile aspect", "one hostile aspect", "all hostile")
ASPECTS = ("user_id", "item_id", "event_type", "timestamp", "value", "layout", "size")


@st.composite
def event_tables(draw, known_users: list | None = None, known_items: list | None = None,
                 max_rows: int = MAX_ROWS) -> Table:
    """Event logs: any subset/renaming of user_id, item_id, event_type, timestamp, value; any dtypes.

    A table is plausible throughout, or hostile in one aspect (one column, the layout, or the size), or
    hostile in every aspect: a failure then usually points at one cause."""
    hostile = set(ASPECTS) if (mode := draw(st.sampled_from(TABLE_MODES))) == "all hostile" else set()
    if mode == "one hostile aspect":
        hostile = {draw(st.sampled_from(ASPECTS))}
    families: dict[str, str] = {"mode": f"{mode}: {', '.join(sorted(hostile))}" if hostile else mode}
    n = draw(st.one_of(st.integers(0, 5), st.integers(20, max_rows)) if "size" in hostile
             else st.integers(20, max_rows))
    n_users = draw(st.integers(1, 40) if "size" in hostile else st.integers(4, 40))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    families["user_id"], users = draw(id_column(n, n_users, rng, known_users, "user_id" in hostile))
    n_items = draw(st.integers(1, 60) if "size" in hostile else st.integers(5, 60))
    families["item_id"], items = draw(id_column(n, n_items, rng, known_items, "item_id" in hostile))
    families["event_type"], kinds = draw(event_type_column(n, rng, "event_type" in hostile))
    families["timestamp"], times = draw(time_column(n, rng, "timestamp" in hostile))
    columns = {"user_id": users, "item_id": items, "event_type": kinds, "timestamp": times}
    if draw(st.booleans()):
        families["value"], columns["value"] = draw(value_column(n, rng, "value" in hostile))
    return draw(_layout(columns, EVENT_COLUMN_FLAGS, families, ("value",), rng, "layout" in hostile))


@st.composite
def item_tables(draw, item_ids: list) -> Table:
    """Item catalogues for events over `item_ids`: duplicates, strangers, odd titles, categories, prices."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    pool = list(item_ids) + draw(st.lists(ID_FAMILIES["mixed"], max_size=5))
    n = draw(st.integers(0, min(MAX_ROWS, 2 * len(pool))))
    families: dict[str, str] = {}
    ids = draw(st.sampled_from(["all once", "some", "duplicates", "mixed types"]))
    families["item_id"] = ids
    if ids == "all once":
        id_values = pool[:n] if n <= len(pool) else pool + [pool[0]] * (n - len(pool))
    elif ids == "mixed types":
        id_values = [str(pool[i]) if i % 2 else pool[i] for i in rng.integers(0, len(pool), n)]
    else:
        id_values = [pool[i] for i in rng.integers(0, len(pool) if ids == "some" else max(1, len(pool) // 4), n)]
    titles = draw(st.lists(st.one_of(text_values, st.none(), st.integers(0, 9), st.text(max_size=200)),
                           min_size=1, max_size=8))
    categories = draw(st.lists(st.one_of(text_values, st.none(), st.integers(0, 3)), min_size=1, max_size=5))
    prices = draw(st.lists(st.one_of(st.floats(0, 500), special_floats, st.just("12.5"), st.just("n/a")),
                           min_size=1, max_size=4))
    columns = {
        "item_id": _as_series(id_values),
        "title": _as_series([titles[i] for i in rng.integers(0, len(titles), n)]),
        "category": _as_series([categories[i] for i in rng.integers(0, len(categories), n)]),
        "price": _as_series([prices[i] for i in rng.integers(0, len(prices), n)]),
    }
    flags = {"item_id": "--item-key-col", "category": "--category-col", "title": "--text-cols"}
    return draw(_layout(columns, flags, families, ("title", "category", "price"), rng, draw(st.booleans())))


# --- files ---------------------------------------------------------------------------------------------

FORMATS = ("parquet", "csv", "csv.gz", "jsonl", "tsv", "jsonl.gz")


@dataclass(frozen=True)
class FileFormat:
    """How a table is put on disk: a format, a BOM for text formats, or a broken file in its place."""

    suffix: str
    bom: bool = False
    broken: str | None = None  # "empty", "garbage" or "truncated"

    def write(self, table: Table, path_stem: Path) -> Path:
        path = path_stem.with_name(path_stem.name + "." + self.suffix)
        if self.broken == "empty":
            path.write_bytes(b"")
            return path
        if self.broken == "garbage":
            path.write_bytes(b"PAR1\x00\xff garbage \x89PNG" * 3)
            return path
        write_table(table.frame, path, self.bom)
        if self.broken == "truncated":
            data = path.read_bytes()
            path.write_bytes(data[: max(1, len(data) // 2)])
        return path


file_formats = st.builds(
    FileFormat,
    suffix=st.sampled_from(FORMATS),
    bom=plausible_first((False,), (True,)),
    broken=plausible_first((None,), ("empty", "garbage", "truncated"), weight=9),
)


def _plain(value: Any) -> Any:
    """A JSON-ready scalar: NumPy scalars become Python, timestamps ISO strings, NaN null."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, pd.Timestamp | np.datetime64):
        return None if pd.isna(value) else pd.Timestamp(value).isoformat()
    if isinstance(value, float) and math.isnan(value):
        return None
    if value is pd.NaT or value is pd.NA:
        return None
    return value


def _stringify_objects(frame: pd.DataFrame) -> pd.DataFrame:
    """What a user does when Parquet refuses a mixed column: write it as text."""
    out = frame.copy()
    for name in out.columns:
        if out[name].dtype == object:
            out[name] = _object(None if _plain(v) is None else str(v) for v in out[name])
    return out


def write_table(frame: pd.DataFrame, path: Path, bom: bool = False) -> None:
    name = path.name.lower()
    text_encoding = "utf-8-sig" if bom else "utf-8"
    if name.endswith(".parquet"):
        try:
            frame.to_parquet(path, index=False)
        except Exception:  # noqa: BLE001 - pyarrow refuses mixed object columns in several ways
            _stringify_objects(frame).to_parquet(path, index=False)
    elif name.endswith((".csv", ".csv.gz", ".tsv")):
        frame.to_csv(path, index=False, sep="\t" if name.endswith(".tsv") else ",", encoding=text_encoding,
                     compression="gzip" if name.endswith(".gz") else None)
    elif name.endswith((".jsonl", ".jsonl.gz")):
        lines = "".join(json.dumps({str(k): _plain(v) for k, v in row.items()}, default=str) + "\n"
                        for row in frame.to_dict(orient="records"))
        data = (("\ufeff" if bom else "") + lines).encode("utf-8")
        path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    else:
        raise AssertionError(path)


# --- TOML configs --------------------------------------------------------------------------------------

def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise AssertionError(type(value))


def toml_document(top: dict[str, Any], sections: dict[str, dict[str, Any]]) -> str:
    lines = [f"{_toml_key(k)} = {toml_value(v)}" for k, v in top.items()]
    for name, values in sections.items():
        lines.append(f"[{_toml_key(name)}]")
        lines += [f"{_toml_key(k)} = {toml_value(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


toml_scalars = st.one_of(st.integers(-(2**63), 2**63 - 1), any_floats, st.booleans(), text_values)
toml_any = st.recursive(toml_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(["a", "view", "k", "x y"]), inner, max_size=3)),
    max_leaves=6)

# Values of the right type and plausible range for every config key (choices include one unknown value).
CHOICES = {
    "device": ("auto", "cpu", "cuda", "gpu"),
    "normalise": ("standard", "minmax", "log1p", "quantile", "none", "zscore"),
    "engine": ("auto", "sklearn", "torch", "faiss", "cuml", "magic"),
    "algorithm": ("kmeans", "dbscan", "hdbscan", "agglomerative", "spectral"),
    "method": ("none", "pca", "umap", "tsne"),
}
NAMED_LISTS = {"features": ("behaviour", "tfidf", "bogus"), "tfidf_vocabularies": ("item", "category", "brand"),
               "text": ("title", "description", "")}


def _right_typed(key: str, default: Any) -> st.SearchStrategy:
    if key in CHOICES:
        return st.sampled_from(CHOICES[key])
    if key in NAMED_LISTS:
        return st.lists(st.sampled_from(NAMED_LISTS[key]), max_size=3)
    if isinstance(default, bool):
        return st.booleans()
    if isinstance(default, int) or default is None:
        return st.integers(-2, 40)
    if isinstance(default, float):
        return st.one_of(st.floats(-1, 100), special_floats)
    if isinstance(default, str):
        return st.one_of(st.sampled_from([default, "customer", "ts"]), text_values)
    if isinstance(default, dict) and key in ("event_weights", "weights"):
        names = KNOWN_EVENTS + ("like",) if key == "event_weights" else ("behaviour", "tfidf", "text", "bogus")
        return st.dictionaries(st.sampled_from(names), st.one_of(st.floats(-1, 10), special_floats), max_size=4)
    if isinstance(default, dict):
        return st.dictionaries(st.sampled_from(["model", "bogus"]), text_values, max_size=1)
    return toml_any


def _config_sections() -> dict[str, dict[str, Any]]:
    from gpuclust.config import PipelineConfig

    config = PipelineConfig()
    sections: dict[str, dict[str, Any]] = {"": {}}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            sections[f.name] = {g.name: getattr(value, g.name) for g in dataclasses.fields(value)}
        else:
            sections[""][f.name] = value
    return sections


@dataclass
class TomlConfig:
    text: str

    def __repr__(self) -> str:
        return f"TomlConfig({self.text!r})"


@st.composite
def toml_configs(draw) -> TomlConfig:
    """Run configs: mostly right-typed known keys; some wrong types, unknown keys, scalars for sections,
    or text that is not TOML at all."""
    kind = draw(st.sampled_from(["keys", "keys", "keys", "section as scalar", "not toml", "empty"]))
    if kind == "empty":
        return TomlConfig("")
    if kind == "not toml":
        return TomlConfig(draw(st.sampled_from(["[cluster\nk = 3\n", "k = \n", "= 3", "[a]\n[a]\n", "\x00"])))
    sections = _config_sections()
    top: dict[str, Any] = {}
    tables: dict[str, dict[str, Any]] = {}
    if kind == "section as scalar":
        top[draw(st.sampled_from([s for s in sections if s]))] = draw(toml_scalars)
    for _ in range(draw(st.integers(1, 4))):
        section = draw(st.sampled_from(sorted(sections)))
        target = top if section == "" else tables.setdefault(section, {})
        known = sections[section]
        key = draw(st.sampled_from(sorted(known) + ["bogus_key"]))
        wrong = draw(st.sampled_from([False, False, False, True]))
        default = known.get(key)
        target[key] = draw(toml_any if wrong or key not in known else _right_typed(key, default))
    if draw(st.booleans()) and "bogus_section" not in tables and not top:
        tables.setdefault("bogus_section" if draw(st.booleans()) else "cluster", {})
    tables = {name: values for name, values in tables.items() if name not in top}
    return TomlConfig(toml_document(top, tables))


# --- command-line options ------------------------------------------------------------------------------

def _int_text(low: int, high: int) -> st.SearchStrategy[str]:
    """An integer option's text: mostly in range, sometimes far out or not an integer at all."""
    return st.one_of(st.integers(low, high).map(str), st.integers(low, high).map(str),
                     st.integers(low, high).map(str),
                     st.sampled_from(["-1", "0", "99999999999999999999", "abc", "1.5", ""]))


def _pairs(names: tuple[str, ...]) -> st.SearchStrategy[str]:
    value = st.one_of(st.integers(-1, 5).map(str), st.sampled_from(["0.5", "nan", "inf", "-inf", "1e309", "x", ""]))
    pair = st.tuples(st.sampled_from(names), value).map(lambda p: f"{p[0]}={p[1]}")
    return st.one_of(st.lists(pair, min_size=1, max_size=4).map(",".join),
                     st.sampled_from(["", "=", ",", "view", "view=1,,click=2", " view = 2 "]))


K_VALUES = ("2", "3", "4", "auto", "2-4", "4-2", "2:6:2", "3:3", "0", "1", "-1", "abc", "", "3.5", "1e2",
            "999999", "2-", "-", "2:8:0", "2:8:-1")
FEATURE_LISTS = ("behaviour", "tfidf", "behaviour,tfidf", "tfidf,behaviour,tfidf", "", ",", "bogus",
                 "BEHAVIOUR", " behaviour , tfidf ")
DEVICES = ("cpu", "auto", "cuda", "gpu", "CPU", "")

RUN_OPTIONS: dict[str, st.SearchStrategy[str]] = {
    "--k": st.one_of(st.sampled_from(K_VALUES), st.integers(-2, 40).map(str)),
    "--algorithm": st.sampled_from(["kmeans", "dbscan", "hdbscan", "agglomerative", "KMeans", "spectral", ""]),
    "--eps": st.one_of(st.floats(-1, 5).map(repr), st.sampled_from(["nan", "inf", "0", "1e-300", "x"])),
    "--min-samples": _int_text(-2, 300),
    "--min-cluster-size": _int_text(-2, 300),
    "--reduce": st.sampled_from(["none", "pca", "umap", "tsne", ""]),
    "--reduce-components": _int_text(-2, 400),
    "--anomalies": _int_text(-2, 500),
    "--features": st.sampled_from(FEATURE_LISTS),
    "--engine": st.sampled_from(["auto", "sklearn", "torch", "faiss", "cuml", "magic"]),
    "--device": st.sampled_from(DEVICES),
    "--seed": st.one_of(st.integers(-5, 2**32).map(str), st.sampled_from(["-1", str(2**63), str(2**64), "x"])),
    "--event-weights": _pairs((*KNOWN_EVENTS, "like", "VIEW")),
    "--feature-weights": _pairs(("behaviour", "tfidf", "text", "bogus")),
    "--normalise": st.sampled_from(["standard", "minmax", "log1p", "quantile", "none", "zscore", ""]),
    "--min-user-events": _int_text(-2, 50),
    "--min-item-events": _int_text(-2, 50),
    "--sample-users": _int_text(-2, 300),
    "--tfidf-components": _int_text(-2, 300),
    "--silhouette-sample": _int_text(-2, 300),
}
RUN_FLAGS = ("--sample-replace", "--no-sample-replace", "--json")


@st.composite
def run_options(draw, max_options: int = 4) -> list[str]:
    """A few `gpuclust run` options, each with a value in or out of its range."""
    names = draw(st.lists(st.sampled_from(sorted(RUN_OPTIONS)), max_size=max_options, unique=True))
    args: list[str] = []
    for name in names:
        args += [name, draw(RUN_OPTIONS[name])]
    for flag in draw(st.lists(st.sampled_from(RUN_FLAGS), max_size=2, unique=True)):
        args.append(flag)
    return args


TOP_K = ("10", "10,20", "1", "0", "-1", "", ",", "10,x", "5,5", "999999", " 3 , 4 ")


@st.composite
def evaluate_options(draw) -> list[str]:
    """Mostly valid `evaluate` options (one hostile value at most), so most examples reach the evaluation."""
    hostile = draw(st.sampled_from([None, None, "--k", "--top-k", "--features", "--seed", "--device"]))
    valid = {"--k": st.integers(1, 6).map(str), "--top-k": st.sampled_from(TOP_K[:3]),
             "--features": st.sampled_from(FEATURE_LISTS[:3]), "--seed": st.integers(0, 99).map(str),
             "--device": st.just("cpu")}
    odd = {"--k": _int_text(-2, 20), "--top-k": st.sampled_from(TOP_K), "--features": st.sampled_from(FEATURE_LISTS),
           "--seed": RUN_OPTIONS["--seed"], "--device": st.sampled_from(DEVICES)}
    args: list[str] = []
    for name in valid:
        if name == hostile:
            args += [name, draw(odd[name])]
        elif draw(st.booleans()):
            args += [name, draw(valid[name])]
    return args


@dataclass(frozen=True)
class SynthParams:
    users: int
    items: int
    groups: int
    events_per_user: float
    noise_share: float
    seed: int

    def args(self) -> list[str]:
        return ["--users", str(self.users), "--items", str(self.items), "--groups", str(self.groups),
                "--events-per-user", repr(self.events_per_user), "--noise-share", repr(self.noise_share),
                "--seed", str(self.seed)]


def _mostly(plausible: st.SearchStrategy, hostile: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(plausible, plausible, plausible, plausible, hostile)


# Each parameter is mostly in range, so that about half the examples generate data.
synth_params = st.builds(
    SynthParams,
    users=_mostly(st.integers(12, 300), st.sampled_from([0, -1, 1, 2])),
    items=_mostly(st.integers(24, 300), st.sampled_from([0, -1, 1, 23])),
    groups=_mostly(st.integers(1, 12), st.sampled_from([0, -1, 40, 400])),
    events_per_user=_mostly(st.floats(0.5, 40), st.sampled_from([0.0, -1.0, 1e-9, math.nan, math.inf])),
    noise_share=_mostly(st.floats(0, 0.99), st.sampled_from([-0.1, 1.0, 1.5, math.nan])),
    seed=_mostly(st.integers(0, 2**32), st.sampled_from([-1, 2**63, 2**64])),
)
