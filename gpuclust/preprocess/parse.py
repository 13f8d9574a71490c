"""Raw column values into the types the pipeline computes with: ids, money values and timestamps.

Files carry the same thing in many shapes (item 501218 as 501218.0 after a gap in a CSV column, epochs
in seconds next to milliseconds, ISO strings with and without "Z"). Everything here is frame
operations that cuDF and pandas both have (two marked steps are pandas-only: only pandas can hold ids of
mixed types, and only its parser has a per-value retry), and it says what it changed so the manifest
can too.
"""

from __future__ import annotations

import dataclasses
import re
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from gpuclust import schema
from gpuclust.errors import InputWarning, UsageError, warn_dropped
from gpuclust.frames import frame_kind, host_frame

# datetime64[ns] holds about 1677-09-21 .. 2262-04-11; a little margin keeps float rounding inside.
NS_LIMIT = 9.2e18
NS_YEARS = "1678-2261"
NS_PER = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}
# Unix epochs are read per value by magnitude: below 1e11 as seconds (up to year 5138), below 1e14 as
# milliseconds, below 1e17 as microseconds, else as nanoseconds. (Milliseconds before March 1973 would
# read as seconds; no real event log has those.)
EPOCH_UNITS = (("s", 1e11), ("ms", 1e14), ("us", 1e17), ("ns", float("inf")))
WHOLE_EPOCH = r"^-?(?:[0-9]{1,18}|[0-8][0-9]{18})$"  # a whole epoch written as text that fits in int64
F32_MAX = float(np.finfo(np.float32).max)
_INTEGER_KINDS = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32")  # all fit int64; uint64 not


def _kind(column: Any) -> str:
    return str(column.dtype).lower()


def _is_numeric(column: Any) -> bool:
    return _kind(column).startswith(("int", "uint", "float", "bool"))


def first_value(column: Any, mask: Any) -> Any:
    """The first value of `column` where `mask` holds, as a plain Python value: an example for a message."""
    value = host_frame(column[mask].head(1).to_frame()).iloc[0, 0]
    if isinstance(value, datetime):
        return value.isoformat()
    return value.item() if isinstance(value, np.generic) else value


# --- ids -------------------------------------------------------------------------------------------

def blank_as_missing(ids: Any) -> Any:
    """An id column with its empty texts ("") missing: an empty id names no one. A CSV reader reads an
    empty field as missing and the service refuses "", where Parquet and JSON keep it as one user (or
    item) named "". The column itself where it holds none (no copy)."""
    if _is_numeric(ids) or _kind(ids).startswith("datetime") or not len(ids):
        return ids
    blank = (ids == "").fillna(False).astype("bool")
    return ids.where(~blank) if bool(blank.any()) else ids


def blank_ids_as_missing(frame: Any, columns: tuple[str, ...] = (schema.USER, schema.ITEM)) -> Any:
    """`blank_as_missing` on a frame's id columns; the frame itself where none holds "" (no copy)."""
    present = [c for c in columns if c in frame.columns]
    cleared = {c: blank_as_missing(frame[c]) for c in present}
    changed = {c: v for c, v in cleared.items() if v is not frame[c]}
    return frame.assign(**changed) if changed else frame


def normalise_ids(ids: Any) -> tuple[Any, str | None]:
    """One comparable type per id column, and a note of what changed (None: nothing).

    Integral floats (501218.0, what a CSV column with a gap becomes) are int64; a pandas column mixing
    numbers and text, or holding integers too wide for int64, is text. Decided at read time so that
    joins match and writing the results cannot fail after all the work.
    """
    kind = _kind(ids)
    if kind in FLAG_KINDS or (kind == "object" and frame_kind(ids) == "pandas" and _all_booleans(ids)):
        raise flag_ids(ids.name)
    if kind in _INTEGER_KINDS and _nullable(ids) and not bool(ids.isna().any()):
        # A text file's integer ids with a gap are read nullable (Int64); once the gapped rows are gone they are
        # plain int64, as without the gap: one missing id made every output's user_id Int64 for pandas readers
        return ids.astype("int64"), None
    if kind.startswith("float") and len(ids):
        whole = ((ids == ids.round()) & (ids.abs() < 2.0**63)).fillna(False)
        if bool(whole.all()):
            return ids.astype("int64"), "integral float ids read as integers"
    if kind == "object" and frame_kind(ids) == "pandas":  # cuDF's text is 'object' too; only pandas mixes
        import pandas as pd

        if pd.api.types.infer_dtype(ids, skipna=True) != "string":
            return ids_as_text(ids), "ids of mixed types or wider than int64 read as text"
    return ids, None


FLAG_KINDS = ("bool", "boolean")


def _nullable(column: Any) -> bool:
    """Whether a pandas column has a nullable extension dtype (Int64 and kin; cuDF's own are plain)."""
    import pandas as pd

    return frame_kind(column) == "pandas" and isinstance(column.dtype, pd.api.extensions.ExtensionDtype)


def flag_ids(column: Any) -> UsageError:
    """The refusal of an id column of true/false values: two values cannot name users or items, and such
    a column mapped as ids would make a log of two users."""
    return UsageError(f"the {column or 'id'} column holds true/false values, not ids: map the id column in the "
                      "config's [columns] section, or cast it to text if true and false are meant as ids")


def _all_booleans(ids: Any) -> bool:
    import pandas as pd

    return len(ids) > 0 and pd.api.types.infer_dtype(ids, skipna=True) == "boolean"


def canonical_id(value: Any) -> str:
    """The text of one id: integers (and integral floats) in decimal, text as it is. What an id column
    becomes where it must be text (`ids_as_text`), what the service matches and what a pseudonym hashes."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def ids_as_text(ids: Any) -> Any:
    """An id column as text, each id as `canonical_id` writes it (missing ones stay missing). A plain cast
    writes 7.0 as '7.0', which split the user 7 of a column mixing 7.0 and '7' in two, where the service
    and the pseudonyms have one. On pandas each distinct id is written once (a mixed column is pandas')."""
    if frame_kind(ids) != "pandas":
        return ids.astype("str").where(ids.notna())
    import pandas as pd

    codes, uniques = ids.factorize()
    text = np.asarray([canonical_id(v) for v in uniques] + [None], dtype=object)
    return pd.Series(text[codes], index=ids.index, name=ids.name, dtype="str")


_PLAIN_INTEGER = r"-?(0|[1-9][0-9]*)(\.0+)?$"  # 7, -3, and 7.0 as a float column writes it (stripped)


def text_ids(ids: Any, frame: Any) -> Any:
    """An id column of a text file (CSV, JSON) read as the text it holds: integers (int64; nullable
    where some are missing) where every id is an integer written plainly ('7', ' 7', '-3', '7.0'), else
    the text as written. A reader's own guess reads '007' and '7' as the one number 7, merging two users
    (or items) and dropping the zeros that the shop's other files keep. JSON numbers stay numbers; a column
    of true and false only is a flag column (`flag_ids`), as a reader's guess would have said.

    Vectorised string methods only (8M ids: about 2.2 s on the 2-core machine; pandas' `to_numeric` and
    a match with leading blanks took 9.9 s)."""
    if _is_numeric(ids):
        return ids
    ids = blank_as_missing(ids)
    present = ids.notna()
    text = ids[present].astype("str").str.strip()
    if not bool(text.str.match(_PLAIN_INTEGER).all()):
        if len(text) and bool(text.str.lower().isin(["true", "false"]).all()):
            raise flag_ids(ids.name)
        return ids
    if bool(text.str.contains(".", regex=False).any()):
        text = text.str.replace(r"\.0+$", "", regex=True)
    try:
        numbers = text.astype("int64")
    except (OverflowError, ValueError):  # wider than int64: text, as `normalise_ids` reads it
        return ids
    if not bool((numbers.astype("str") == text).all()):  # a reader that wraps past int64 instead of raising
        return ids
    if bool(present.all()):
        return numbers
    return numbers.astype("Int64" if frame_kind(ids) == "pandas" else "int64").reindex(ids.index)


def keyed_items(items: Any) -> Any:
    """The items with an id, ids normalised and first row per id kept: what every catalogue reader joins on.
    The rows left out are warned about: with two rows for an item the first is used, and the user should
    know that a row was not."""
    total = len(items)
    items = blank_ids_as_missing(items, (schema.ITEM,)).dropna(subset=["item_id"]).copy()
    warn_dropped(total - len(items), total, "the row has no item id", what="item rows",
                 fix="fill in the ids, or map the id column with --item-key-col")
    items["item_id"], _ = normalise_ids(items["item_id"])
    keyed = items.drop_duplicates(subset=["item_id"])
    warn_dropped(len(items) - len(keyed), total, "an earlier row has the same item id (the first row per id is kept)",
                 what="item rows", fix="give one row per item")
    return keyed


def common_key(left: Any, right: Any, key: str) -> tuple[Any, Any]:
    """Two frames whose `key` columns have one type: int64 where both are integers, else text."""
    lk, rk = _kind(left[key]), _kind(right[key])
    if lk == rk:
        return left, right
    target = "int64" if lk in _INTEGER_KINDS and rk in _INTEGER_KINDS else "str"
    left, right = left.copy(), right.copy()
    left[key] = left[key].astype(target)
    right[key] = right[key].astype(target)
    return left, right


# --- the catalogue's other columns -------------------------------------------------------------------

def catalogue_columns(items: Any, frame: Any) -> tuple[Any, int]:
    """Prices as numbers (text that is no number becomes missing, with a warning) and category and text columns as text
    (a column mixing numbers and words cannot be written to Parquet); returns the table and how many
    prices were not numbers. Missing values stay missing."""
    items = items.copy()
    bad_prices = 0
    for name in items.columns:
        column = items[name]
        if name == "price":
            if not _is_numeric(column):
                parsed = frame.to_numeric(column, errors="coerce")
                bad = (parsed.isna() & column.notna()).fillna(False)
                bad_prices = int(bad.sum())
                if bad_prices:  # '$1' or '1,50': a price the profiles would quietly average without
                    warnings.warn(f"{bad_prices:,} of {len(items):,} item prices are not numbers and count as "
                                  f"missing, e.g. {first_value(column, bad)!r}: give plain numbers with a dot for "
                                  "decimals and no currency signs", InputWarning, stacklevel=3)
                items[name] = parsed
        elif name != "item_id" and _kind(column) == "object" and frame_kind(column) == "pandas":
            import pandas as pd

            if pd.api.types.infer_dtype(column, skipna=True) != "string":
                items[name] = column.astype("str").where(column.notna(), None)
    return items, bad_prices


# --- money values ----------------------------------------------------------------------------------

def not_numeric_message(example: Any, n: int) -> str:
    """The refusal of a value column holding `n` texts that are no number (`example` one of them)."""
    return (f"the value column is not numeric, e.g. {example!r} ({n:,} rows); give plain numbers with a dot for "
            "decimals and no currency signs, or map another column with --value-col")


def money_values(values: Any, frame: Any) -> tuple[Any, Any, Any]:
    """float32 values (0 where absent), a mask of the rows whose value is infinite or beyond float32, and a
    mask of the texts that are no plain number ('0,0', '$12.50', 'free'; None for a numeric column).

    Those texts read as absent here; the caller refuses them (`not_numeric_message`): a locale or currency
    format is the file's, and guessing it would silently change amounts. On Dask each partition counts
    its own and the client refuses once, with the whole input's count.
    """
    not_number = None
    if _kind(values).startswith("complex"):  # an amount has no imaginary part: one that has is no plain number
        parts = values.to_numpy()
        not_number = frame.Series(np.imag(parts) != 0, index=values.index)
        values = frame.Series(np.real(parts), index=values.index)
    elif not _is_numeric(values):
        parsed = frame.to_numeric(values, errors="coerce")
        not_number = (parsed.isna() & values.notna()).fillna(False)
        values = parsed
    values = values.astype("float64")
    absent = values.isna()
    in_range = (values.abs() <= F32_MAX).fillna(False)
    bad = ~absent & ~in_range
    return values.where(~absent, 0.0).where(~bad, 0.0).astype("float32"), bad, not_number


# --- timestamps ------------------------------------------------------------------------------------

@dataclass
class Timestamps:
    """Parsed timestamps (datetime64[ns], placeholders where a mask holds) and what parsing found."""

    values: Any
    unparseable: Any
    out_of_range: Any
    epoch_units: dict[str, int] = field(default_factory=dict)
    day_numbers: int = 0  # values read as dates written as numbers (YYYYMMDD)


# Dates written as numbers (20260101; a 'ds' column) read as Unix seconds would fall in July to September
# 1970, where no event log lies: a numeric column whose every value is such a date is read as dates.
DAY_NUMBERS = (16780101, 22611231)


def parse_timestamps(ts: Any, frame: Any) -> Timestamps:
    """datetime64 columns (any unit or time zone), Unix epochs (numbers or digit strings, unit per value),
    dates written as numbers (YYYYMMDD, every value) and date strings, to UTC datetime64[ns]. Naive strings
    are taken as UTC, so a file mixing '2026-01-01T10:00:00' and '2026-01-01T10:00:00Z' reads as one clock."""
    if _kind(ts).startswith("datetime64"):
        return _from_datetimes(ts)
    if _kind(ts).startswith("bool"):
        raise UsageError("the timestamp column holds true/false values, not times; map the column that holds the "
                         "time with --time-col")
    if _is_numeric(ts):
        return _from_day_numbers(ts, frame) or _from_epochs(ts)
    text = ts.astype("str").str.strip().str.rstrip("Zz")  # UTC either way; a 'z' cost pandas its nanoseconds
    started = time.time_ns()
    parsed, suspects = _parse_dates(text, frame)
    dates = _undated_as_unparseable(_from_datetimes(parsed), text, suspects, started)
    if not bool(dates.unparseable.any()):
        return dates
    # Digit strings ("1768089656") are epochs stored as text, e.g. in a Parquet string column. Whole ones are
    # read as integers, exactly as the service reads them: through float64 a ms epoch moved by up to 256 ns,
    # so a row and its copy written as an ISO date were no longer duplicates.
    whole = (text.str.contains(WHOLE_EPOCH, regex=True).fillna(False) & dates.unparseable).astype("bool")
    integers = (_from_epochs(text.where(whole, "0").astype("int64"), missing=~whole) if bool(whole.any())
                else Timestamps(dates.values, ~whole, whole))  # none: every row unread, none out of range
    # Only the rows no date format read: to_numeric of the whole column cost 1.8 s per million for one bad row.
    epochs = _from_epochs(frame.to_numeric(text.where(dates.unparseable & ~whole), errors="coerce"))
    values = dates.values.where(integers.unparseable, integers.values)
    units = {u: integers.epoch_units.get(u, 0) + epochs.epoch_units.get(u, 0)
             for u in NS_PER if u in integers.epoch_units or u in epochs.epoch_units}
    return Timestamps(
        values=values.where(epochs.unparseable, epochs.values),
        unparseable=dates.unparseable & integers.unparseable & epochs.unparseable,
        out_of_range=dates.out_of_range | integers.out_of_range | epochs.out_of_range,
        epoch_units=units,
    )


# A time with no date ('10:00', '9:30 pm', '22:00-05:00') or the words 'now' and 'today': the parser dates them
# on the day it runs, so a rerun tomorrow would read other days (the service refuses them: no ISO date).
# Letters of either case spelled out: cuDF's `str.match` takes no `case=False`.
_UNDATED = (r"^(?:[Nn][Oo][Ww]|[Tt][Oo][Dd][Aa][Yy]|\d{1,2}:\d{1,2}(?::\d{1,2}(?:[.,]\d+)?)?"
            r"(?:\s*[AaPp]\.?\s?[Mm]\.?)?(?:\s*(?:[Uu][Tt][Cc]|[Gg][Mm][Tt]|[+-]\d{1,2}(?::?\d{2})?))?)$")
_NEAR_NOW_NS = 2 * 86_400 * 10**9  # what the parser dated today, in any time zone


def _undated_as_unparseable(dates: Timestamps, text: Any, suspects: Any, started: int) -> Timestamps:
    """`dates` with the values that had no date (`_UNDATED`) marked unparseable. Only values the parser put
    within two days of now are read again, and of those only `suspects` (see `_parse_dates`) and the ones
    dated after parsing `started` ('now' and 'today' pass any format): a log of other days, or one read by a
    dated format, pays a few comparisons."""
    now = time.time_ns()
    ns = dates.values.astype("int64")
    parsed = ~dates.unparseable
    if suspects is None:
        near = parsed & (ns >= started) & (ns <= now)
    else:
        near = parsed & (ns >= now - _NEAR_NOW_NS) & (ns <= now + _NEAR_NOW_NS)
        if suspects is not True:
            near &= suspects | (ns >= started) & (ns <= now)
    if not bool(near.any()):
        return dates
    undated = near & text.where(near).str.match(_UNDATED).fillna(False).astype("bool")  # missing: skipped
    return dataclasses.replace(dates, unparseable=dates.unparseable | undated)


def _parse_dates(text: Any, frame: Any) -> tuple[Any, Any]:
    """Inferred-format parsing. Where that format misses values, day-first is tried too and the reading
    that parses more wins, so '13/01/2026' does not silently turn '11/01/2026' into November; on pandas
    the values still missed get a per-value retry in the same order. Returns the datetimes and which
    values may have been read without a date (`_UNDATED`): a mask, True (any) or None (none)."""
    pandas = frame_kind(text) == "pandas"
    utc = {"utc": True} if pandas else {}

    def parse(values, **options):
        try:
            with warnings.catch_warnings():
                # pandas warns when it cannot infer one format; the retries below cover that case.
                warnings.simplefilter("ignore", UserWarning)
                return frame.to_datetime(values, errors="coerce", **utc, **options)
        except (ValueError, TypeError) as exc:
            raise UsageError(f"timestamps could not be parsed ({exc}); give ISO-8601 strings or Unix epochs") from None

    def missed(parsed):
        return (parsed.isna() & text.notna()).fillna(False)

    parsed, dayfirst = parse(text), False
    if bool(missed(parsed).any()):
        day_first = parse(text, dayfirst=True)
        if int(missed(day_first).sum()) < int(missed(parsed).sum()):
            parsed, dayfirst = day_first, True
    left = missed(parsed)
    retried = pandas and bool(left.any())
    if retried:
        parsed = parsed.copy()
        parsed[left] = parse(text[left], format="mixed", dayfirst=dayfirst)
    # The format inferred from the first value read every value the retries did not: it has a date if
    # that value has one, and then only the retried values may lack one.
    first = text.head(1000).dropna().head(1)
    dated_format = len(first) == 1 and not re.match(_UNDATED, str(first.iloc[0]))
    return parsed, (left if retried else None) if dated_format else True


def _from_datetimes(ts: Any) -> Timestamps:
    if getattr(ts.dtype, "tz", None) is not None:
        ts = ts.dt.tz_convert("UTC").dt.tz_localize(None)
    unit = np.datetime_data(np.dtype(ts.dtype))[0]
    missing = ts.isna()
    values, out_of_range = _to_ns(ts.astype("int64").where(~missing, 0), NS_PER[unit], integral=True)
    return Timestamps(values, missing, out_of_range)


def _from_day_numbers(numbers: Any, frame: Any) -> Timestamps | None:
    """Numbers that are all dates written as YYYYMMDD (`DAY_NUMBERS`), as dates; None where any is not.
    The range is read first: an epoch column (the usual case) is told apart without a pass per test."""
    low, high = DAY_NUMBERS
    if not len(numbers) or not (numbers.min() >= low and numbers.max() <= high):  # all missing: NaN, False
        return None
    values = numbers.astype("float64")
    present = values.notna()
    day = ((values >= low) & (values <= high) & (values == values.round())).fillna(False)
    if not bool(present.any()) or not bool((day | ~present).all()):
        return None
    text = values.where(present, low).astype("int64").astype("str")
    dates = frame.to_datetime(text, format="%Y%m%d", errors="coerce")
    if bool(dates.isna().any()):  # 20261301: no month 13, so not a date column after all
        return None
    return dataclasses.replace(_from_datetimes(dates.where(present)), day_numbers=int(present.sum()))


def _from_epochs(numbers: Any, missing: Any = None) -> Timestamps:
    """Unix epochs, the unit of each by its magnitude; `missing` marks rows that hold no epoch (NaN does too)."""
    magnitude = numbers.astype("float64").abs()
    missing = magnitude.isna() if missing is None else missing | magnitude.isna()
    magnitude = magnitude.where(~missing)
    ns_per, units, low = 0, {}, 0.0
    for unit, high in EPOCH_UNITS:
        in_unit = ((magnitude >= low) & (magnitude < high)).fillna(False)
        units[unit] = int(in_unit.sum())
        ns_per = ns_per + in_unit.astype("int64") * NS_PER[unit]
        low = high
    integral = _kind(numbers).startswith(("int", "uint", "bool"))
    values, out_of_range = _to_ns(numbers.where(~missing, 0), ns_per, integral)
    return Timestamps(values, missing, out_of_range, {u: n for u, n in units.items() if n})


def _to_ns(counts: Any, ns_per: Any, integral: bool) -> tuple[Any, Any]:
    """counts x ns_per as datetime64[ns], and the mask of rows outside what datetime64[ns] holds."""
    out_of_range = ~((counts.astype("float64").abs() * ns_per) <= NS_LIMIT).fillna(False)
    safe = counts.where(~out_of_range, 0)
    if integral:
        ns = safe.astype("int64") * ns_per
    else:
        ns = (safe.astype("float64") * ns_per).round().astype("int64")
    return ns.astype("datetime64[ns]"), out_of_range
