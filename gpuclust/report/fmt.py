"""Formatting of figures for the report: escaped, thousands-separated, missing shown as an en dash."""

from __future__ import annotations

import html
import math
from typing import Any

from gpuclust.explain.behaviour_words import statistic

MISSING = "–"


def e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def num(value: Any) -> float:
    """A float, NaN where the value is missing or not a number."""
    if isinstance(value, bool):
        return float("nan")
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return MISSING if value is None else str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return MISSING
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:,.0f}" if abs(value) >= 1e5 and abs(value) < 1e12 else f"{value:.3g}"
        return f"{value:,.3f}".rstrip("0").rstrip(".") if abs(value) < 1000 else f"{value:,.1f}"
    return str(value)


def count(value: Any) -> str:
    return f"{int(value):,}" if isinstance(value, int | float) and not isinstance(value, bool) else MISSING


def pct(value: Any) -> str:
    v = num(value)
    return f"{v:.1%}" if math.isfinite(v) else MISSING


def amount(name: str, value: Any) -> str:
    """A behaviour figure in its unit: shares as percentages, amounts with two decimals, counts plain."""
    v = num(value)
    if not math.isfinite(v):
        return MISSING
    unit = statistic(name).unit
    if unit == "share":
        return f"{v:.1%}"
    if unit == "value":
        return f"{v:,.2f}"
    return f"{v:,.1f}" if abs(v) < 1e5 else f"{v:,.0f}"


def lift(value: Any) -> str:
    v = num(value)
    return f"×{v:.2f}" if math.isfinite(v) else MISSING


def log_lift(value: Any) -> float:
    v = num(value)
    return abs(math.log(v)) if v > 0 and math.isfinite(v) else 0.0


def direction(value: Any) -> str:
    """The CSS class of a ratio: 'up', 'down', or '' where it is within 5% of 1 (like everyone)."""
    v = num(value)
    return "up" if v > 1.05 else "down" if 0 < v < 1 / 1.05 else ""
