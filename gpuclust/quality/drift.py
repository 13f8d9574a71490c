"""Drift: how the users a model now sees differ from the users it was fitted on.

The fit keeps a yardstick (`baseline`): each cluster's share of users, the mean distance to the own
centre, the share of users scoring as anomalies, and the mix of event types. New users placed by the
model are counted the same way (`DriftCounts`, which also counts events on items the model does not
know and of event types it does not know), and `compare` gives one row per measure:

    cluster_share_psi          population stability index of the cluster shares (0: same mix)
    event_type_psi             the same for the mix of known event types
    mean_distance_change       mean distance to the own centre, relative to the fit's (+0.3: 30% further)
    anomaly_share_increase     share of users with an anomaly score above 3.5, minus the fit's share
    unknown_item_share         share of the events read that are on items outside the model's vocabulary
    unknown_event_type_share   share of the events read whose type the model does not know

PSI = sum((p_new - p_fit) * ln(p_new / p_fit)) over the bins, each share floored at 1e-4; the usual
reading is < 0.1 stable, 0.1-0.2 moving, > 0.2 shifted. `gpuclust drift` prints these rows and exits 1
when one crosses its threshold; the service exports them on /metrics from what it assigned since start.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from gpuclust import schema
from gpuclust.backend import array_module, to_host
from gpuclust.errors import UsageError
from gpuclust.frames import host_frame

if TYPE_CHECKING:
    from gpuclust.preprocess.table import EventTable

ANOMALY_Z = 3.5  # the usual cut-off of a modified z-score (Iglewicz and Hoaglin)
PSI_FLOOR = 1e-4


# The flag of `gpuclust drift` that sets each threshold, for messages.
THRESHOLD_FLAGS = {"psi": "--fail-above", "distance_change": "--max-distance-change",
                   "anomaly_increase": "--max-anomaly-increase", "unknown_items": "--max-unknown-items",
                   "unknown_event_types": "--max-unknown-event-types"}


@dataclass
class Thresholds:
    """A threshold is a number >= 0; inf switches its alert off. NaN is refused: every comparison with it
    is false, so it would switch the alert off without saying so."""

    psi: float = 0.2
    distance_change: float = 0.25
    anomaly_increase: float = 0.05
    unknown_items: float = 0.2
    unknown_event_types: float = 0.1

    def __post_init__(self) -> None:
        for name, flag in THRESHOLD_FLAGS.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating) \
                    or not value >= 0:
                raise UsageError(f"{flag} (drift threshold {name}) must be a number >= 0 (inf: never alert), "
                                 f"got {value!r}")


@dataclass
class DriftCounts:
    """What placing some users found; counts add up, so a service can keep a running total."""

    users: int = 0
    cluster_users: list[int] = field(default_factory=list)
    distance_sum: float = 0.0
    anomalous: int = 0
    events: int = 0
    unknown_items: int = 0
    unknown_event_types: int = 0
    event_types: dict[str, int] = field(default_factory=dict)

    def add(self, other: DriftCounts) -> DriftCounts:
        size = max(len(self.cluster_users), len(other.cluster_users))
        clusters = np.zeros(size, dtype=np.int64)
        clusters[: len(self.cluster_users)] += np.asarray(self.cluster_users, dtype=np.int64)
        clusters[: len(other.cluster_users)] += np.asarray(other.cluster_users, dtype=np.int64)
        types = dict(self.event_types)
        for name, n in other.event_types.items():
            types[name] = types.get(name, 0) + n
        return DriftCounts(self.users + other.users, clusters.tolist(), self.distance_sum + other.distance_sum,
                           self.anomalous + other.anomalous, self.events + other.events,
                           self.unknown_items + other.unknown_items,
                           self.unknown_event_types + other.unknown_event_types, types)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def placed_counts(labels: Any, distances: Any, scores: Any, k: int) -> DriftCounts:
    """The user-level part of DriftCounts from placed users: counted where the arrays are (NumPy or
    CuPy), so only k + 2 numbers cross to the host."""
    xp = array_module(labels)
    clusters = xp.bincount(labels[labels >= 0].astype(xp.int64), minlength=k)[:k]
    return DriftCounts(users=int(labels.shape[0]), cluster_users=[int(n) for n in to_host(clusters)],
                       distance_sum=float(distances.astype(xp.float64).sum()),
                       anomalous=int((scores > ANOMALY_Z).sum()))


def event_counts(data: Any) -> DriftCounts:
    """The event-level part of DriftCounts from prepared data and its cleaning steps."""
    steps = {s.step: s for s in data.steps}
    table: EventTable = data.table
    first = data.steps[0].rows_in if data.steps else len(table)
    counts = to_host(table.xp.bincount(table.event.astype(table.xp.int64), minlength=len(table.event_names)))
    present = sorted(((n, name) for name, n in zip(table.event_names, counts, strict=True) if n > 0),
                     key=lambda pair: -pair[0])  # most frequent first, as value_counts gave them
    types = {name: n for n, name in present}
    return DriftCounts(events=int(first),
                       unknown_items=int(steps["items_unknown_to_model"].dropped) if "items_unknown_to_model" in steps
                       else 0,
                       unknown_event_types=int(steps["unknown_event_types"].dropped) if "unknown_event_types" in steps
                       else 0,
                       event_types={str(name): int(n) for name, n in types.items()})


def unplaceable_counts(events: Any, known_types: list[str], vocabulary: Any) -> DriftCounts | None:
    """Counts for a log the model cannot place at all (every event of an unknown type, or on an unknown
    item): that is total drift, which a cron job must see as an alert, not as a broken file. None when
    some event is readable (the failure to place was something else). Types are compared as
    preprocessing reads them (text, trimmed, lower case); unknown items are counted among the events of
    known types, as preprocessing counts them."""
    from gpuclust.preprocess.parse import common_key, normalise_ids

    events = host_frame(events)
    if schema.EVENT not in events.columns or schema.ITEM not in events.columns or not len(events):
        return None
    types = events[schema.EVENT].astype("str").str.strip().str.lower()
    known_type = types.isin(list(known_types)) & events[schema.EVENT].notna()
    items = events[[schema.ITEM]].dropna()
    items[schema.ITEM], _ = normalise_ids(items[schema.ITEM])
    items, vocab = common_key(items, host_frame(vocabulary[[schema.ITEM]]), schema.ITEM)
    known_item = items[schema.ITEM].isin(vocab[schema.ITEM]).reindex(events.index, fill_value=False)
    if bool((known_type & known_item).any()):
        return None
    n = len(events)
    return DriftCounts(events=n, unknown_event_types=int((~known_type).sum()),
                       unknown_items=int((known_type & ~known_item).sum()))


def baseline(labels: Any, distances: Any, scores: Any, k: int, data: Any, event_types: list[str]) -> dict[str, Any]:
    """The fit's yardstick, saved with the model."""
    return baseline_of(placed_counts(labels, distances, scores, k).add(event_counts(data)), event_types)


def baseline_of(counts: DriftCounts, event_types: list[str]) -> dict[str, Any]:
    """The yardstick from counts however they were gathered (in one process, or summed over partitions)."""
    users = max(counts.users, 1)
    return {"users": counts.users, "cluster_shares": [n / users for n in counts.cluster_users],
            "mean_distance": counts.distance_sum / users, "anomaly_share": counts.anomalous / users,
            "anomaly_z": ANOMALY_Z, "event_type_shares": _shares(counts.event_types, event_types),
            "event_types": list(event_types)}


def compare(base: dict[str, Any], now: DriftCounts, thresholds: Thresholds | None = None) -> list[dict[str, Any]]:
    """One row per measure: value, threshold, whether it alerts, and the fit's and the new figure."""
    t = thresholds or Thresholds()
    users = max(now.users, 1)
    k = len(base["cluster_shares"])
    clusters = np.zeros(k)
    clusters[: min(k, len(now.cluster_users))] = now.cluster_users[:k]
    new_shares = (clusters / users).tolist()
    fit_types = base["event_type_shares"]
    new_types = _shares(now.event_types, base["event_types"])
    mean_now = now.distance_sum / users
    mean_fit = base["mean_distance"]
    events = max(now.events, 1)
    rows = [
        ("cluster_share_psi", psi(base["cluster_shares"], new_shares), t.psi, base["cluster_shares"], new_shares),
        ("event_type_psi", psi(list(fit_types.values()), list(new_types.values())), t.psi, fit_types, new_types),
        ("mean_distance_change", mean_now / mean_fit - 1.0 if mean_fit > 0 else 0.0, t.distance_change, mean_fit,
         mean_now),
        ("anomaly_share_increase", now.anomalous / users - base["anomaly_share"], t.anomaly_increase,
         base["anomaly_share"], now.anomalous / users),
        ("unknown_item_share", now.unknown_items / events, t.unknown_items, 0.0, now.unknown_items / events),
        ("unknown_event_type_share", now.unknown_event_types / events, t.unknown_event_types, 0.0,
         now.unknown_event_types / events),
    ]
    if now.users == 0:  # nobody placed (total drift): the per-user measures have nothing to measure
        unmeasured = {"cluster_share_psi", "mean_distance_change", "anomaly_share_increase"}
        if not now.event_types:
            unmeasured.add("event_type_psi")
        rows = [(name, float("nan"), threshold, fit, None) if name in unmeasured else (name, value, threshold, fit, new)
                for name, value, threshold, fit, new in rows]
    out = []
    for name, value, threshold, fit, new in rows:
        alert = abs(value) > threshold if name == "mean_distance_change" else value > threshold
        out.append({"metric": name, "value": round(float(value), 6), "threshold": threshold, "alert": bool(alert),
                    "fit": _round(fit), "now": _round(new)})
    return out


def psi(expected: list[float], actual: list[float]) -> float:
    """Population stability index of two share vectors over the same bins."""
    if not expected:
        return 0.0
    p = np.maximum(np.asarray(expected, dtype=np.float64), PSI_FLOOR)
    q = np.maximum(np.asarray(actual, dtype=np.float64), PSI_FLOOR)
    return float(((q - p) * np.log(q / p)).sum())


def _shares(counts: dict[str, int], names: list[str]) -> dict[str, float]:
    total = sum(counts.get(n, 0) for n in names)
    return {n: (counts.get(n, 0) / total if total else 0.0) for n in names}


def _round(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, list):
        return [_round(v) for v in value]
    if isinstance(value, dict):
        return {k: _round(v) for k, v in value.items()}
    return value
