"""Per-cluster profiles: size, behaviour means against the population, top categories and items.

Aggregation runs where the event table and the statistics are (group sums and bincounts on the device);
only the k-row summaries move to the host.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from gpuclust import schema
from gpuclust.backend import Backend, array_module, to_host
from gpuclust.frames import host_frame
from gpuclust.preprocess.prepared import PreparedData
from gpuclust.segments import group_moments

if TYPE_CHECKING:
    from gpuclust.features.behaviour import UserStatistics
    from gpuclust.preprocess.table import EventTable

CLUSTER = "cluster"
VALUE = "monetary"  # the behaviour statistic that sums a user's event values


class ClusterProfiler:
    """Explains each cluster in terms a marketing or recommendation team can act on."""

    def __init__(self, top_n: int = 5) -> None:
        self.top_n = top_n

    def fit(self, data: PreparedData, labels: Any, behaviour: UserStatistics, backend: Backend) -> ClusterProfiler:
        """`labels`: int per user_idx (-1 = noise), on the device or the host; `behaviour`: the raw statistics.
        Means are group sums on the statistics' device; only the k-row summaries come to the host."""
        xp = array_module(behaviour.values)
        labels = xp.asarray(labels).astype(xp.int64)
        rows = int(labels.max()) + 2 if len(labels) else 1  # row 0 is noise (-1)
        sums, _, counts = group_moments(behaviour.values, labels + 1, rows, xp)
        sums, counts = to_host(sums), to_host(counts)
        sizes = {c - 1: int(counts[c]) for c in range(rows) if counts[c] > 0}
        means = pd.DataFrame(sums / np.maximum(counts, 1)[:, None], columns=behaviour.names,
                             index=pd.Index(np.arange(rows) - 1, name=CLUSTER)).loc[sorted(sizes)]
        population = pd.Series(sums.sum(axis=0) / max(data.n_users, 1), index=behaviour.names)
        return self.fit_summaries(sizes, means, population, cluster_item_weights(data, labels), data)

    def fit_summaries(self, sizes: dict[int, int], means: Any, population: Any, events: Any,
                      data: PreparedData) -> ClusterProfiler:
        """Profiles from what `fit` aggregates: cluster sizes, per-cluster and population behaviour means
        (host pandas), and `events` with cluster, item_idx and weight columns: one row per event, or
        already summed per (cluster, item_idx), which gives the same tops (sums of sums). `data` supplies
        the catalogue (items, text columns) and the user count; its events are not read here."""
        described = [schema.ITEM_IDX, schema.ITEM, *data.text_columns[:1]]
        if data.has_categories:
            described.append(schema.CATEGORY)
        self.item_columns_ = described[1:]
        top_items = self._top(events, schema.ITEM_IDX, data.items[described])
        top_categories = {}
        if data.has_categories:
            with_cat = events.merge(data.items[[schema.ITEM_IDX, schema.CATEGORY]], on=schema.ITEM_IDX)
            top_categories = self._top(with_cat.dropna(subset=[schema.CATEGORY]), schema.CATEGORY, None)

        self.profiles_ = []
        for c in sorted(sizes, key=lambda c: (c < 0, c)):  # noise, if any, comes last
            row = means.loc[c] if c in means.index else population * np.nan
            self.profiles_.append({
                "cluster": c,
                **({"noise": True} if c < 0 else {}),
                "size": int(sizes[c]),
                "share": round(float(sizes[c]) / data.n_users, 4),
                **_value_share(row, sizes[c], population, data.n_users),
                "behaviour_mean": {name: _num(row[name]) for name in means.columns},
                "behaviour_lift": {name: _num(row[name] / population[name]) if population[name] else None
                                   for name in means.columns},
                "top_categories": top_categories.get(c, []),
                "top_items": top_items.get(c, []),
            })
        self.population_ = {name: _num(v) for name, v in population.items()}
        return self

    def _top(self, events, key: str, items: Any) -> dict[int, list[dict]]:
        """Top `key`s per cluster by event weight, with their lift over the whole population."""
        totals = events.groupby(key)[schema.WEIGHT].sum().rename("overall").reset_index()
        grand = float(events[schema.WEIGHT].sum())
        per = events.groupby([CLUSTER, key])[schema.WEIGHT].sum().reset_index()
        per["cluster_total"] = per.groupby(CLUSTER)[schema.WEIGHT].transform("sum")
        per = per.sort_values([CLUSTER, schema.WEIGHT, key], ascending=[True, False, True])
        top = per.groupby(CLUSTER).head(self.top_n).merge(totals, on=key, how="left")
        if items is not None:
            top = top.merge(items, on=schema.ITEM_IDX, how="left")
        top = host_frame(top).sort_values([CLUSTER, schema.WEIGHT], ascending=[True, False])
        out: dict[int, list[dict]] = {}
        for row in top.to_dict("records"):
            # A cluster (or item) whose events all weigh 0 has no share to speak of, and no lift.
            share = row[schema.WEIGHT] / row["cluster_total"] if row["cluster_total"] > 0 else 0.0
            base = row["overall"] / grand if grand > 0 else 0.0
            entry = {
                "share": round(float(share), 4),
                "lift": round(float(share / base), 3) if base > 0 else None,
            }
            if key == schema.ITEM_IDX:
                entry = {**{c: _plain(row[c]) for c in self.item_columns_}, **entry}
            else:
                entry = {key: _plain(row[key]), **entry}
            out.setdefault(int(row[CLUSTER]), []).append(entry)
        return out


def cluster_item_weights(data: PreparedData, labels: Any) -> Any:
    """Summed event weights per (cluster, item_idx) that has events (cluster -1: noise), as a small host
    frame: one bincount over the event table where it lives; only the summary crosses to the host."""
    t: EventTable = data.table
    xp = t.xp
    clusters = xp.asarray(labels).astype(xp.int64)
    rows = int(clusters.max()) + 2 if len(clusters) else 1  # row 0 is noise
    key = (clusters[t.user] + 1) * data.n_items + t.item
    weight = xp.bincount(key, weights=t.weight.astype(xp.float64), minlength=rows * data.n_items)
    present = xp.nonzero(xp.bincount(key, minlength=rows * data.n_items))[0]  # zero-weight events count too
    present_host = to_host(present)
    return pd.DataFrame({CLUSTER: present_host // data.n_items - 1, schema.ITEM_IDX: present_host % data.n_items,
                         schema.WEIGHT: to_host(weight[present])})


def _value_share(means: Any, size: int, population: Any, n_users: int) -> dict[str, float]:
    """{'value_share': the cluster's part of all users' summed event value (revenue, for purchases)}, or {}
    where the events carry no value: mean spend x size over the population's mean x all users."""
    total = float(population.get(VALUE, 0.0) or 0.0) * n_users
    mean = float(means.get(VALUE, np.nan)) if VALUE in means.index else np.nan
    if not (total > 0 and np.isfinite(mean)):
        return {}
    return {"value_share": round(mean * size / total, 4)}


def _num(value: Any) -> float | None:
    value = float(value)
    return None if not np.isfinite(value) else round(value, 4)


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return None
    return value
