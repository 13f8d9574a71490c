"""`gpuclust embed`: item texts -> vectors file. A thin wrapper over `features.text.embed_items`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from gpuclust.backend import DEVICE_CHOICES


def embed(
    items: Annotated[Path, typer.Option("--items", help="Items file (Parquet, CSV, TSV or JSON, each also .gz) with text columns.")],
    out: Annotated[Path, typer.Option("--out", help="Output: .parquet (item_id + vector) or .npy (+ .ids.json).")],
    model: Annotated[str, typer.Option(help="'default' (offline all-MiniLM-L6-v2), a local model directory or a Hugging Face id.")] = "default",
    template: Annotated[str | None, typer.Option(help="Item text template over columns, e.g. '{title} | {category}'.")] = None,
    text_col: Annotated[list[str] | None, typer.Option("--text-col", help="Text column(s) of the items file (default: title, or the template's fields).")] = None,
    item_key_col: Annotated[str, typer.Option("--item-key-col", help="Item id column of the items file.")] = "item_id",
    pooling: Annotated[str, typer.Option(help="mean or cls.")] = "mean",
    precision: Annotated[str, typer.Option(help="auto (bf16/fp16 on GPU, fp32 on CPU), fp32, bf16, fp16 (GPU only) or int8 (CPU only).")] = "auto",
    batch_tokens: Annotated[int | None, typer.Option("--batch-tokens", help="Padded tokens per batch (default: from free GPU memory; 2048 on CPU).")] = None,
    max_length: Annotated[int, typer.Option("--max-length", help="Truncate item texts to this many tokens.")] = 128,
    cache_dir: Annotated[Path | None, typer.Option("--cache-dir", help="Reuse vectors of unchanged texts from this folder.")] = None,
    device: Annotated[str, typer.Option(help=f"Where to run: {', '.join(DEVICE_CHOICES)}.")] = "auto",
    allow_download: Annotated[bool, typer.Option("--allow-download", help="Let transformers download a model from the hub.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")] = False,
) -> None:
    """Encode item texts with a transformer and write one L2-normalised vector per item."""
    from gpuclust.features.text.embed import embed_items

    summary = embed_items(
        items, out, model=model, template=template, text_columns=text_col or None, item_key=item_key_col,
        pooling=pooling, precision=precision, batch_tokens=batch_tokens, max_length=max_length,
        cache_dir=cache_dir, device=device, allow_download=allow_download,
    )
    if json_out:
        print(json.dumps(summary, indent=2))
        return
    _print_summary(summary)


def _print_summary(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    from gpuclust.cli.console import shown

    table = Table(title=shown(f"embedded {summary['n_items']} items -> {summary['out']}"), show_header=False)
    cache = ("off" if summary["cache_hits"] is None
             else f"{summary['cache_hits']} hits, {summary['cache_misses']} encoded")
    rows = [
        ("model", f"{summary['model']} ({summary['dim']} dims, {summary['pooling']} pooling)"),
        ("device / precision", f"{summary['device']} / {summary['precision']}"),
        ("texts", f"{summary['texts']} ({summary['unique_texts']} distinct)"),
        ("tokens", f"{summary['non_pad_tokens']} real, {summary['tokens']} fed, padding {summary['padding_share']:.1%}"),
        ("speed", f"{summary['items_per_s']:.0f} items/s, {summary['tokens_per_s']:.0f} tokens/s"),
        ("cache", cache),
        ("seconds", f"{summary['total_seconds']:.2f}"),
    ]
    if "ids_out" in summary:
        rows.append(("item ids", summary["ids_out"]))
    for key, value in rows:
        table.add_row(key, shown(value))  # paths and the model name as they are, never markup
    Console().print(table)
