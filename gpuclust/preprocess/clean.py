"""Cleaning and indexing of an event log; one code path for cuDF and pandas.

Every step records rows in, rows out and why, so the manifest can account for each dropped row.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import numpy as np

from gpuclust import schema
from gpuclust.backend import Backend, to_host
from gpuclust.config import PreprocessConfig
from gpuclust.errors import NO_EXAMPLE, CatalogueWarning, InputWarning, UsageError, warn_dropped
from gpuclust.frames import host_frame, local_array, local_values, to_backend_frame
from gpuclust.preprocess.codes import EventCodes
from gpuclust.preprocess.parse import (
    NS_YEARS,
    blank_ids_as_missing,
    catalogue_columns,
    common_key,
    first_value,
    keyed_items,
    money_values,
    normalise_ids,
    not_numeric_message,
    parse_timestamps,
)
from gpuclust.preprocess.prepared import PreparedData, StepCount, frame_module
from gpuclust.preprocess.table import EventTable
from gpuclust.segments import duplicate_neighbours, offsets_of, run_starts, stable_order

MAX_FILTER_PASSES = 10
# Below this share of events with their item in the items table, the two files likely key items differently.
LOW_CATALOGUE_SHARE = 0.5
MAX_DRAWS_PER_USER = 100  # upsampling for scale tests; beyond it a synthetic log is the honest tool


AS_RUN = "pass prepared data as Preprocessor().run makes it, or an events frame"  # how to make prepared data that will do


def require_weighted(event_types: tuple[str, ...], weights: dict[str, float]) -> None:
    """A fit needs some event of positive weight: the types left in the log (`event_types`) with their
    configured weights, checked once cleaning is done (in one process, and over a Dask cluster's partitions)."""
    if not any(weights.get(t, 0.0) > 0 for t in event_types):
        raise UsageError(f"every event left has weight 0 (event types {', '.join(event_types)}); give at least "
                         "one of them a positive weight with --event-weights, e.g. view=1,purchase=5")


def catalogue_table(items: Any, frame: Any) -> tuple[Any, StepCount | None]:
    """The items table as every fit reads it (one process, or the client of a Dask cluster): ids normalised,
    one row per id, prices as numbers and the other columns as text; and a note of the prices that were no
    numbers (None: every price was)."""
    items, bad_prices = catalogue_columns(keyed_items(items), frame)
    why = f"{bad_prices:,} item prices are not numbers and count as missing"
    return items, StepCount("item_prices", len(items), len(items), why) if bad_prices else None


def require_prepared_events(data: PreparedData) -> None:
    """Prepared data that can be prepared again: events, users and items, and at least one event (a UsageError
    naming what is wrong otherwise). Fit checks it at its boundary, so that the Dask path says it too."""
    data.require_complete(AS_RUN)
    if len(data.table) == 0:
        raise UsageError(f"the prepared data has no events ({data!r}: e.g. a table subset that kept no row); "
                         "pass prepared data with events, or an events frame")


class Preprocessor:
    """Clean, weight, sample and index events; `run` returns PreparedData."""

    def __init__(self, config: PreprocessConfig | None = None, seed: int = 0) -> None:
        self.config = config or PreprocessConfig()
        self.seed = seed

    def run(self, events, backend: Backend, items=None, steps: list[StepCount] | None = None,
            vocabulary=None) -> PreparedData:
        """Clean and index `events`. With `vocabulary` (a fitted model's item table) item indices are the
        model's and events on items it does not know are dropped and counted."""
        self.steps_: list[StepCount] = list(steps or [])
        if len(events) == 0:
            raise UsageError("the events input has no rows; check the file or the adapter's filters")

        events = blank_ids_as_missing(events)  # "" names no one: missing, as a CSV reader and the service have it
        # assign and recommend answer for every user they read: count them, to name those no event is left of
        self.users_in_ = users_named(events, normalise=True) if vocabulary is not None else None
        ev = self._drop("missing_ids_or_time", events, events.dropna(subset=[schema.USER, schema.ITEM, schema.TIME]),
                        MISSING_WHY, fix=MISSING_FIX)
        ev = self._normalise_ids(ev, schema.USER)
        ev = self._normalise_ids(ev, schema.ITEM)
        ev = self._values(ev, backend)
        ev = self._parse_time(ev, backend)
        ev = self._known_events(ev, fixed=vocabulary is not None)
        # From here on events are integer codes on the device, sorted once by (user, time).
        codes = EventCodes.of(ev, backend)
        del ev
        return self._from_codes(codes, backend, items, vocabulary)

    def run_prepared(self, data: PreparedData, backend: Backend, items=None, steps: list[StepCount] | None = None,
                     vocabulary=None) -> PreparedData:
        """`run` on events prepared before (a holdout's training rows, `PreparedData.with_table`), read from
        their event table: ids, timestamps, values and event types were read and cleaned then, so the steps
        on codes run again (duplicates, minimum counts, sampling, the catalogue, contiguous indices) and give
        what `run` gives on the same events as a frame, without making that frame. Without `items`, the
        catalogue they were prepared with (`PreparedData.catalogue`) is theirs again."""
        self.steps_ = list(steps or [])
        self.users_in_ = None  # prepared events: their users are the codes' own (`users_of`)
        require_prepared_events(data)
        if items is None and vocabulary is None:
            items = data.catalogue()
        table: EventTable = data.table
        ids = (to_backend_frame(data.users, backend)[schema.USER], to_backend_frame(data.items, backend)[schema.ITEM])
        codes = EventCodes.of_table(table, *ids, backend)
        known = list(self.config.event_weights)
        self.unknown_types_ = {}
        if list(table.event_names) != known:  # other event types: each code to its place among these, or none
            to_known = np.asarray([known.index(n) if n in known else -1 for n in table.event_names], dtype=np.int8)
            event = codes.xp.asarray(to_known)[codes.event.astype(codes.xp.int64)]
            found = to_host(codes.xp.bincount(codes.event.astype(codes.xp.int64)[event < 0],
                                              minlength=len(table.event_names)))
            unknown = {name: int(n) for name, n in zip(table.event_names, found, strict=True) if n}
            self.unknown_types_ = unknown
            if not bool((event >= 0).any()):
                raise UsageError(f"none of the event types {sorted(unknown)[:20]} is known; known: {known}; "
                                 + unknown_types_fix(unknown, self.config.event_weights, vocabulary is not None))
            codes = dataclasses.replace(codes, event=event)
            codes = self._drop("unknown_event_types", codes, codes.take(event >= 0), unknown_types_why(unknown),
                               fix=unknown_types_fix(unknown, self.config.event_weights, vocabulary is not None))
        return self._from_codes(codes, backend, items, vocabulary)

    def _from_codes(self, codes: EventCodes, backend: Backend, items, vocabulary) -> PreparedData:
        """The steps of `run` on integer codes: sort by (user, time), duplicates, minimum counts, sampling,
        weights, the saved model's vocabulary, the catalogue and the indices."""
        cfg = self.config
        codes = self._clean_codes(codes)
        if cfg.sample_users is not None:
            codes = self._sample_users(codes, backend)
        xp = codes.xp
        known = list(cfg.event_weights)
        weight = event_weights(codes, cfg.event_weights)
        present = to_host(xp.bincount(codes.event.astype(xp.int64), minlength=len(known)))
        event_types = tuple(t for t, n in zip(known, present, strict=True) if n > 0)
        if vocabulary is None:
            require_weighted(event_types, cfg.event_weights)
        item_idx = None
        if vocabulary is not None:
            item_idx = _vocabulary_index(codes, vocabulary)
            known_item = item_idx >= 0
            if not bool(known_item.any()):
                raise UsageError(NO_KNOWN_ITEMS)
            users_in = self.users_in_ if self.users_in_ is not None else users_of(codes)
            kept = self._drop("items_unknown_to_model", codes, codes.take(known_item), UNKNOWN_ITEM_WHY,
                              fix=UNKNOWN_ITEM_FIX)
            codes, weight, item_idx = kept, weight[known_item], item_idx[known_item]
            self.steps_.append(unplaced_users(users_in, codes))
            warn_unplaced(self.steps_[-1])
        if items is not None:
            items = self._catalogue(codes, items, backend)
        return _index(codes, weight, item_idx, items, self.steps_, event_types, known, vocabulary)

    def _clean_codes(self, codes: EventCodes) -> EventCodes:
        """The steps on codes before sampling, shared with a Dask partition's cleaning: one sort by
        (user, time), then duplicates (neighbours after that sort) and the minimum counts."""
        codes = codes.take(stable_order(codes.user, codes.time, codes.xp))
        if self.config.drop_duplicates:
            codes = self._drop("exact_duplicates", codes, codes.take(~_duplicates(codes)), DUPLICATE_WHY,
                               fix=DUPLICATE_FIX)
        return self._min_counts(codes)

    # --- steps ------------------------------------------------------------------------------

    def _count(self, step: str, before, after, why: str):
        self.steps_.append(StepCount(step, len(before), len(after), why))
        if len(after) == 0:
            raise UsageError(
                f"no events left after step '{step}' ({why}); "
                "check the input columns, event types and the minimum-count filters"
            )
        return after

    def _drop(self, step: str, before, after, why: str, example: Any = NO_EXAMPLE, fix: str | None = None):
        """A step that drops rows the user did not ask to drop: counted in the manifest and warned about
        (`errors.warn_dropped`), so no row goes without a word."""
        after = self._count(step, before, after, why)
        warn_dropped(len(before) - len(after), len(before), why, example, fix)
        return after

    def _note(self, step: str, ev, why: str) -> None:
        """A step that changes how rows read but drops none."""
        self.steps_.append(StepCount(step, len(ev), len(ev), why))

    def _drop_bad(self, step: str, ev, bad, raw, why: str):
        """Drop the rows where `bad` holds, counted in the manifest and in a warning that shows one `raw`
        value: a dropped row of bad data is never silent."""
        if not bool(bad.any()):
            return self._drop(step, ev, ev, why)  # counted all the same; no copy of a clean frame
        return self._drop(step, ev, ev[~bad], why, first_value(raw, bad))

    def _normalise_ids(self, ev, column: str):
        ids, change = normalise_ids(ev[column])
        if change is None and ids.dtype == ev[column].dtype:
            return ev
        ev = ev.assign(**{column: ids})
        if change is not None:  # a nullable column made plain is no change of any id: not a step
            self._note(f"{column}_types", ev, f"{column}: {change}")
        return ev

    def _values(self, ev, backend: Backend):
        """Money values as float32 (0 where absent); infinite or overflowing ones drop their row."""
        if schema.VALUE not in ev.columns:
            return ev.assign(**{schema.VALUE: np.zeros(len(ev), np.float32)})
        raw = ev[schema.VALUE]
        values, bad, not_number = money_values(raw, backend.frame)
        if not_number is not None:
            self._check_values(int(not_number.sum()), lambda: first_value(raw, not_number))
        ev = ev.assign(**{schema.VALUE: values})  # a shallow copy: the caller's frame keeps its columns
        return self._drop_bad("non_finite_values", ev, bad, raw, "value is infinite or too large for float32")

    def _parse_time(self, ev, backend: Backend):
        """Timestamps to UTC datetime64[ns]; unreadable or out-of-range ones drop their row, and above
        `max_bad_timestamp_share` of them the input is refused as a whole."""
        ts = parse_timestamps(ev[schema.TIME], backend.frame)
        self.epoch_units_ = ts.epoch_units
        if ts.epoch_units:
            self._note(EPOCH_UNITS_STEP, ev, epoch_units_why(ts.epoch_units))
            self._warn_epoch_units(ts.epoch_units)
        if ts.day_numbers:
            self._note("dates_as_numbers", ev, DAY_NUMBERS_WHY)
            warnings.warn(DAY_NUMBERS_WHY + "; write them as ISO-8601 dates (2026-01-01) to say so", InputWarning,
                          stacklevel=2)
        bad = ts.unparseable | ts.out_of_range
        self._check_bad_timestamps(int(bad.sum()), len(ev), lambda: first_value(ev[schema.TIME], bad))
        out = ev.assign(**{schema.TIME: ts.values})
        out = self._drop_bad("unparseable_timestamps", out, ts.unparseable, ev[schema.TIME],
                             "timestamp could not be parsed")
        parsed = ~ts.unparseable
        return self._drop_bad("timestamps_out_of_range", out, ts.out_of_range[parsed], ev[schema.TIME][parsed],
                              f"timestamp outside the years {NS_YEARS}")

    def _warn_epoch_units(self, units: dict[str, int]) -> None:
        warn_epoch_units(units)

    def _check_values(self, n_not_numbers: int, example) -> None:
        """Values that are text but no plain number refuse the input, naming an example (`example` makes it
        only when it is needed)."""
        if n_not_numbers:
            raise UsageError(not_numeric_message(example(), n_not_numbers))

    def _check_bad_timestamps(self, n_bad: int, n: int, example) -> None:
        """Above `max_bad_timestamp_share` of unreadable timestamps the input is refused as a whole
        (`example` makes the example value only when it is needed)."""
        if n and n_bad / n > self.config.max_bad_timestamp_share:
            raise UsageError(bad_timestamps_message(n_bad, n, example()))

    def _known_events(self, ev, fixed: bool = False):
        """Event types become a categorical over the configured types, so later steps hash codes.
        `fixed`: the types are a saved model's, which no flag of this command can extend."""
        known = list(self.config.event_weights)
        types = ev[schema.EVENT]
        if not bool(types.notna().any()):
            self.unknown_types_ = {MISSING_TYPE: len(ev)} if len(ev) else {}
            raise UsageError("the event_type column is empty in every row; map the column that holds the event "
                             "type with --event-col")
        if str(types.dtype).lower().startswith(("int", "uint", "float", "bool")):
            types = types.astype("str")  # event codes 1, 2, 3 are names, as --event-weights 1=1,2=3 writes them
        types = types.astype("category")
        names = [str(n) for n in host_frame(types.cat.categories.to_frame()).iloc[:, 0]]
        if any(n != n.strip().lower() for n in names):
            types = types.astype("str").str.strip().str.lower().astype("category")
            names = sorted({n.strip().lower() for n in names})
        keep = types.isin(known)
        # Rows per unknown type as this cleaner reads types (trimmed, lower case; nulls as "(missing)"): the
        # manifest's and the warning's words, and what a Dask partition reports (also when it raises below).
        counts = host_frame(types[~keep].value_counts(dropna=False).to_frame()).iloc[:, 0]
        unknown = {MISSING_TYPE if _missing(name) else str(name): int(n) for name, n in counts.items() if n}
        self.unknown_types_ = unknown
        if not bool(keep.any()):
            fix = ("map yours to these in the events file, or refit with gpuclust run --event-weights TYPE=W,..."
                   if fixed else "give weights for yours with --event-weights TYPE=W,...")
            present = [n for n in names if unknown.get(n)]  # a categorical column may list types no row has
            raise UsageError(f"none of the event types {present[:20]} is known; known: {known}; {fix}")
        out = ev.assign(**{schema.EVENT: types.cat.set_categories(known)})
        return self._drop("unknown_event_types", ev, out if not unknown else out[keep], unknown_types_why(unknown),
                          fix=unknown_types_fix(unknown, self.config.event_weights, fixed))

    def _catalogue(self, codes: EventCodes, items, backend: Backend):
        """The items table keyed like the events; a low share of events found in it is warned about,
        because mismatched id formats otherwise show only as clusters without categories."""
        items, note = catalogue_table(items, backend.frame)
        self.steps_.extend([note] if note else [])
        keys, items = common_key(codes.item_ids.to_frame(schema.ITEM), items, schema.ITEM)
        listed = codes.xp.asarray(local_values(keys[schema.ITEM].isin(items[schema.ITEM])))  # per distinct item
        found = int(listed[codes.item].sum())
        ev = codes
        share = found / len(ev)
        self._note("items_in_catalogue", ev, f"{found:,} of {len(ev):,} events ({share:.1%}) have their item "
                                             "in the items table")
        if share < LOW_CATALOGUE_SHARE:
            warnings.warn(f"only {share:.1%} of events have their item in the items table; check that both files "
                          "use the same item ids (--item-col, --item-key-col)", CatalogueWarning, stacklevel=2)
        return items

    def _min_counts(self, codes: EventCodes) -> EventCodes:
        cfg = self.config
        return self._filter_min_counts(codes, lambda c: users_at_least(c, cfg.min_user_events),
                                       lambda c: items_at_least(c, cfg.min_item_events))

    def _filter_min_counts(self, rows: Any, by_user: Any, by_item: Any) -> Any:
        """Users and items below their minimum counts drop, in turns, until none is left below; `by_user`
        and `by_item` keep the rows of users (items) at or above their minimum (codes or a frame)."""
        cfg = self.config
        rows_in = len(rows)
        dropped_users = dropped_items = 0
        for _ in range(MAX_FILTER_PASSES):
            before = len(rows)
            if cfg.min_user_events > 1:
                n = len(rows)
                rows = by_user(rows)
                dropped_users += n - len(rows)
            if cfg.min_item_events > 1:
                n = len(rows)
                rows = by_item(rows)
                dropped_items += n - len(rows)
            if len(rows) == before:
                break
        self.steps_.append(StepCount("min_user_events", rows_in, rows_in - dropped_users,
                                     f"user has fewer than {cfg.min_user_events} events"))
        self.steps_.append(StepCount("min_item_events", rows_in - dropped_users, len(rows),
                                     f"item has fewer than {cfg.min_item_events} events"))
        if len(rows) == 0:
            raise UsageError(
                "no events left after the minimum-count filters; lower --min-user-events / --min-item-events"
            )
        return rows

    def _sample_users(self, codes: EventCodes, backend: Backend) -> EventCodes:
        """Draw users (not events) so each sampled user keeps a whole history."""
        cfg = self.config
        xp = codes.xp
        users = xp.nonzero(xp.bincount(codes.user, minlength=len(codes.user_ids)))[0]  # codes in id order
        n = len(users)
        if not cfg.sample_replace and cfg.sample_users >= n:
            self.steps_.append(StepCount("sample_users", len(codes), len(codes), f"all {n} users kept"))
            return codes
        if cfg.sample_replace and cfg.sample_users > MAX_DRAWS_PER_USER * n:
            raise UsageError(f"--sample-users {cfg.sample_users:,} with --sample-replace would repeat each of the "
                             f"{n:,} users over {MAX_DRAWS_PER_USER} times; give at most "
                             f"{MAX_DRAWS_PER_USER * n:,}, or synthesise a bigger log with 'gpuclust synth'")
        rng = np.random.default_rng(self.seed)
        draws = np.sort(rng.choice(n, size=cfg.sample_users, replace=cfg.sample_replace))
        if not cfg.sample_replace:
            chosen = xp.zeros(len(codes.user_ids), dtype=bool)
            chosen[users[xp.asarray(draws)]] = True
            return self._count("sample_users", codes, codes.take(chosen[codes.user]),
                               f"user not among the {cfg.sample_users} sampled")
        # With replacement a user drawn c times becomes c users: id, id#1, id#2, ... (ids become text)
        same = np.r_[False, draws[1:] == draws[:-1]]
        run_start = np.maximum.accumulate(np.where(~same, np.arange(len(draws)), 0))
        copy = np.arange(len(draws)) - run_start
        drawn = to_host(users)[draws]  # user code of each draw
        starts = to_host(offsets_of(codes.user, len(codes.user_ids), xp))
        lengths = starts[drawn + 1] - starts[drawn]
        rows = np.repeat(starts[drawn] - np.r_[0, np.cumsum(lengths)[:-1]], lengths) + np.arange(lengths.sum())
        names = host_frame(codes.user_ids.to_frame(schema.USER))[schema.USER].astype("str").to_numpy()[drawn]
        names = np.where(copy > 0, np.char.add(np.char.add(names.astype(str), "#"), copy.astype(str)), names)
        new_ids, new_codes = np.unique(names, return_inverse=True)
        out = codes.take(xp.asarray(rows))
        user = xp.asarray(np.repeat(new_codes, lengths).astype(np.int64))
        order = stable_order(user, out.time, xp)  # the copies are users of their own, sorted by id as any
        out = dataclasses.replace(out, user=user, user_ids=backend.frame.Series(new_ids)).take(order)
        return self._count("sample_users", codes, out, f"{cfg.sample_users} users drawn with replacement")


MISSING_WHY = "user_id, item_id or timestamp is missing"
UNKNOWN_ITEM_WHY = "item not in the model's vocabulary"
UNKNOWN_ITEM_FIX = ("the model places users by the items it was fitted on; refit with gpuclust run on a log that has "
                    "these items to use them")
UNPLACED_USERS_STEP = "users_not_placed"  # counted in users, not events
UNPLACED_USERS_WHY = ("every event of theirs was dropped (the lines above say why, and how to keep them): they are not "
                      "placed (no cluster, no list)")
NO_KNOWN_ITEMS = ("none of the events is on an item the saved model knows (it places users by the items it was fitted "
                  "on); check that the item ids are in the same form, or refit with gpuclust run on a log that has "
                  "these items")
MISSING_FIX = "fill those values, or map the columns that hold them (--user-col, --item-col, --time-col)"
DUPLICATE_WHY = "identical to an earlier row (same user, item, event type, timestamp and value)"
DUPLICATE_FIX = "to keep repeated rows, set drop_duplicates = false under [preprocess] in a --config TOML"
MAX_NAMED_TYPES = 5  # unknown event types named in a warning; the rest are counted
MISSING_TYPE = "(missing)"  # how rows without an event type are named among the unknown types


def unknown_types_why(unknown: dict[str, int]) -> str:
    """Why rows of event types without a weight dropped, naming the biggest types with their counts."""
    ranked = sorted(unknown.items(), key=lambda kv: (-kv[1], kv[0]))
    named = ", ".join(f"{name!r} {n:,}" for name, n in ranked[:MAX_NAMED_TYPES])
    more = f" and {len(ranked) - MAX_NAMED_TYPES:,} more types" if len(ranked) > MAX_NAMED_TYPES else ""
    return f"event type without a weight ({named}{more})"


def unknown_types_fix(unknown: dict[str, int], weights: dict[str, float], fixed: bool = False) -> str:
    """What keeps those rows: weights for the types, written out as the flag takes them (it replaces the
    whole table), or for a saved model, a refit. A missing type takes no weight: its rows need one filled in."""
    fill = "fill in the missing event types" if MISSING_TYPE in unknown else None
    named = [name for name in unknown if name != MISSING_TYPE]
    if not named:
        return f"{fill} (or map the column that holds them with --event-col)"
    ranked = sorted(named, key=lambda name: (-unknown[name], name))[:MAX_NAMED_TYPES]
    pairs = ",".join([*(f"{name}={w:g}" for name, w in weights.items()), *(f"{name}=W" for name in ranked)])
    also = f"; and {fill}" if fill else ""
    if fixed:
        return (f"the model knows only {', '.join(weights)}; refit with gpuclust run --event-weights {pairs} to use "
                f"them{also}")
    return (f"to keep them, give each a weight W: --event-weights {pairs} (or event_weights under [preprocess] in "
            f"the TOML){also}")


EPOCH_UNITS_STEP = "epoch_units"
DAY_NUMBERS_WHY = ("timestamps are dates written as numbers (YYYYMMDD, e.g. 20260101) and were read as dates, not as "
                   "Unix seconds in 1970")


def epoch_units_why(units: dict[str, int]) -> str:
    """The manifest's note of how many epochs were read in each unit."""
    return f"Unix epochs read per value by magnitude: {_epoch_counts(units)}"


def warn_epoch_units(units: dict[str, int]) -> None:
    """Epochs in more than one unit are read by magnitude, and said so once (on Dask with the whole
    input's counts, `distributed.prepare.check_cleaned`)."""
    if len(units) > 1:
        warnings.warn(f"timestamps mix Unix epoch units; each was read by its magnitude: {_epoch_counts(units)}",
                      InputWarning, stacklevel=3)


def _epoch_counts(units: dict[str, int]) -> str:
    return ", ".join(f"{n:,} in {unit}" for unit, n in units.items())


def bad_timestamps_message(n_bad: int, n: int, example) -> str:
    return (f"{n_bad:,} of {n:,} timestamps ({n_bad / n:.1%}) could not be parsed or lie outside the years "
            f"{NS_YEARS}, e.g. {example!r}; give ISO-8601 dates with their times or Unix epochs (s, ms, us or ns), "
            "or map the right column with --time-col")


def users_named(events: Any, normalise: bool = False) -> int:
    """Distinct user ids of an events frame (rows without one cannot be named), as the cleaning will read
    them (`normalise`: 1 and "1" are one user where the ids mix types)."""
    ids = events[schema.USER].dropna()
    return int((normalise_ids(ids)[0] if normalise else ids).nunique())


def unplaced_users(users_in: int, after: EventCodes) -> StepCount:
    """The users of the input (`users_named`) that the drops left without an event, whatever dropped them:
    unknown items or event types, bad values, missing fields. They vanish from assign's and recommend's
    outputs, so they are counted. A Dask partition holds whole users and counts its own."""
    return StepCount(UNPLACED_USERS_STEP, users_in, users_of(after), UNPLACED_USERS_WHY)


def users_of(codes: EventCodes) -> int:
    """The users with at least one event in `codes`."""
    return int((codes.xp.bincount(codes.user, minlength=len(codes.user_ids)) > 0).sum())


def warn_unplaced(step: StepCount) -> None:
    """The one warning for `unplaced_users`, on one process and Dask alike."""
    warn_dropped(step.dropped, step.rows_in, step.why, what="users")


def _missing(value: Any) -> bool:
    """A missing host value of any kind: None, NaN, NaT or pd.NA (a string column's, which has no truth value)."""
    import pandas as pd

    return bool(pd.isna(value))


def _at_least(codes: Any, n: int, minimum: int, xp: Any) -> Any:
    """Per row: does its code (0..n-1) occur at least `minimum` times?"""
    return xp.bincount(codes, minlength=n)[codes] >= minimum


def users_at_least(codes: EventCodes, minimum: int) -> EventCodes:
    """The rows of users with at least `minimum` events (one pass of the user filter; a Dask partition
    runs it again after each global item pass)."""
    return codes.take(_at_least(codes.user, len(codes.user_ids), minimum, codes.xp))


def items_at_least(codes: EventCodes, minimum: int) -> EventCodes:
    """The rows of items with at least `minimum` events (one pass of the item filter)."""
    return codes.take(_at_least(codes.item, len(codes.item_ids), minimum, codes.xp))


def event_weights(codes: EventCodes, weights: dict[str, float]) -> Any:
    """Each event's weight (float32), looked up by its type's code: the codes index `weights` in order."""
    return codes.xp.asarray(np.asarray(list(weights.values()), dtype=np.float32))[codes.event]


def _ordinal(column, name: str):
    """Sorted distinct values and their contiguous int32 index (the Dask path's item vocabulary)."""
    table = column.drop_duplicates().sort_values().reset_index(drop=True).to_frame()
    table[name] = np.arange(len(table), dtype=np.int32)
    return table


def _duplicates(codes: EventCodes) -> Any:
    return duplicate_rows(codes.user, codes.time, codes.item, codes.event, codes.value, codes.xp)


def duplicate_rows(user: Any, time: Any, item: Any, event: Any, value: Any, xp: Any) -> Any:
    """Rows identical to an earlier one (the exact-duplicates rule of every surface: the batch's
    preprocessing and the service's fast path). Rows must be sorted by (user, time), ties in input order,
    so only rows tied on both can be duplicates, and only those are compared on item, type and float32
    value (-0.0 is 0.0, as pandas has it)."""
    ties = run_starts(user, time, xp=xp)
    value_bits = (value + xp.float32(0.0)).view(xp.int32)
    return duplicate_neighbours(ties, (item, event, value_bits), xp)


def _vocabulary_index(codes: EventCodes, vocabulary: Any) -> Any:
    """The model's item_idx of every event (-1: an item the model does not know)."""
    distinct = codes.item_ids.to_frame(schema.ITEM)
    distinct, vocabulary = common_key(distinct, vocabulary, schema.ITEM)
    distinct["_code"] = np.arange(len(distinct))
    found = distinct.merge(vocabulary[[schema.ITEM, schema.ITEM_IDX]], on=schema.ITEM, how="left")
    found = found.sort_values("_code")
    lookup = codes.xp.asarray(local_values(found[schema.ITEM_IDX].fillna(-1).astype("int64")))
    return lookup[codes.item]


def _index(codes: EventCodes, weight: Any, item_idx: Any, items: Any, steps: list[StepCount],
           event_types: tuple[str, ...], event_names: list[str], vocabulary=None) -> PreparedData:
    """Contiguous user and item indices (in sorted id order) and the event table, sorted by (user, time)."""
    xp = codes.xp
    frame = frame_module(codes.user_ids)
    user_present = xp.bincount(codes.user, minlength=len(codes.user_ids)) > 0
    user_idx = (xp.cumsum(user_present) - 1).astype(xp.int32)[codes.user]
    user_codes = local_array(xp.nonzero(user_present)[0], codes.user_ids)
    n_users = int(user_present.sum())
    users = frame.DataFrame({schema.USER_IDX: np.arange(n_users, dtype=np.int32) if frame.__name__ == "pandas"
                             else xp.arange(n_users, dtype=xp.int32),
                             schema.USER: codes.user_ids.take(user_codes).reset_index(drop=True)})
    text_columns: tuple[str, ...] = ()
    if vocabulary is not None:
        item_table = vocabulary
        text_columns = tuple(c for c in vocabulary.columns
                             if c not in (schema.ITEM, schema.ITEM_IDX, schema.CATEGORY, schema.PRICE))
    else:
        item_present = xp.bincount(codes.item, minlength=len(codes.item_ids)) > 0
        item_idx = (xp.cumsum(item_present) - 1).astype(xp.int32)[codes.item]
        item_codes = local_array(xp.nonzero(item_present)[0], codes.item_ids)
        item_table = frame.DataFrame({schema.ITEM: codes.item_ids.take(item_codes).reset_index(drop=True)})
        item_table[schema.ITEM_IDX] = np.arange(len(item_table), dtype=np.int32)
        if items is not None:
            item_table, items = common_key(item_table, items, schema.ITEM)
            extra = [c for c in items.columns if c != schema.ITEM]
            text_columns = tuple(c for c in extra if c not in (schema.CATEGORY, schema.PRICE))
            item_table = item_table.merge(items, on=schema.ITEM, how="left")
        item_table = item_table.sort_values(schema.ITEM_IDX).reset_index(drop=True)
    table = EventTable(user=user_idx, item=item_idx.astype(xp.int32), event=codes.event, time=codes.time,
                       value=codes.value, weight=weight.astype(xp.float32),
                       offsets=offsets_of(user_idx, n_users, xp), event_names=tuple(event_names), xp=xp)
    return PreparedData(
        users=users[[schema.USER_IDX, schema.USER]],
        items=item_table,
        n_users=n_users,
        n_items=len(item_table),
        reference_time=_timestamp(int(codes.time.max())) if len(codes) else None,  # None: an empty partition
        steps=steps,
        text_columns=text_columns,
        event_types=event_types,
        table=table,
        event_names=tuple(event_names),
        xp=xp,
    )


def _timestamp(ns: int) -> Any:
    import pandas as pd

    return pd.Timestamp(ns, unit="ns")
