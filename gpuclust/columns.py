"""The column mapping (`config.ColumnMap`): the user's column names to the canonical schema, applied the
same way to files (`io.readers`, the CLI) and to frames handed to the estimator (Python), so a TOML's
`[columns]` means the same thing everywhere."""

from __future__ import annotations

from typing import Any

from gpuclust import schema
from gpuclust.config import ColumnMap, flag
from gpuclust.errors import UsageError, listed

REQUIRED_EVENTS = (schema.USER, schema.ITEM, schema.EVENT, schema.TIME)


def event_columns(columns: ColumnMap) -> dict[str, str]:
    """Canonical event column -> the user's name for it (user_id, item_id, event_type, timestamp, value)."""
    return {schema.USER: columns.user_id, schema.ITEM: columns.item_id, schema.EVENT: columns.event_type,
            schema.TIME: columns.timestamp, schema.VALUE: columns.value}


def item_columns(columns: ColumnMap) -> dict[str, str]:
    """Canonical item column -> the user's name for it (item_id, category, price)."""
    return {schema.ITEM: columns.item_item_id, schema.CATEGORY: columns.category, schema.PRICE: columns.price}


def named_item_columns(columns: ColumnMap) -> dict[str, str]:
    """The item columns the user named (not left at their defaults): each must exist, or it is an error,
    because a missing one would otherwise run silently without categories or text."""
    defaults = ColumnMap()
    named = {}
    if columns.category != defaults.category:
        named[columns.category] = flag("columns.category")
    if tuple(columns.text) != tuple(defaults.text):
        named.update({name: flag("columns.text") for name in columns.text})
    return named


def check_named_item_columns(present: list[str], columns: ColumnMap, where: str) -> None:
    """One line naming each named item column that `where` lacks, with the columns it has."""
    missing = [f"{name!r} ({how})" for name, how in named_item_columns(columns).items() if name not in present]
    if missing:
        raise UsageError(f"item column(s) {', '.join(missing)} not found in {where}; columns found: "
                         f"{listed(present, 12) or '(none)'}; name one of those, or leave the option out")


def mapped_events(events: Any, columns: ColumnMap) -> Any:
    """A caller's events frame with the mapped columns renamed to the canonical ones (a column already
    named canonically and mapped from elsewhere gives way to the mapped one)."""
    return _renamed(events, event_columns(columns), REQUIRED_EVENTS, "events", "columns")


def mapped_items(items: Any, columns: ColumnMap) -> Any:
    """A caller's items frame renamed likewise; named text columns and category must be there, and named
    text columns are the only text kept (as `io.readers.read_items` keeps them)."""
    check_named_item_columns([str(c) for c in items.columns], columns, "the items frame")
    items = _renamed(items, item_columns(columns), (schema.ITEM,), "items", "columns")
    if tuple(columns.text) != tuple(ColumnMap().text):
        keep = [c for c in items.columns if c in (schema.ITEM, schema.CATEGORY, schema.PRICE) or c in columns.text]
        items = items[keep]
    return items


def _renamed(frame: Any, mapping: dict[str, str], required: tuple[str, ...], what: str, section: str) -> Any:
    present = list(frame.columns)
    for canonical in required:
        source = mapping[canonical]
        if source not in present and canonical not in present and source != canonical:
            raise UsageError(f"{what} has no column {source!r}, which [{section}] {canonical} = {source!r} maps to "
                             f"{canonical}; columns: {listed(present, 20)}; fix the mapping or the frame")
    renames = {source: canonical for canonical, source in mapping.items()
               if source != canonical and source in present}
    if not renames:
        return frame
    replaced = [c for c in renames.values() if c in present and c not in renames]
    return frame.drop(columns=replaced).rename(columns=renames)
