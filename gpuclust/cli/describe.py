"""`gpuclust describe --run DIR --model MODEL`: a finished run's clusters named and described by a local
language model; and the describer `gpuclust run --describe MODEL` uses. Thin wrappers over
`gpuclust.explain.describe.Describer` and `gpuclust.run.describe_files`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from gpuclust.io.writers import json_text

DEFAULT_TOKENS = 96
DEFAULT_SECONDS = 300.0

Tokens = Annotated[int | None, typer.Option("--describe-tokens", help="New tokens per cluster's answer at most "
                                            f"(default {DEFAULT_TOKENS}).")]
Seconds = Annotated[float | None, typer.Option("--describe-seconds", help="Wall-clock limit of the whole batch "
                                               f"(default {DEFAULT_SECONDS:.0f}); answers cut short fall back to "
                                               "the rule-based names.")]


def describer_for(model: str, device: str, tokens: int | None, seconds: float | None) -> Any:
    """A Describer over the local model `model`, on the torch device `device` resolves to; its config and
    tokenizer are read now, so that a missing or non-generative model fails before any work."""
    from gpuclust.backend import resolve_backend
    from gpuclust.explain.describe import Describer
    from gpuclust.explain.language_model import LocalLM

    lm = LocalLM(model, resolve_backend(device).torch_device, DEFAULT_TOKENS if tokens is None else tokens,
                 DEFAULT_SECONDS if seconds is None else seconds)
    return Describer(lm.prepare())


def describe(
    run: Annotated[Path, typer.Option("--run", help="Output directory of a finished `gpuclust run`.")],
    model: Annotated[str, typer.Option("--model", help="A local Hugging Face causal or seq2seq LM: a folder, or "
                                       "a name already in the Hugging Face cache (never downloaded).")],
    device: Annotated[str, typer.Option(help="Where the language model runs: auto, cpu or cuda.")] = "auto",
    tokens: Tokens = None,
    seconds: Seconds = None,
    model_key: Annotated[Path | None, typer.Option("--model-key", metavar="KEY_FILE", help="The key of a signed "
                                                   "model: checked on load, and the described model signed again.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")] = False,
) -> None:
    """Name and describe each cluster of a finished run with a local language model (clusters.json, the
    saved model, the manifest and the report are updated)."""
    from rich.console import Console
    from rich.text import Text

    from gpuclust.cli.console import shown
    from gpuclust.run import describe_files
    from gpuclust.signing import ModelKey

    key = ModelKey.from_file(model_key) if model_key is not None else None
    describer = describer_for(model, device, tokens, seconds)
    fitted = describe_files(run, describer, device=None if device == "auto" else device, model_key=key)
    record = fitted.manifest_["describe"]
    if json_out:
        print(json_text({"describe": record, "clusters": [
            {k: p.get(k) for k in ("cluster", "name", "description", "described_by", "rule_name")}
            for p in fitted.profiles_]}), end="")
        return
    out = Console()
    for p in fitted.profiles_:
        out.print(Text.assemble((str(p["cluster"]), "bold"), " ", shown(f"{p.get('name')}: {p.get('description')}")),
                  highlight=False)
    out.print(shown(summary_line(record)))  # a model path such as models/[v2] is no markup


def summary_line(record: dict) -> str:
    """One line on how the names were made: model, answers used, fallbacks, speed."""
    fallback = record.get("fallback") or {}
    line = (f"described {record.get('described')} of {record.get('clusters')} clusters with {record.get('model')} "
            f"on {record.get('device')} in {record.get('seconds', 0):.1f} s ({record.get('tokens_per_second')} new "
            "tokens/s)")
    if fallback:
        line += f"; rule-based names kept for clusters {', '.join(map(str, fallback['clusters']))}: {fallback['why']}"
    if record.get("timed_out"):
        line += "; the time limit cut the batch short"
    return line
