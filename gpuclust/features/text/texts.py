"""Item text from catalogue columns through a template such as "{title} | {category}".

The default template joins the text columns and, where present, the category with " | ". An item whose
text fields are all empty falls back to its category, then to its item id, so every item gets a text.
Text is built on the host: tokenisation runs on the CPU anyway.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from typing import Any

import numpy as np

from gpuclust import schema
from gpuclust.backend import to_host
from gpuclust.errors import UsageError

SEPARATOR = " | "
_STRIP = " \t\n|;,:-/"
_NON_TEXT = (schema.ITEM, schema.CATEGORY, schema.PRICE, schema.ITEM_IDX)


def template_fields(template: str) -> list[str]:
    """Column names a template refers to, in order, each once."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise UsageError(f"text template {template!r} is malformed ({exc}); write it like '{{title}} | {{category}}'") from None
    fields = [name for _, name, _, _ in parsed if name is not None]
    if any(not f or not f.isidentifier() for f in fields):
        raise UsageError(f"text template {template!r} must name columns in braces, like '{{title}} | {{category}}'")
    return list(dict.fromkeys(fields))


def default_template(text_columns: Sequence[str], columns: Sequence[str]) -> str:
    parts = [c for c in text_columns if c in columns]
    if schema.CATEGORY in columns and schema.CATEGORY not in parts:
        parts.append(schema.CATEGORY)
    return SEPARATOR.join("{" + c + "}" for c in parts)


def _clean(value: Any) -> str:
    """Text of one cell with whitespace collapsed; nulls (None, NaN, NA, NaT) become ""."""
    import pandas as pd

    try:
        if pd.isna(value):
            return ""
    except (TypeError, ValueError):  # array-like cell: not a null scalar
        pass
    return " ".join(str(value).split())


def item_texts(items: Any, text_columns: Sequence[str], template: str | None = None) -> list[str]:
    """One text per row of `items` (a cuDF or pandas frame), in row order."""
    columns = [str(c) for c in items.columns]
    shown = ", ".join(c for c in columns if c != schema.ITEM_IDX) or "(none)"  # the user's columns, not ours
    if template is None:
        if not [c for c in text_columns if c in columns]:
            raise UsageError(
                "the text feature (and --item-init text) needs an items file with text columns: pass --items "
                "FILE and name its text columns with --text-cols (or a --text-template over its columns; "
                "gpuclust embed: --text-col, --template); "
                f"item columns here: {shown}"
            )
        template = default_template(text_columns, columns)
    fields = template_fields(template)
    if not fields:
        raise UsageError(f"text template {template!r} names no column; write it like '{{title}} | {{category}}'")
    missing = [f for f in fields if f not in columns]
    if missing:
        raise UsageError(
            f"text template names column(s) {', '.join(map(repr, missing))} not in the items; "
            f"columns found: {shown}"
        )
    text_fields = [f for f in fields if f in text_columns] or [f for f in fields if f not in _NON_TEXT] or fields
    host = {c: np.asarray(to_host(items[c])) for c in dict.fromkeys([*fields, *_fallback_columns(columns)])}
    n = len(items)
    out: list[str] = []
    for i in range(n):
        values = {f: _clean(host[f][i]) for f in fields}
        text = template.format(**values).strip(_STRIP) if any(values[f] for f in text_fields) else ""
        if not text:
            text = _fallback(host, i)
        out.append(text)
    return out


def _fallback_columns(columns: Sequence[str]) -> list[str]:
    return [c for c in (schema.CATEGORY, schema.ITEM) if c in columns]


def _fallback(host: dict[str, np.ndarray], i: int) -> str:
    for column in (schema.CATEGORY, schema.ITEM):
        if column in host:
            value = _clean(host[column][i])
            if value:
                return value
    return "unknown item"
