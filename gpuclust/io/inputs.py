"""The one way commands read their inputs: `gpuclust run`, `assign` and `evaluate` all call `read_inputs`.

An adapter maps a known raw log (and may yield an items table and rows it dropped); otherwise the
column mapping renames the events. An items file, where given, replaces the adapter's items.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from gpuclust.config import ColumnMap
from gpuclust.io.adapters import get_adapter
from gpuclust.io.readers import read_events, read_items, read_table, read_truth
from gpuclust.preprocess.prepared import StepCount


@dataclass
class Inputs:
    events: Any
    items: Any = None
    truth: Any = None
    steps: list[StepCount] = field(default_factory=list)  # rows an adapter dropped, for the manifest
    sources: dict[str, str | None] = field(default_factory=dict)


def read_inputs(frame: ModuleType, columns: ColumnMap, events: str | Path, items: str | Path | None = None,
                truth: str | Path | None = None, adapter: str | None = None) -> Inputs:
    """Frames on the backend's frame library, renamed to the canonical schema."""
    steps: list[StepCount] = []
    raw_items = None
    if adapter:
        raw_events, raw_items, steps = get_adapter(adapter)(read_table(events, frame), frame)
    else:
        raw_events = read_events(events, frame, columns)
    if items is not None:
        raw_items = read_items(items, frame, columns)
    raw_truth = read_truth(truth, frame) if truth is not None else None
    sources = {"events": str(events), "items": None if items is None else str(items),
               "truth": None if truth is None else str(truth), "adapter": adapter}
    return Inputs(raw_events, raw_items, raw_truth, steps, sources)
