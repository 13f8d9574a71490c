"""Adapters turn a known raw log into the canonical events and items, counting what they drop.

online-retail (UCI Online Retail, CC BY 4.0) — the column mapping:
    CustomerID  -> user_id      (rows without one are dropped and counted)
    StockCode   -> item_id      (non-product codes such as POST, M, BANK CHARGES are dropped)
    InvoiceDate -> timestamp
    every line  -> event_type "purchase"
    Quantity * UnitPrice -> value
    Description -> items.title  (the most frequent description of each stock code)
Cancellations (InvoiceNo starting with "C") and lines with Quantity <= 0 or UnitPrice <= 0 are
dropped and counted; each drop is also a warning (`errors.warn_dropped`), as the preprocessor's are.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

from gpuclust import schema
from gpuclust.errors import UsageError, warn_dropped
from gpuclust.preprocess.prepared import StepCount

RETAIL_COLUMNS = ("InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID")
# Stock codes that are fees, postage or manual adjustments, not products.
RETAIL_NON_PRODUCTS = ("POST", "DOT", "M", "m", "C2", "BANK CHARGES", "PADS", "AMAZONFEE", "CRUK", "D", "S", "B")

Adapter = Callable[[Any, ModuleType], tuple[Any, Any, list[StepCount]]]


def online_retail(raw: Any, frame: ModuleType) -> tuple[Any, Any, list[StepCount]]:
    missing = [c for c in RETAIL_COLUMNS if c not in raw.columns]
    if missing:
        raise UsageError(
            f"the online-retail adapter needs columns {', '.join(missing)}; found: {', '.join(map(str, raw.columns))}"
        )
    steps: list[StepCount] = []

    def keep(step: str, df, mask, why: str):
        out = df[mask]
        steps.append(StepCount(step, len(df), len(out), why))
        warn_dropped(len(df) - len(out), len(df), f"{why} (the online-retail adapter drops these: they are "
                     "no customer's purchase of a product)", what="rows")
        return out

    df = keep("retail_no_customer", raw, raw["CustomerID"].notna(), "no CustomerID")
    invoice = df["InvoiceNo"].astype("str")
    df = keep("retail_cancellations", df, ~invoice.str.startswith("C"), "cancellation (InvoiceNo starts with C)")
    df = keep("retail_non_positive", df, (df["Quantity"] > 0) & (df["UnitPrice"] > 0),
              "Quantity or UnitPrice not positive")
    codes = df["StockCode"].astype("str")
    df = keep("retail_non_products", df, ~codes.isin(list(RETAIL_NON_PRODUCTS)), "fee or adjustment, not a product")

    events = frame.DataFrame({
        schema.USER: df["CustomerID"].astype("int64"),
        schema.ITEM: df["StockCode"].astype("str"),
        schema.EVENT: "purchase",
        schema.TIME: df["InvoiceDate"],
    })
    events[schema.VALUE] = (df["Quantity"] * df["UnitPrice"]).astype("float32")
    events = events.reset_index(drop=True)

    described = df[["StockCode", "Description"]].dropna()
    described = described.assign(StockCode=described["StockCode"].astype("str"))
    counts = described.groupby(["StockCode", "Description"]).size().reset_index()
    counts.columns = [schema.ITEM, schema.TITLE, "n"]
    counts = counts.sort_values([schema.ITEM, "n", schema.TITLE], ascending=[True, False, True])
    items = counts.drop_duplicates(subset=[schema.ITEM])[[schema.ITEM, schema.TITLE]].reset_index(drop=True)
    return events, items, steps


ADAPTERS: dict[str, Adapter] = {"online-retail": online_retail}


def get_adapter(name: str) -> Adapter:
    if name not in ADAPTERS:
        raise UsageError(f"unknown adapter {name!r}: choose one of {', '.join(ADAPTERS)}")
    return ADAPTERS[name]
