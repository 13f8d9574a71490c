"""Reading inputs into the canonical schema and writing outputs atomically."""

from gpuclust.io.readers import read_events, read_items, read_table, read_truth
from gpuclust.io.writers import atomic_path, write_json, write_parquet

__all__ = ["atomic_path", "read_events", "read_items", "read_table", "read_truth", "write_json", "write_parquet"]
