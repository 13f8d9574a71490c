"""Library entry points: texts -> vectors through the cache, and items file -> vectors file.

`embed_items` is everything `gpuclust embed --items F --out F` does; the CLI only parses options.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

import gpuclust
from gpuclust import schema
from gpuclust.backend import resolve_backend, to_host
from gpuclust.config import ColumnMap
from gpuclust.errors import UsageError, require_file
from gpuclust.features.text.cache import VectorCache, text_key
from gpuclust.features.text.encoder import EncodeStats, ItemEncoder
from gpuclust.features.text.model import as_loaded
from gpuclust.features.text.texts import item_texts, template_fields
from gpuclust.io.outputs import FILE_MARK, check_file_target, file_mark, mark_text
from gpuclust.io.readers import read_items
from gpuclust.io.writers import atomic_path
from gpuclust.preprocess.parse import keyed_items

OUT_FORMATS = {".parquet": "parquet", ".pq": "parquet", ".npy": "npy"}


def cache_namespace(encoder: ItemEncoder) -> dict[str, Any]:
    """Everything that changes a vector besides the text itself."""
    encoder.resolve()
    return {"model": encoder.model.identity, "pooling": encoder.pooling,
            "precision": encoder.precision_, "max_length": encoder.max_length_}


def encode_texts(encoder: ItemEncoder, texts: Sequence[str], cache_dir: str | Path | None = None):
    """Encode `texts` (duplicates once, cached ones not at all); returns (torch n x d, stats dict).

    Vectors stay on the encoder's device. With a cache, hits are read from disk and the new vectors are
    written back (on the GPU that write is a counted device-to-host copy of the misses only).
    """
    import torch

    started = time.perf_counter()
    encoder.resolve()
    device = encoder.device_
    first: dict[str, int] = {}
    inverse = np.fromiter((first.setdefault(t, len(first)) for t in texts), dtype=np.int64, count=len(texts))
    unique = list(first)
    hit = np.zeros(len(unique), dtype=bool)
    cache = VectorCache(cache_dir, cache_namespace(encoder)) if cache_dir is not None else None
    keys: list[str] = []
    vectors = torch.empty((len(unique), encoder.model.hidden_size), dtype=torch.float32, device=device)
    if cache is not None:
        keys = [text_key(t) for t in unique]
        hit, cached = cache.lookup(keys)
        if hit.any():
            vectors[torch.from_numpy(np.flatnonzero(hit)).to(device)] = torch.from_numpy(cached).to(device)
    misses = np.flatnonzero(~hit)
    stats = EncodeStats()
    if len(misses):
        fresh = encoder.encode([unique[i] for i in misses])
        stats = encoder.stats_
        vectors[torch.from_numpy(misses).to(device)] = fresh
        if cache is not None:
            cache.store([keys[i] for i in misses], to_host(fresh))
    out = vectors[torch.from_numpy(inverse).to(device)] if len(unique) != len(texts) else vectors
    info = stats.to_dict()
    info.update(
        texts=len(texts), unique_texts=len(unique), encoded=int(len(misses)),
        cache_hits=int(hit.sum()) if cache is not None else None,
        cache_misses=int(len(misses)) if cache is not None else None,
        encode_seconds=info.pop("seconds"), seconds=round(time.perf_counter() - started, 4),
    )
    return out, info


def _out_format(out_path: Path) -> str:
    fmt = OUT_FORMATS.get(out_path.suffix.lower())
    if fmt is None:
        raise UsageError(f"cannot tell the output format of {out_path}: name it .parquet or .npy")
    return fmt


def ids_path(out_path: str | Path) -> Path:
    """Where `.npy` output keeps its item ids (row i of the array is item_ids[i])."""
    return Path(out_path).with_suffix(".ids.json")


def embed_items(items_path: str | Path, out_path: str | Path, *, model: Any = "default",
                template: str | None = None, text_columns: Sequence[str] | None = None,
                item_key: str = schema.ITEM, pooling: str = "mean", precision: str = "auto",
                batch_tokens: int | None = None, max_length: int = 128, cache_dir: str | Path | None = None,
                device: str = "auto", allow_download: bool = False) -> dict[str, Any]:
    """Encode every item of an items file and write its vectors, atomically.

    Text columns come from `text_columns`, else from the template's fields, else `title`. `.parquet` out
    holds `item_id` and a fixed-size-list `vector` column (model and settings in the file metadata);
    `.npy` out holds the float32 matrix in items-file order (duplicate ids dropped) with the ids in a
    `<stem>.ids.json` beside it. Returns a summary: counts, model, precision, tokens, speed, cache use.
    """
    started = time.perf_counter()
    out_path = Path(out_path)
    fmt = _out_format(out_path)
    inputs = {"--items": items_path}  # a synth items file carries gpuclust's mark, yet it is the input
    check_file_target(out_path, "--out", inputs, kind="embed")  # before the work: only over its own kind
    if fmt == "npy":
        check_file_target(ids_path(out_path), "--out", inputs, kind="embed")
    fields = template_fields(template) if template else []
    non_text = {schema.ITEM, schema.CATEGORY, schema.PRICE, item_key}
    texts_cols = tuple(text_columns) if text_columns else tuple(f for f in fields if f not in non_text)
    texts_cols = texts_cols or (schema.TITLE,)
    backend = resolve_backend(device)
    items = keyed_items(read_items(items_path, backend.frame, ColumnMap(item_item_id=item_key, text=texts_cols)))
    if len(items) == 0:
        raise UsageError(f"{items_path} has no items with an id to embed")
    texts = item_texts(items, texts_cols, template)
    loaded = as_loaded(model, backend.torch_device, allow_download)
    encoder = ItemEncoder(loaded, pooling=pooling, precision=precision, batch_tokens=batch_tokens,
                          max_length=max_length)
    vectors, stats = encode_texts(encoder, texts, cache_dir)
    host = to_host(vectors)
    ids = np.asarray(to_host(items[schema.ITEM]))
    meta = {"model": loaded.name, "model_identity": loaded.identity, "pooling": pooling,
            "precision": encoder.precision_, "max_length": encoder.max_length_,
            "template": template or "default", "text_columns": list(texts_cols)}
    if fmt == "parquet":
        _write_parquet(out_path, ids, host, meta)
    else:
        with atomic_path(out_path) as tmp, open(tmp, "wb") as fh:
            np.save(fh, host, allow_pickle=False)
        with atomic_path(ids_path(out_path)) as tmp:
            tmp.write_text(json.dumps({"gpuclust": gpuclust.__version__, FILE_MARK: file_mark("embed"), **meta,
                                       "item_id": ids.tolist()}) + "\n")
    summary = {"out": str(out_path), "format": fmt, "n_items": int(len(texts)), "dim": int(host.shape[1]),
               "device": backend.device, **meta, **stats,
               "total_seconds": round(time.perf_counter() - started, 3)}
    if fmt == "npy":
        summary["ids_out"] = str(ids_path(out_path))
    summary.pop("model_identity")
    return summary


def _write_parquet(path: Path, ids: np.ndarray, vectors: np.ndarray, meta: dict[str, Any]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1))
    table = pa.table({schema.ITEM: pa.array(ids.tolist()),
                      "vector": pa.FixedSizeListArray.from_arrays(flat, int(vectors.shape[1]))})
    table = table.replace_schema_metadata({"gpuclust.embed": json.dumps(meta), FILE_MARK: mark_text("embed")})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_item_vectors(source: str | Path) -> Any:
    """What `gpuclust embed` wrote, as a pandas frame (item_id, vector): Parquet, or .npy with its ids."""
    import pandas as pd

    path = Path(source)
    require_file(path, "an item vectors file (.parquet or .npy from `gpuclust embed`)")
    if _out_format(path) == "npy":
        ids = json.loads(ids_path(path).read_text(encoding="utf-8"))["item_id"]
        matrix = np.load(path, allow_pickle=False)
        return pd.DataFrame({schema.ITEM: ids, "vector": list(matrix)})
    return pd.read_parquet(path)


def precomputed_vectors(source: Any, data: Any, backend: Any) -> tuple[Any, dict[str, Any]]:
    """Vectors for the prepared items (row i = item_idx i) from precomputed ones, matched by item id.

    `source`: a path `read_item_vectors` reads, or a frame with `item_id` and either a `vector` column of
    equal-length arrays or one numeric column per dimension. Items without a vector get zeros and are
    counted: a user who touched only those has no text signal."""
    from gpuclust.frames import host_frame
    from gpuclust.preprocess.parse import common_key, normalise_ids

    table = read_item_vectors(source) if isinstance(source, str | Path) else host_frame(source)
    if schema.ITEM not in table.columns:
        raise UsageError(f"item vectors need an {schema.ITEM!r} column; found {', '.join(map(str, table.columns))}")
    if "vector" in table.columns:
        matrix = np.stack([np.asarray(v, dtype=np.float32) for v in table["vector"]]) if len(table) else None
    else:
        matrix = table.drop(columns=[schema.ITEM]).to_numpy(dtype=np.float32)
    if matrix is None or matrix.ndim != 2 or matrix.shape[1] < 1 or not np.isfinite(matrix).all():
        raise UsageError("item vectors must be finite numbers of one length per item (a `vector` column or "
                         "one column per dimension)")
    ids, _ = normalise_ids(table[schema.ITEM])
    lookup = table[[schema.ITEM]].assign(**{schema.ITEM: ids, "_row": np.arange(len(table))})
    items = host_frame(data.items[[schema.ITEM, schema.ITEM_IDX]])
    items, lookup = common_key(items, lookup.drop_duplicates(subset=[schema.ITEM]), schema.ITEM)
    joined = items.merge(lookup, on=schema.ITEM, how="left").sort_values(schema.ITEM_IDX)
    rows = joined["_row"].to_numpy(dtype=np.float64)
    found = ~np.isnan(rows)
    _check_coverage(int(found.sum()), int(data.n_items), len(table), source)
    vectors = np.zeros((int(data.n_items), matrix.shape[1]), dtype=np.float32)
    vectors[found] = matrix[rows[found].astype(np.int64)]
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors = vectors / np.maximum(norms, 1e-12)
    return backend.asarray(vectors), {"items_with_vectors": int(found.sum()),
                                      "items_without_vectors": int((~found).sum())}


def _check_coverage(found: int, n_items: int, n_vectors: int, source: Any) -> None:
    """No item of the events with a vector is a mismatch of catalogues (or of id columns), not a run
    without text signal; some items without one is worth a line: those users have less text to go on."""
    import warnings

    from gpuclust.errors import InputWarning

    where = f"in {source}" if isinstance(source, str | Path) else "among the item vectors"
    if found == 0 and n_items > 0:
        raise UsageError(f"none of the {n_items:,} items of the events has a vector {where} ({n_vectors:,} vectors): "
                         "make them with `gpuclust embed` from the items file of these events, with the same item "
                         "ids (--item-key-col)")
    if found < n_items:
        warnings.warn(f"{n_items - found:,} of {n_items:,} items of the events have no vector {where}; they add no "
                      "text signal: re-run `gpuclust embed` on the current items file", InputWarning, stacklevel=3)
