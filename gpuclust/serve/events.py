"""Request bodies into event columns: the service's strict reading of the canonical columns.

A body is a JSON object with either `events`, a list of objects with `user_id`, `item_id`,
`event_type`, `timestamp` and optionally `value`, or `columns`, an object of equal-length lists under
those names (the compact form for batches). Ids are integers or text; timestamps are ISO-8601 strings
(a zone, `Z` or `z`, naive ones read as UTC) or Unix epochs (numbers or ASCII digit strings,
s/ms/us/ns by magnitude, as `gpuclust run` reads them); values are finite float32 numbers (absent or
null: 0). Text ids must be valid Unicode (no lone surrogates, which no key can hash). Anything else is
a `RequestError` naming the event and the field, never a guess and never an internal error: an API
caller can fix its request, whereas a file is read as well as it can be.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from gpuclust import schema
from gpuclust.preprocess.parse import DAY_NUMBERS, EPOCH_UNITS, F32_MAX, NS_LIMIT, NS_PER, NS_YEARS

FIELDS = (schema.USER, schema.ITEM, schema.EVENT, schema.TIME, schema.VALUE)
REQUIRED = (schema.USER, schema.ITEM, schema.TIME)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# ASCII digits only: str.isdigit() also says yes to "²" or "--5" after lstrip, which int() refuses.
# 20 digits reach past any epoch in range; longer ones are refused before int() (4,300-digit limit).
_EPOCH_TEXT = re.compile(r"-?[0-9]{1,20}")
_LONG_DIGITS = re.compile(r"-?[0-9]{21,}")
# The 7th to 9th digits of an ISO time's fraction: datetime keeps microseconds, the batch reader nanoseconds
# (of a fraction after a dot; after a comma it too keeps microseconds).
_NANO_DIGITS = re.compile(r"[0-9]:[0-9]{2}\.[0-9]{6}([0-9]{1,3})")


class RequestError(ValueError):
    """A bad request: `status` (4xx) and a one-line reason for the caller."""

    def __init__(self, reason: str, status: int = 422) -> None:
        super().__init__(reason)
        self.status = status


@dataclass
class EventColumns:
    """One request's events as plain columns (Python lists and NumPy arrays), in the order given."""

    user: list[Any]
    item: list[Any]
    event_type: list[Any]
    ts_ns: np.ndarray  # int64 UTC nanoseconds
    value: np.ndarray  # float32

    def __len__(self) -> int:
        return len(self.user)


def read_body(body: Any, max_events: int) -> EventColumns:
    """Validate a decoded JSON body and return its events as columns."""
    if not isinstance(body, dict):
        raise RequestError(f"the body must be a JSON object with 'events' or 'columns', got {_kind(body)}")
    if "events" in body:
        records = body["events"]
        if not isinstance(records, list):
            raise RequestError(f"'events' must be a list of event objects, got {_kind(records)}")
        _check_count(len(records), max_events)
        for i, record in enumerate(records):
            if not isinstance(record, dict):
                raise RequestError(f"event {i} must be an object with {', '.join(REQUIRED)}, got {_kind(record)}")
        columns = {name: [r.get(name) for r in records] for name in FIELDS}
    elif "columns" in body:
        given = body["columns"]
        if not isinstance(given, dict):
            raise RequestError(f"'columns' must be an object of equal-length lists, got {_kind(given)}")
        for name in REQUIRED:
            if not isinstance(given.get(name), list):
                raise RequestError(f"'columns' needs a list under {name!r}")
        n = len(given[schema.USER])
        _check_count(n, max_events)
        columns = {}
        for name in FIELDS:
            values = given.get(name)
            if values is None:
                values = [None] * n
            if not isinstance(values, list) or len(values) != n:
                raise RequestError(f"column {name!r} must be a list of {n} values, like user_id")
            columns[name] = values
    else:
        raise RequestError("the body needs 'events' (a list of event objects) or 'columns' (lists per field)")
    if not columns[schema.USER]:
        raise RequestError("the request has no events")
    for name in (schema.USER, schema.ITEM):
        _check_ids(columns[name], name)
        _check_text(columns[name], name)
    return EventColumns(columns[schema.USER], columns[schema.ITEM], _event_types(columns[schema.EVENT]),
                        timestamps_ns(columns[schema.TIME]), _values(columns[schema.VALUE]))


def _check_count(n: int, max_events: int) -> None:
    if n > max_events:
        raise RequestError(f"{n:,} events in one request; at most {max_events:,} are accepted", 413)


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "true/false", type(None): "null"}.get(
        type(value), "a number" if isinstance(value, int | float) else type(value).__name__)


def _check_ids(values: list[Any], name: str) -> None:
    kinds = set(map(type, values))
    if kinds <= {int} or (kinds <= {int, str} and "" not in values):
        return  # the usual case, checked in one pass
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, int | str | float):
            raise RequestError(f"event {i}: {name} must be an integer or a string, got {_kind(v)}")
        if isinstance(v, float) and not (math.isfinite(v) and v.is_integer()):
            raise RequestError(f"event {i}: {name} must be an integer or a string, got {v!r}")
        if isinstance(v, str) and not v:
            raise RequestError(f"event {i}: {name} is empty")


def _check_text(values: list[Any], name: str) -> None:
    """Refuse text ids that are not valid Unicode (a lone surrogate such as "\\ud800" decodes from
    JSON but cannot be encoded to UTF-8, so it can be neither hashed nor matched)."""
    texts = [v for v in values if isinstance(v, str)]
    try:
        "".join(texts).encode("utf-8")
    except UnicodeEncodeError:
        pass
    else:
        return
    for i, v in enumerate(values):
        if isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                raise RequestError(f"event {i}: {name} is not valid Unicode text (it holds a lone surrogate)") from None


def _event_types(values: list[Any]) -> list[Any]:
    """Event types as `gpuclust run` reads them (codes are names, trimmed, lower case); None if absent."""
    if set(map(type, values)) <= {str}:
        return [v.strip().lower() for v in values]
    out = []
    for i, v in enumerate(values):
        if v is None:
            out.append(None)
        elif isinstance(v, str):
            out.append(v.strip().lower())
        elif isinstance(v, int | float) and not isinstance(v, bool):
            out.append(str(v))
        else:
            raise RequestError(f"event {i}: event_type must be a string, got {_kind(v)}")
    return out


def _values(values: list[Any]) -> np.ndarray:
    if set(map(type, values)) <= {int, float}:
        try:
            out = np.asarray(values, dtype=np.float64)
        except OverflowError:  # an integer beyond float64: the loop below names it
            out = None
        if out is not None and np.isfinite(out).all() and (np.abs(out) <= F32_MAX).all():
            return out.astype(np.float32)
    out = np.zeros(len(values), dtype=np.float64)
    for i, v in enumerate(values):
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise RequestError(f"event {i}: value must be a number (or null), got {_kind(v)}")
        if abs(v) > F32_MAX or not math.isfinite(v):  # the int comparison first: math.isfinite(10**400) raises
            raise RequestError(f"event {i}: value {_short(v)} is not a finite float32 number")
        out[i] = v
    return out.astype(np.float32)


def timestamps_ns(values: list[Any]) -> np.ndarray:
    """UTC nanoseconds of ISO-8601 strings and Unix epochs (unit by magnitude, as the batch reader)."""
    if set(map(type, values)) <= {int} and values:
        fast = _int_epochs(values)
        if fast is not None:
            return fast
    out = np.empty(len(values), dtype=np.int64)
    for i, v in enumerate(values):
        out[i] = _one_timestamp(i, v)
    return out


def _one_timestamp(i: int, v: Any) -> int:
    if isinstance(v, bool) or v is None:
        raise RequestError(f"event {i}: timestamp is missing" if v is None else
                           f"event {i}: timestamp must be an ISO-8601 string or a Unix epoch, got {_kind(v)}")
    if isinstance(v, str):
        text = v.strip()
        if _EPOCH_TEXT.fullmatch(text):
            return _epoch(i, int(text))
        if _LONG_DIGITS.fullmatch(text):
            raise RequestError(f"event {i}: timestamp {v[:40]!r}... lies outside the years {NS_YEARS}")
        if text[-1:] == "z":  # RFC 3339 allows a lower-case zone letter; fromisoformat does not
            text = text[:-1] + "Z"
        try:
            parsed = datetime.fromisoformat(text)
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            ns = (parsed - _EPOCH) // _MICROSECOND * 1000 + _sub_microseconds(text)
        except (ValueError, OverflowError):
            raise RequestError(f"event {i}: timestamp {v[:40]!r} is neither ISO-8601 nor a Unix epoch") from None
        if abs(ns) > NS_LIMIT:
            raise RequestError(f"event {i}: timestamp {v[:40]!r} lies outside the years {NS_YEARS}")
        return int(ns)
    if isinstance(v, float) and not math.isfinite(v):
        raise RequestError(f"event {i}: timestamp {v!r} is not a number")
    if isinstance(v, int | float):
        return _epoch(i, v)
    raise RequestError(f"event {i}: timestamp must be an ISO-8601 string or a Unix epoch, got {_kind(v)}")


def _sub_microseconds(text: str) -> int:
    """The nanoseconds below the microsecond that `datetime.fromisoformat` drops (it keeps 6 digits of a
    fraction), so '...:03.123456789Z' is the nanosecond the batch reader and `gpuclust assign` read."""
    found = _NANO_DIGITS.search(text)
    return int(found.group(1).ljust(3, "0")) if found else 0


def _int_epochs(values: list[int]) -> np.ndarray | None:
    """Integer epochs all at once; None when one needs the per-value path (out of range, huge)."""
    try:
        numbers = np.asarray(values, dtype=np.int64)
    except OverflowError:
        return None
    magnitude = np.abs(numbers.astype(np.float64))
    if ((numbers >= DAY_NUMBERS[0]) & (numbers <= DAY_NUMBERS[1])).any():
        return None  # a date written as a number: `_epoch` names it
    ns_per = np.select([magnitude < high for _, high in EPOCH_UNITS], [NS_PER[u] for u, _ in EPOCH_UNITS])
    if not (magnitude * ns_per <= NS_LIMIT).all():
        return None
    return numbers * ns_per


def _epoch(i: int, v: int | float) -> int:
    magnitude, low = abs(v), 0.0
    if DAY_NUMBERS[0] <= v <= DAY_NUMBERS[1]:  # as seconds, July to September 1970
        raise RequestError(f"event {i}: timestamp {_short(v)} looks like a date written as a number (YYYYMMDD), "
                           "which as a Unix epoch is a time in 1970; send it as an ISO-8601 string, e.g. '2026-01-01'")
    if magnitude <= NS_LIMIT:  # larger integers would overflow float arithmetic below
        for unit, high in EPOCH_UNITS:
            if low <= magnitude < high:
                if magnitude * NS_PER[unit] > NS_LIMIT:
                    break
                return v * NS_PER[unit] if isinstance(v, int) else round(v * NS_PER[unit])
            low = high
    raise RequestError(f"event {i}: timestamp {_short(v)} lies outside the years {NS_YEARS}")


def _short(v: int | float) -> str:
    """A number for a message: a 400-digit integer is not quoted whole."""
    text = repr(v)
    return text if len(text) <= 40 else f"{text[:20]}...({len(text)} digits)"


_MICROSECOND = datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC) - _EPOCH
