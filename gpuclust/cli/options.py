"""Turning command-line options into a PipelineConfig; flags override the TOML file's values."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from gpuclust.cluster.sweep import apply_k
from gpuclust.config import PipelineConfig
from gpuclust.errors import UsageError

CheckKey = Annotated[Path | None, typer.Option(
    "--model-key", metavar="KEY_FILE", help="Refuse a model not signed with this key (`run --model-key`).")]


def parse_pairs(text: str | None, what: str) -> dict[str, float] | None:
    """'view=1,click=2' -> {'view': 1.0, 'click': 2.0}."""
    if text is None:
        return None
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        try:
            if not sep:
                raise ValueError
            out[name.strip()] = float(value)
        except ValueError:
            raise UsageError(f"cannot read {what} {part!r}: write NAME=NUMBER pairs separated by commas") from None
    return out


def split_list(text: str | None) -> tuple[str, ...] | None:
    return None if text is None else tuple(p.strip() for p in text.split(",") if p.strip())


def build_config(config_file: Path | None, overrides: dict[str, dict[str, Any]], k: str | None = None,
                 feature_weights: str | None = None) -> PipelineConfig:
    """Start from the TOML file (or defaults), apply every flag that was given (not None), and validate
    once, after all of them: a contradiction between two flags is found whichever came first.

    `overrides` maps a section path ("" for the top level, "features.text" for nested ones) to its flags."""
    config = PipelineConfig.from_toml(config_file) if config_file else PipelineConfig()
    given = set()
    for section, values in overrides.items():
        target = config
        for part in filter(None, section.split(".")):
            target = getattr(target, part)
        for key, value in values.items():
            if value is not None:
                setattr(target, key, value)
                given.add(f"{section}.{key}" if section else key)
    if k is not None:
        apply_k(config.cluster, k)
        given.add("cluster.k")
    if feature_weights is not None:
        config.features.weights.update(parse_pairs(feature_weights, "--feature-weights"))
    return config.validate(given=frozenset(given))
