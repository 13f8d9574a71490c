"""Preprocessing on a Dask cluster: one shuffle puts each user's events in one partition, the single-process
`Preprocessor` steps run per partition, and what must be global is decided on the client from small
per-partition summaries.

    ids normalised (a global decision, before the shuffle) -> shuffle by user_id
    -> per partition, on the frame: missing ids, values, timestamps, event types (the edges)
       -> `EventCodes`, sorted by (user, time): duplicates, min events per user (`Preprocessor`'s own steps)
    -> client: step counts summed, the input-wide checks (bad timestamp share, nothing left), warnings
       once with the summed counts, event types present, reference time, item vocabulary and catalogue
    -> [global min_item_events passes, on codes] -> per partition: `EventTable` (users local, items global)

Steps that drop rows are counted per partition and summed, so the manifest's `rows.steps` reads as the
single-process one. A partition may legitimately end empty; only the whole input may not.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gpuclust import schema
from gpuclust.backend import Backend, resolve_backend, to_host
from gpuclust.config import PreprocessConfig
from gpuclust.errors import NO_EXAMPLE, CatalogueWarning, InputWarning, UsageError, warn_dropped
from gpuclust.frames import frame_kind, host_frame, local_values, to_backend_frame
from gpuclust.preprocess.clean import (
    EPOCH_UNITS_STEP,
    LOW_CATALOGUE_SHARE,
    MISSING_FIX,
    MISSING_WHY,
    UNKNOWN_ITEM_WHY,
    Preprocessor,
    _index,
    _ordinal,
    _timestamp,
    _vocabulary_index,
    bad_timestamps_message,
    epoch_units_why,
    event_weights,
    unknown_types_fix,
    unknown_types_why,
    unplaced_users,
    users_at_least,
    users_named,
    users_of,
    warn_epoch_units,
)
from gpuclust.preprocess.codes import EventCodes
from gpuclust.preprocess.parse import (
    EPOCH_UNITS,
    FLAG_KINDS,
    blank_ids_as_missing,
    common_key,
    flag_ids,
    ids_as_text,
    normalise_ids,
    not_numeric_message,
)
from gpuclust.preprocess.prepared import PreparedData, StepCount
from gpuclust.preprocess.table import EventTable


@functools.lru_cache(maxsize=2)
def worker_backend(device: str) -> Backend:
    """The backend of this worker process: resolved once, the same device as the run's."""
    return resolve_backend(device)


# --- per partition ------------------------------------------------------------------------------

class PartitionPreprocessor(Preprocessor):
    """`Preprocessor` steps on one user partition. Nothing here refuses the input: an empty partition or
    one whose rows all drop is normal; the refusals are recorded and decided over all partitions."""

    def __init__(self, config: PreprocessConfig, seed: int = 0, casts: dict[str, str] | None = None,
                 fixed: bool = False) -> None:
        super().__init__(config, seed)
        self.casts = dict(casts or {})
        self.fixed = fixed  # the event types are a saved model's (assign): no flag of that command extends them
        self.refusals: list[str] = []
        self.bad_timestamps = (0, 0, None)
        self.not_numbers: tuple[int, Any] = (0, None)  # values that are text but no number, and an example
        self.examples: dict[str, Any] = {}  # per warned step (`Preprocessor._drop`): an example value or none
        self.fixes: dict[str, str | None] = {}
        self.unknown_types: dict[str, int] = {}

    def _count(self, step: str, before, after, why: str):
        self.steps_.append(StepCount(step, len(before), len(after), why))
        return after

    def _drop(self, step: str, before, after, why: str, example: Any = NO_EXAMPLE, fix: str | None = None):
        """Counted here and warned about once on the client, with the counts summed over partitions."""
        if len(after) < len(before):
            if self.examples.get(step, NO_EXAMPLE) is NO_EXAMPLE:
                self.examples[step] = example
            self.fixes[step] = fix
        if step == "unknown_event_types":
            self.unknown_types = dict(getattr(self, "unknown_types_", {}))
        return self._count(step, before, after, why)

    def _warn_epoch_units(self, units: dict[str, int]) -> None:
        """Said once on the client, with the whole input's counts (`check_cleaned`)."""

    def _check_values(self, n_not_numbers: int, example) -> None:
        self.not_numbers = (n_not_numbers, example() if n_not_numbers else None)

    def _check_bad_timestamps(self, n_bad: int, n: int, example) -> None:
        self.bad_timestamps = (n_bad, n, example() if n_bad else None)

    def _known_events(self, ev, fixed: bool = False):
        self.unknown_types_ = {}
        try:
            return super()._known_events(ev, fixed=fixed or self.fixed)
        except UsageError as exc:  # no known type in this partition: its rows drop; the input may still be fine
            self.refusals.append(str(exc))
            # The cleaner's own count (types trimmed and lower-cased, nulls as "(missing)"), as one process has it.
            self.unknown_types = dict(self.unknown_types_)
            self.steps_.append(StepCount("unknown_event_types", len(ev), 0, unknown_types_why(self.unknown_types)))
            self.examples.setdefault("unknown_event_types", NO_EXAMPLE)
            self.fixes["unknown_event_types"] = None
            out = ev.iloc[0:0].copy()
            out[schema.EVENT] = out[schema.EVENT].astype("str").astype("category").cat.set_categories(
                list(self.config.event_weights))
            return out

    def clean(self, events, backend: Backend) -> EventCodes:
        """`Preprocessor.run` up to sampling, for the rows of one partition (ids already normalised): the
        frame only up to the known event types, then codes sorted by (user, time), as in one process."""
        self.steps_ = []
        # ids were normalised before the shuffle; the partition holds whole users, so the counts add up
        self.users_in_ = users_named(events) if self.fixed else None
        ev = self._drop("missing_ids_or_time", events, events.dropna(subset=[schema.USER, schema.ITEM, schema.TIME]),
                        MISSING_WHY, fix=MISSING_FIX)
        ev = apply_casts(ev, self.casts)  # the int64 casts: a float id column with a gap could not take them before
        ev = self._values(ev, backend)
        ev = self._parse_time(ev, backend)
        ev = self._known_events(ev)
        return self._clean_codes(EventCodes.of(ev, backend))  # min events per user only: items are global

    def _min_counts(self, codes: EventCodes) -> EventCodes:
        try:
            return super()._min_counts(codes)
        except UsageError:  # every user of this partition was below the minimum; the total decides
            return codes.take(codes.xp.zeros(len(codes), dtype=bool))


@dataclass
class Cleaned:
    """One cleaned partition (its codes kept on its worker) and what the client needs to know about it."""

    codes: EventCodes | None
    steps: list[StepCount]
    refusals: list[str]
    bad_timestamps: tuple[int, int, Any]
    examples: dict[str, Any]
    warnings: list[str]
    event_names: list[str]
    time_range: tuple[Any, Any]
    item_counts: Any  # host pandas Series: events per item_id
    item_dtype: str
    fixes: dict[str, str | None] = field(default_factory=dict)  # per warned step: what keeps its rows
    unknown_types: dict[str, int] = field(default_factory=dict)  # dropped rows per event type without a weight
    event_weights: dict[str, float] = field(default_factory=dict)  # what the event codes index, in order
    # Rows the global min_item_events passes dropped here: (by the item minimum, by the user minimum after it)
    global_drops: tuple[int, int] = (0, 0)
    not_numbers: tuple[int, Any] = (0, None)  # values that are text but no number here, and an example
    users_in: int | None = None  # assign: the users this partition read (`users_named`), to count those not placed
    epoch_units: dict[str, int] = field(default_factory=dict)  # timestamps read as epochs, per unit

    def summary(self) -> Cleaned:
        return dataclasses.replace(self, codes=None)


def clean_partition(raw: Any, config: PreprocessConfig, seed: int, device: str,
                    casts: dict[str, str] | None = None, fixed: bool = False) -> Cleaned:
    backend = worker_backend(device)
    pre = PartitionPreprocessor(dataclasses.replace(config, min_item_events=1, sample_users=None), seed, casts, fixed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        codes = pre.clean(raw, backend)
    known = list(config.event_weights)
    present = to_host(codes.xp.bincount(codes.event.astype(codes.xp.int64), minlength=len(known)))
    names = sorted(name for name, n in zip(known, present, strict=True) if n)
    times = (_timestamp(int(codes.time.min())), _timestamp(int(codes.time.max()))) if len(codes) else (None, None)
    return Cleaned(codes, pre.steps_, pre.refusals, pre.bad_timestamps, pre.examples,
                   [str(w.message) for w in caught if issubclass(w.category, InputWarning)], names, times,
                   _item_counts(codes), str(codes.item_ids.dtype), pre.fixes, pre.unknown_types,
                   dict(config.event_weights), not_numbers=pre.not_numbers, users_in=pre.users_in_,
                   epoch_units=dict(getattr(pre, "epoch_units_", {})))


def _item_counts(codes: EventCodes) -> Any:
    """Events per item_id of the items present (host pandas Series): what the client adds up."""
    import pandas as pd

    counts = to_host(codes.xp.bincount(codes.item, minlength=len(codes.item_ids)))
    ids = host_frame(codes.item_ids.to_frame(schema.ITEM))[schema.ITEM]
    present = counts > 0
    return pd.Series(counts[present], index=pd.Index(ids[present]), name="count")


def summary_of(cleaned: Cleaned) -> Cleaned:
    return cleaned.summary()


def keep_items(cleaned: Cleaned, allowed: Any, min_user_events: int) -> Cleaned:
    """A global min_item_events pass on one partition: items below it go, then users below theirs."""
    codes = cleaned.codes
    listed = codes.xp.asarray(local_values(codes.item_ids.isin(allowed)))  # per distinct item
    items_kept = codes.take(listed[codes.item])
    kept = users_at_least(items_kept, min_user_events) if min_user_events > 1 and len(items_kept) else items_kept
    drops = (cleaned.global_drops[0] + len(codes) - len(items_kept), cleaned.global_drops[1] + len(items_kept) - len(kept))
    return dataclasses.replace(cleaned, codes=kept, item_counts=_item_counts(kept), global_drops=drops)


@dataclass
class Part:
    """One user partition, indexed: its event table (local user_idx 0..n_users-1, global item_idx; sorted
    by user, then time) and its users (user_idx -> user_id)."""

    table: EventTable
    users: Any
    n_users: int
    steps: list[StepCount] = field(default_factory=list)


def index_partition(cleaned: Cleaned, vocabulary: Any, item_cast: str | None, event_types: tuple[str, ...],
                    known_only: bool, device: str) -> Part:
    """Users numbered within the partition, items by the global vocabulary (a fitted model's, for assign,
    whose unknown items drop: `known_only`), as `Preprocessor._index` numbers them in one process."""
    codes = cleaned.codes
    vocabulary = to_backend_frame(vocabulary, worker_backend(device))
    if item_cast is not None:  # the catalogue's key type
        codes = dataclasses.replace(codes, item_ids=codes.item_ids.astype(item_cast))
    item_idx = _vocabulary_index(codes, vocabulary)
    steps = []
    if known_only:
        known = item_idx >= 0
        kept = codes.take(known)
        users_in = cleaned.users_in if cleaned.users_in is not None else users_of(codes)
        steps += [StepCount("items_unknown_to_model", len(codes), len(kept), UNKNOWN_ITEM_WHY),
                  unplaced_users(users_in, kept)]
        codes, item_idx = kept, item_idx[known]
    weight = event_weights(codes, cleaned.event_weights)
    data = _index(codes, weight, item_idx, None, [], event_types, list(cleaned.event_weights), vocabulary)
    return Part(data.table, data.users, data.n_users, steps)


def part_size(part: Part) -> int:
    return part.n_users


# --- the whole input: what the client decides ---------------------------------------------------

@dataclass
class Globals:
    """What every partition shares: the item table and what preprocessing decided over all partitions."""

    items: Any
    n_items: int
    n_users: int
    n_events: int
    reference_time: Any
    event_types: tuple[str, ...]
    text_columns: tuple[str, ...]
    steps: list[StepCount]

    def prepared(self, part: Part | None = None, backend: Backend | None = None) -> PreparedData:
        """A partition as the featurisers take it, its event table as one process has it (None: the
        catalogue alone, for client-side stages)."""
        items = self.items if backend is None else to_backend_frame(self.items, backend)
        table = None if part is None else part.table
        return PreparedData(
            users=None if part is None else part.users, items=items,
            n_users=self.n_users if part is None else part.n_users, n_items=self.n_items,
            reference_time=self.reference_time, steps=[], text_columns=self.text_columns,
            event_types=self.event_types, table=table, event_names=None if table is None else table.event_names,
            xp=None if table is None else table.xp)


def id_casts(lazy: Any) -> tuple[dict[str, str], list[StepCount]]:
    """The id normalisation of `normalise_ids`, decided over the whole input: a float id column becomes
    int64 if every value is whole, and an object column mixing numbers and text becomes text."""
    casts, notes = {}, []
    for column in (schema.USER, schema.ITEM):
        kind = str(lazy[column].dtype).lower()
        if kind in FLAG_KINDS:  # an object column of them raises in `normalise_ids`, per partition
            raise flag_ids(column)
        if kind.startswith("float"):
            values = lazy[column]
            # Missing ids do not count against it: their rows drop before the cast (`clean_partition`).
            whole = bool((((values == values.round()) & (values.abs() < 2.0**63)) | values.isna()).all().compute())
            if whole:
                casts[column], why = "int64", "integral float ids read as integers"
            else:
                continue
        elif kind == "object":
            mixed = lazy[column].map_partitions(lambda s: normalise_ids(s)[1] is not None, meta=(column, bool))
            if not bool(mixed.any().compute()):
                continue
            casts[column], why = "str", "ids of mixed types or wider than int64 read as text"
        else:
            continue
        notes.append(StepCount(f"{column}_types", 0, 0, f"{column}: {why}"))
    return casts, notes


def with_id_notes(steps: list[StepCount], notes: list[StepCount]) -> list[StepCount]:
    """`id_casts`' notes where one process records them, and with its counts: after the rows without ids
    drop, over the rows left (a note changes how rows read and drops none)."""
    at = next((i + 1 for i, s in enumerate(steps) if s.step == "missing_ids_or_time"), 0)
    rows = steps[at - 1].rows_out if at else 0
    return steps[:at] + [dataclasses.replace(n, rows_in=rows, rows_out=rows) for n in notes] + steps[at:]


def clean_partitions(client: Any, events: Any, config: PreprocessConfig, seed: int, device: str, rows: int,
                     n_parts: int, fixed: bool = False) -> tuple[list[Any], list[Cleaned], list[StepCount]]:
    """The whole input cleaned, a partition of users per task: ids normalised as decided over all of it
    (`id_casts`), shuffled by user, each partition cleaned where it lands (`clean_partition`; `fixed`: the
    event types are a saved model's, as `Preprocessor.run` with a vocabulary has them). Returns the
    cleaned partitions (futures, kept on the workers), their summaries and the summed, checked steps.

    Text casts run before the shuffle (1 and "1" must hash as the one user they become); int64 casts run
    in each partition once its rows without ids are gone (a float column with a gap cannot be int64)."""
    import dask

    from gpuclust.distributed.blocks import pmap

    events = events.map_partitions(blank_ids_as_missing, meta=events._meta)  # before the casts look at the ids
    casts, notes = id_casts(events)
    text = {column: kind for column, kind in casts.items() if kind == "str"}
    if text:
        events = events.map_partitions(apply_casts, text, meta=events._meta.astype(text))
    numbers = {column: kind for column, kind in casts.items() if kind != "str"}
    mixed = [c for c in (schema.TIME, schema.EVENT, schema.VALUE)  # pandas only: a cuDF column has one type
             if c in events.columns and str(events._meta[c].dtype) == "object" and frame_kind(events._meta) == "pandas"]
    if mixed:  # the shuffle writes Arrow, which refuses a column mixing numbers and text
        events = events.map_partitions(mixed_as_text, mixed, meta=events._meta)
    shuffled = events.shuffle(on=schema.USER, npartitions=n_parts)  # rapids-contract: waive dask's collection API (the same for dask_cudf), not cuDF's
    cleaned = client.compute([dask.delayed(clean_partition, pure=False)(part, config, seed, device, numbers, fixed)
                              for part in shuffled.to_delayed()])
    summaries = client.gather(pmap(client, summary_of, cleaned))
    return cleaned, summaries, with_id_notes(check_cleaned(summaries, config, rows, fixed), notes)


def mixed_as_text(df: Any, columns: list[str]) -> Any:
    """Object columns (a JSON file's times mixing epochs and ISO text, event types mixing codes and
    names) with every present value as text, as one process reads them (`astype("str")` before parsing);
    missing values stay missing."""
    out = df.copy(deep=False)
    for column in columns:
        values = out[column]
        out[column] = values.astype("str").astype(object).where(values.notna(), None)
    return out


def apply_casts(df: Any, casts: dict[str, str]) -> Any:
    """`id_casts`' decisions on a frame. A missing id stays missing (pandas 2 wrote "nan" as text), so its
    row drops under missing_ids_or_time as in one process."""
    if not casts:
        return df
    out = df.copy(deep=False)
    for column, kind in casts.items():
        values = out[column]
        out[column] = ids_as_text(values) if kind == "str" else values.astype(kind)
    return out


def summed_steps(summaries: list[Cleaned]) -> list[StepCount]:
    """Per-step counts over all partitions, in pipeline order (notes keep the first partition's words; the
    unknown event types are named with their counts over all partitions, as one process names them)."""
    order: dict[str, StepCount] = {}
    for s in summaries:
        for step in s.steps:
            if step.step in order:
                seen = order[step.step]
                order[step.step] = StepCount(step.step, seen.rows_in + step.rows_in, seen.rows_out + step.rows_out,
                                             seen.why)
            else:
                order[step.step] = step
    if "unknown_event_types" in order:
        step = order["unknown_event_types"]
        order[step.step] = dataclasses.replace(step, why=unknown_types_why(unknown_types(summaries)))
    if EPOCH_UNITS_STEP in order:
        step = order[EPOCH_UNITS_STEP]
        order[step.step] = dataclasses.replace(step, why=epoch_units_why(epoch_units(summaries)))
    return list(order.values())


def unknown_types(summaries: list[Cleaned]) -> dict[str, int]:
    """Dropped rows per unknown event type, summed over partitions."""
    unknown: dict[str, int] = {}
    for s in summaries:
        for name, n in s.unknown_types.items():
            unknown[name] = unknown.get(name, 0) + n
    return unknown


def epoch_units(summaries: list[Cleaned]) -> dict[str, int]:
    """Timestamps read as epochs per unit, summed over partitions, in the units' order."""
    total = {unit: sum(s.epoch_units.get(unit, 0) for s in summaries) for unit, _ in EPOCH_UNITS}
    return {unit: n for unit, n in total.items() if n}


def check_cleaned(summaries: list[Cleaned], config: PreprocessConfig, total_rows: int,
                  fixed: bool = False) -> list[StepCount]:
    """The input-wide checks `Preprocessor.run` makes, over the summed partitions, in its order; the
    warnings it would give, once, with the summed counts. Returns the summed steps."""
    if total_rows == 0:
        raise UsageError("the events input has no rows; check the file or the adapter's filters")
    n_text = sum(s.not_numbers[0] for s in summaries)  # refused before the timestamps, as one process does
    if n_text:
        raise UsageError(not_numeric_message(next(s.not_numbers[1] for s in summaries if s.not_numbers[0]), n_text))
    steps = summed_steps(summaries)
    n_bad = sum(s.bad_timestamps[0] for s in summaries)
    n_time = sum(s.bad_timestamps[1] for s in summaries)
    for step in steps:
        if step.step == "unparseable_timestamps" and n_time and n_bad / n_time > config.max_bad_timestamp_share:
            example = next(s.bad_timestamps[2] for s in summaries if s.bad_timestamps[0])
            raise UsageError(bad_timestamps_message(n_bad, n_time, example))
        if step.rows_out == 0 and step.step not in ("min_user_events", "min_item_events"):
            refusal = next((r for s in summaries for r in s.refusals), None)
            if step.step == "unknown_event_types" and refusal:
                raise UsageError(refusal)
            raise UsageError(f"no events left after step '{step.step}' ({step.why}); "
                             "check the input columns, event types and the minimum-count filters")
    if steps and steps[-1].rows_out == 0:
        raise UsageError("no events left after the minimum-count filters; lower --min-user-events / --min-item-events")
    for step in steps:
        if step.step == EPOCH_UNITS_STEP:
            warn_epoch_units(epoch_units(summaries))
        if not step.dropped or not any(step.step in s.examples for s in summaries):
            continue  # a step the user asked for (minimum counts, sampling): in the manifest only
        example = next((s.examples[step.step] for s in summaries
                        if s.examples.get(step.step, NO_EXAMPLE) is not NO_EXAMPLE), NO_EXAMPLE)
        fix = next(s.fixes[step.step] for s in summaries if step.step in s.fixes)
        why = step.why
        if step.step == "unknown_event_types":
            unknown = unknown_types(summaries)
            why, fix = unknown_types_why(unknown), unknown_types_fix(unknown, config.event_weights, fixed)
        warn_dropped(step.dropped, step.rows_in, why, example, fix)
    shown = set()
    for message in (m for s in summaries for m in s.warnings):
        key = re.sub(r"[\d,.]+", "#", message)
        if key not in shown:  # one line per kind of warning, not one per partition
            shown.add(key)
            warnings.warn(message, InputWarning, stacklevel=2)
    return steps


def item_counts(summaries: list[Cleaned]):
    """Events per item over all partitions (host pandas Series)."""
    import pandas as pd

    parts = [s.item_counts for s in summaries if len(s.item_counts)]
    return pd.concat(parts).groupby(level=0).sum() if parts else pd.Series(dtype="int64")


def vocabulary(counts: Any, items: Any) -> tuple[Any, str | None, tuple[str, ...], StepCount | None]:
    """(item table, the cast the events' item ids need, text columns, the catalogue step): as
    `Preprocessor._catalogue` and `_index` build them, from the events per item of all partitions and the
    cleaned catalogue (host pandas). A low share of events found in the catalogue is a warning."""
    import pandas as pd

    ids = pd.Series(counts.index, name=schema.ITEM)
    cast, step, text_columns = None, None, ()
    if items is not None:
        cast_ids, items = common_key(ids.to_frame(), items, schema.ITEM)
        if str(cast_ids[schema.ITEM].dtype) != str(ids.dtype):
            cast = "int64" if str(cast_ids[schema.ITEM].dtype) == "int64" else "str"
        ids = cast_ids[schema.ITEM]
        n = int(counts.sum())
        found = int(np.asarray(counts)[np.asarray(ids.isin(items[schema.ITEM]))].sum())
        share = found / n if n else 0.0
        step = StepCount("items_in_catalogue", n, n, f"{found:,} of {n:,} events ({share:.1%}) have their item "
                                                     "in the items table")
        if share < LOW_CATALOGUE_SHARE:
            warnings.warn(f"only {share:.1%} of events have their item in the items table; check that both files "
                          "use the same item ids (--item-col, --item-key-col)", CatalogueWarning, stacklevel=2)
    table = _ordinal(ids, schema.ITEM_IDX)
    if items is not None:
        extra = [c for c in items.columns if c != schema.ITEM]
        text_columns = tuple(c for c in extra if c not in (schema.CATEGORY, schema.PRICE))
        table = table.merge(items, on=schema.ITEM, how="left")
    return table.sort_values(schema.ITEM_IDX).reset_index(drop=True), cast, text_columns, step


