"""Cleaning and indexing of an event log; one code path for cuDF and pandas.

Every step records rows in, rows out and why, so the manifest can account for each dropped row.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from gpuclust import schema
from gpuclust.backend import Backend
from gpuclust.config import PreprocessConfig
from gpuclust.errors import UsageError
from gpuclust.frames import host_frame, local_values, local_xp
from gpuclust.preprocess.prepared import PreparedData, StepCount

MAX_FILTER_PASSES = 10


class Preprocessor:
    """Clean, weight, sample and index events; `run` returns PreparedData."""

    def __init__(self, config: PreprocessConfig | None = None, seed: int = 0) -> None:
        self.config = config or PreprocessConfig()
        self.seed = seed

    def run(self, events, backend: Backend, items=None, steps: list[StepCount] | None = None,
            vocabulary=None) -> PreparedData:
        """Clean and index `events`. With `vocabulary` (a fitted model's item table) item indices are the
        model's and events on items it does not know are dropped and counted."""
        cfg = self.config
        self.steps_: list[StepCount] = list(steps or [])
        if len(events) == 0:
            raise UsageError("the events input has no rows; check the file or the adapter's filters")

        ev = self._count("missing_ids_or_time", events, events.dropna(subset=[schema.USER, schema.ITEM, schema.TIME]),
                         "user_id, item_id or timestamp is missing")
        ev = self._parse_time(ev, backend)
        ev = self._known_events(ev)
        ev[schema.VALUE] = ev[schema.VALUE].fillna(0).astype("float32") if schema.VALUE in ev.columns else 0.0
        ev[schema.VALUE] = ev[schema.VALUE].astype("float32")
        if cfg.drop_duplicates:
            ev = self._count("exact_duplicates", ev, ev.drop_duplicates(), "identical to an earlier row")
        ev = self._min_counts(ev)
        if cfg.sample_users is not None:
            ev = self._sample_users(ev, backend)
        ev = _attach_weights(ev, cfg.event_weights)
        present = set(host_frame(ev[schema.EVENT].drop_duplicates().to_frame())[schema.EVENT])
        event_types = tuple(t for t in cfg.event_weights if t in present)
        if vocabulary is not None:
            ev, vocabulary = _align_ids(ev, vocabulary, schema.ITEM)
            known = ev[schema.ITEM].isin(vocabulary[schema.ITEM])
            ev = self._count("items_unknown_to_model", ev, ev[known], "item not in the model's vocabulary")
        return _index(ev, items, self.steps_, event_types, vocabulary)

    # --- steps ------------------------------------------------------------------------------

    def _count(self, step: str, before, after, why: str):
        self.steps_.append(StepCount(step, len(before), len(after), why))
        if len(after) == 0:
            raise UsageError(
                f"no events left after step '{step}' ({why}); "
                "check the input columns, event types and the minimum-count filters"
            )
        return after

    def _parse_time(self, ev, backend: Backend):
        ts = ev[schema.TIME]
        kind = str(ts.dtype)
        if kind.startswith("datetime64"):
            parsed = ts
        elif kind.startswith(("int", "uint", "float")):
            # Unix epochs: seconds, or milliseconds when the values are too large to be seconds.
            unit = "ms" if float(ts.max()) > 1e11 else "s"
            parsed = backend.frame.to_datetime(ts, unit=unit)
        else:
            parsed = _parse_strings(ts, backend)
        if getattr(parsed.dtype, "tz", None) is not None:
            parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
        parsed = parsed.astype("datetime64[ns]")
        bad = parsed.isna()
        n_bad = int(bad.sum())
        if n_bad:
            share = n_bad / len(ev)
            example = host_frame(ev[schema.TIME][bad].head(1).to_frame()).iloc[0, 0]
            if share > self.config.max_bad_timestamp_share:
                raise UsageError(
                    f"{n_bad} of {len(ev)} timestamps ({share:.1%}) could not be parsed, e.g. {example!r}; "
                    "give ISO-8601 strings or Unix epochs, or map the right column with --time-col"
                )
        out = ev.copy()
        out[schema.TIME] = parsed
        return self._count("unparseable_timestamps", ev, out[~bad], "timestamp could not be parsed")

    def _known_events(self, ev):
        """Event types become a categorical over the configured types, so later steps hash codes."""
        known = list(self.config.event_weights)
        types = ev[schema.EVENT].astype("category")
        names = [str(n) for n in host_frame(types.cat.categories.to_frame()).iloc[:, 0]]
        if any(n != n.strip().lower() for n in names):
            types = types.astype("str").str.strip().str.lower().astype("category")
            names = sorted({n.strip().lower() for n in names})
        keep = types.isin(known)
        if not bool(keep.any()):
            raise UsageError(
                f"none of the event types {names[:20]} is known; known: {known}; "
                "give weights for yours with --event-weights TYPE=W,..."
            )
        out = ev.copy()
        out[schema.EVENT] = types.cat.set_categories(known)
        return self._count("unknown_event_types", ev, out[keep], f"event_type not one of {known}")

    def _min_counts(self, ev):
        cfg = self.config
        rows_in = len(ev)
        dropped_users = dropped_items = 0
        for _ in range(MAX_FILTER_PASSES):
            before = len(ev)
            if cfg.min_user_events > 1:
                n = len(ev)
                ev = ev[_count_at_least(ev[schema.USER], cfg.min_user_events)]
                dropped_users += n - len(ev)
            if cfg.min_item_events > 1:
                n = len(ev)
                ev = ev[_count_at_least(ev[schema.ITEM], cfg.min_item_events)]
                dropped_items += n - len(ev)
            if len(ev) == before:
                break
        self.steps_.append(StepCount("min_user_events", rows_in, rows_in - dropped_users,
                                     f"user has fewer than {cfg.min_user_events} events"))
        self.steps_.append(StepCount("min_item_events", rows_in - dropped_users, len(ev),
                                     f"item has fewer than {cfg.min_item_events} events"))
        if len(ev) == 0:
            raise UsageError(
                "no events left after the minimum-count filters; lower --min-user-events / --min-item-events"
            )
        return ev

    def _sample_users(self, ev, backend: Backend):
        """Draw users (not events) so each sampled user keeps a whole history."""
        cfg = self.config
        users = ev[schema.USER].drop_duplicates().sort_values().reset_index(drop=True)
        n = len(users)
        if not cfg.sample_replace and cfg.sample_users >= n:
            self.steps_.append(StepCount("sample_users", len(ev), len(ev), f"all {n} users kept"))
            return ev
        rng = np.random.default_rng(self.seed)
        draws = rng.choice(n, size=cfg.sample_users, replace=cfg.sample_replace)
        if not cfg.sample_replace:
            chosen = users.take(np.sort(draws))
            return self._count("sample_users", ev, ev[ev[schema.USER].isin(chosen)],
                               f"user not among the {cfg.sample_users} sampled")
        # With replacement a user drawn c times becomes c users: id, id#1, id#2, ...
        draws = np.sort(draws)
        same = np.r_[False, draws[1:] == draws[:-1]]
        run_start = np.maximum.accumulate(np.where(~same, np.arange(len(draws)), 0))
        copy = (np.arange(len(draws)) - run_start).astype(np.int32)
        picks = backend.frame.DataFrame({schema.USER: users.take(draws).reset_index(drop=True),
                                         "_copy": copy})
        out = ev.merge(picks, on=schema.USER, how="inner")
        suffix = ("#" + out["_copy"].astype("str")).where(out["_copy"] > 0, "")
        out[schema.USER] = out[schema.USER].astype("str") + suffix
        out = out.drop(columns=["_copy"])
        return self._count("sample_users", ev, out, f"{cfg.sample_users} users drawn with replacement")


def _parse_strings(ts, backend: Backend):
    """Fast inferred-format parsing; on pandas, values the inferred format misses get a per-value retry."""
    try:
        with warnings.catch_warnings():
            # pandas warns when it cannot infer one format; the per-value retry below covers that case.
            warnings.simplefilter("ignore", UserWarning)
            parsed = backend.frame.to_datetime(ts, errors="coerce")
    except (ValueError, TypeError) as exc:
        raise UsageError(f"timestamps could not be parsed ({exc}); give ISO-8601 strings or Unix epochs") from None
    missed = parsed.isna() & ts.notna()
    if backend.frame_library == "pandas" and bool(missed.any()):
        parsed = parsed.copy()
        parsed[missed] = backend.frame.to_datetime(ts[missed], errors="coerce", format="mixed")
    return parsed


def _count_at_least(column, minimum: int):
    counts = column.value_counts()
    return column.isin(counts[counts >= minimum].index)


def _attach_weights(ev, weights: dict[str, float]):
    """Look the weight up by category code: no join over millions of rows."""
    xp = local_xp(ev[schema.EVENT])
    table = xp.asarray(np.asarray(list(weights.values()), dtype=np.float32))
    ev[schema.WEIGHT] = table[local_values(ev[schema.EVENT].cat.codes)]
    return ev


def _ordinal(column, name: str):
    """Sorted distinct values and their contiguous int32 index."""
    table = column.drop_duplicates().sort_values().reset_index(drop=True).to_frame()
    table[name] = np.arange(len(table), dtype=np.int32)
    return table


def _align_ids(ev, items, key: str):
    """Join keys of different types (int in one file, text in another) are compared as text."""
    if items is not None and str(ev[key].dtype) != str(items[key].dtype):
        ev = ev.copy()
        items = items.copy()
        ev[key] = ev[key].astype("str")
        items[key] = items[key].astype("str")
    return ev, items


def _index(ev, items: Any, steps: list[StepCount], event_types: tuple[str, ...], vocabulary=None) -> PreparedData:
    ev, items = _align_ids(ev, items, schema.ITEM)
    users = _ordinal(ev[schema.USER], schema.USER_IDX)
    item_table = _ordinal(ev[schema.ITEM], schema.ITEM_IDX) if vocabulary is None else vocabulary
    ev = ev.merge(users, on=schema.USER, how="left").merge(item_table[[schema.ITEM, schema.ITEM_IDX]],
                                                            on=schema.ITEM, how="left")
    ev = ev.sort_values([schema.USER_IDX, schema.TIME]).reset_index(drop=True)
    text_columns: tuple[str, ...] = ()
    if vocabulary is not None:
        text_columns = tuple(c for c in vocabulary.columns
                             if c not in (schema.ITEM, schema.ITEM_IDX, schema.CATEGORY, schema.PRICE))
    elif items is not None:
        extra = [c for c in items.columns if c != schema.ITEM]
        text_columns = tuple(c for c in extra if c not in (schema.CATEGORY, schema.PRICE))
        item_table = item_table.merge(items, on=schema.ITEM, how="left")
    item_table = item_table.sort_values(schema.ITEM_IDX).reset_index(drop=True)
    users = users[[schema.USER_IDX, schema.USER]]
    return PreparedData(
        events=ev,
        users=users,
        items=item_table,
        n_users=len(users),
        n_items=len(item_table),
        reference_time=ev[schema.TIME].max(),
        steps=steps,
        text_columns=text_columns,
        event_types=event_types,
    )
