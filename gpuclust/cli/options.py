"""Turning command-line options into a PipelineConfig; flags override the TOML file's values."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gpuclust.config import PipelineConfig
from gpuclust.errors import UsageError


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


def build_config(config_file: Path | None, overrides: dict[str, dict[str, Any]]) -> PipelineConfig:
    """Start from the TOML file (or defaults) and apply every override that was given (not None)."""
    config = PipelineConfig.from_toml(config_file) if config_file else PipelineConfig()
    for section, values in overrides.items():
        target = config if section == "" else getattr(config, section)
        for key, value in values.items():
            if value is not None:
                setattr(target, key, value)
    return config.validate()
