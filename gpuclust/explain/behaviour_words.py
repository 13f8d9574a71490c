"""Words for the behaviour statistics: what each one measures, in which unit, and how to say high or low.

One place for them, so a cluster's label ("high spend, frequent"), the report's figures ("spend per
user: 412.30 (all users: 104.10), x3.95") and anything else that names a statistic say the same thing.
The statistics themselves are computed in `features.behaviour.behaviour_statistics`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

# A behaviour must be at least twice (or at most half) the population's to be called out.
CALL_OUT_LOG2 = 1.0
MAX_BEHAVIOUR_WORDS = 2
LABEL_ITEM_TERMS = 2
LEADING = ("monetary",)  # called out before any other statistic


@dataclass(frozen=True)
class Statistic:
    what: str  # "spend per user": the figure is a mean over a cluster's users
    unit: str  # "" where the figure is a plain count or amount
    high: str  # words for a cluster well above the population
    low: str  # ... and well below it


STATISTICS = {
    "monetary": Statistic("spend per user", "value", "high spend", "low spend"),
    "events": Statistic("events per user", "events", "many events", "few events"),
    "sessions": Statistic("sessions per user", "sessions", "frequent", "infrequent"),
    "active_days": Statistic("active days per user", "days", "frequent", "infrequent"),
    "recency_days": Statistic("days since the user's last event", "days", "lapsed", "recently active"),
    "span_days": Statistic("days from first to last event", "days", "long-standing", "short-lived"),
    "events_per_session": Statistic("events per session", "events", "long sessions", "short sessions"),
    "distinct_items": Statistic("distinct items per user", "items", "broad range", "narrow range"),
    "purchases_per_session": Statistic("purchases per session", "purchases", "big baskets", "small baskets"),
}


def statistic(name: str) -> Statistic:
    """The words for a statistic; `share_<type>` is the share of a user's events of that type."""
    if name in STATISTICS:
        return STATISTICS[name]
    if name.startswith("share_"):
        kind = name[len("share_"):]
        return Statistic(f"share of events that are {kind}", "share", f"mostly {kind}", f"little {kind}")
    plain = name.replace("_", " ")
    return Statistic(f"{plain} per user", "", f"high {plain}", f"low {plain}")


def _log2(value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return 0.0
    return math.log2(v) if v > 0 and math.isfinite(v) else 0.0


def behaviour_words(lifts: dict[str, Any], n: int = MAX_BEHAVIOUR_WORDS) -> list[str]:
    """Up to `n` distinct phrases for the statistics at least 2x (or 1/2) the population's: spend first
    where it is one of them (what a business reads first), then the furthest from the population."""
    called = [(name, _log2(v)) for name, v in (lifts or {}).items() if abs(_log2(v)) >= CALL_OUT_LOG2]
    called.sort(key=lambda kv: (kv[0] not in LEADING, -abs(kv[1]), kv[0]))
    out: list[str] = []
    for name, signed in called:
        if len(out) == n:
            break
        words = statistic(name).high if signed > 0 else statistic(name).low
        if words not in out:
            out.append(words)
    return out


def behaviour_strength(lifts: dict[str, Any]) -> float:
    """How far the cluster's behaviour is from the population: the largest |log2 lift|."""
    return max((abs(_log2(v)) for v in (lifts or {}).values()), default=0.0)


def item_strength(top_items: list[dict]) -> float:
    """How distinctive the cluster's items are: log2 of the median lift of its top items (0: like everyone)."""
    logs = sorted(_log2(i.get("lift")) for i in top_items or [] if isinstance(i, dict) and i.get("lift"))
    return logs[len(logs) // 2] if logs else 0.0


def lead_label(profile: dict, item_terms: list[str], separator: str) -> tuple[str, str]:
    """(label, driver): a cluster whose behaviour sets it apart more than its items do is named by the
    behaviour first ("high spend, frequent (metal sign · red)"); otherwise by its item terms alone."""
    lifts = profile.get("behaviour_lift") or {}
    words = behaviour_words(lifts)
    if words and behaviour_strength(lifts) > item_strength(profile.get("top_items") or []):
        items = separator.join(item_terms[:LABEL_ITEM_TERMS])
        return ", ".join(words) + (f" ({items})" if items else ""), "behaviour"
    return separator.join(item_terms), "items"
