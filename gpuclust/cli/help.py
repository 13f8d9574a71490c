"""`--help` a newcomer can read: options grouped in panels, each with the default it takes.

Most options of `run` default to None, meaning "as the config says" (flags override a TOML file), so
typer has no default to show; the default is the config's own value, looked up here from one
`PipelineConfig()` so the help cannot drift from the config. `arrange` puts a command's options in
panels and appends those defaults, from one table per command.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable
from typing import Annotated, Any, get_args, get_origin, get_type_hints

INPUT = "Input"
COLUMNS = "Columns of the input files"
PREPROCESS = "Preprocessing"
FEATURES = "Features"
TEXT = "Text features"
LEARNED = "Sequence and autoencoder features"
CLUSTERING = "Clustering"
OUTPUT = "Output"
DEVICE = "Device and Dask"
PRIVACY = "Privacy and signing"
ORDER = (INPUT, COLUMNS, PREPROCESS, FEATURES, TEXT, LEARNED, CLUSTERING, OUTPUT, DEVICE, PRIVACY)


def config_default(path: str) -> str | None:
    """The default of a config setting ("cluster.k") as a user would type it; None where it has none."""
    from gpuclust.config import PipelineConfig

    value: Any = PipelineConfig()
    for part in path.split("."):
        value = getattr(value, part)
    if value is None:
        return None
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, dict):
        return ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in value.items())
    if isinstance(value, tuple | list):
        return ",".join(str(v) for v in value) or None
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def arrange(table: dict[str, tuple[str, str | None]]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A decorator: each option named in `table` goes to its panel, and where a config path is given,
    its help ends with that setting's default. Panels are shown in ORDER (typer shows them in the order
    of their first option, so the signature is reordered; every option is a keyword). An option missing
    from the table stays in typer's "Options" panel, last (`unplaced` names them, for a test)."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        hints = get_type_hints(func, include_extras=True)
        signature = inspect.signature(func)
        params = []
        for name, param in signature.parameters.items():
            if name not in table:
                params.append(param.replace(kind=inspect.Parameter.KEYWORD_ONLY))
                continue
            panel, path = table[name]
            hint = hints[name]
            if get_origin(hint) is Annotated:
                base, *extras = get_args(hint)
                hint = Annotated[(base, *[_placed(e, panel, path) if _is_option(e) else e for e in extras])]
            func.__annotations__[name] = hint
            params.append(param.replace(annotation=hint, kind=inspect.Parameter.KEYWORD_ONLY))
        # Stable: the order within a panel stays.
        params.sort(key=lambda p: ORDER.index(table[p.name][0]) if p.name in table else len(ORDER))
        func.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
        return func

    return decorate


def unplaced(func: Callable[..., Any], table: dict[str, tuple[str, str | None]]) -> list[str]:
    """Options of `func` that `table` gives no panel, and names in `table` that are no option of it."""
    names = set(inspect.signature(func).parameters)
    return sorted(names - set(table)) + sorted(set(table) - names)


def _is_option(value: Any) -> bool:
    from typer.models import ParameterInfo

    return isinstance(value, ParameterInfo)


def _placed(info: Any, panel: str, path: str | None) -> Any:
    """A copy (the same Annotated alias can serve several commands) in `panel`, its help with the default."""
    info = copy.copy(info)
    info.rich_help_panel = panel
    shown = config_default(path) if path else None
    if shown is not None and "[default" not in (info.help or ""):
        info.help = f"{info.help or ''} \\[default: {shown}]".strip()
    return info


def hide_flag_types() -> None:
    """typer 0.29 shows every flag as taking a `<bool>`, which reads as if `--json true` were wanted; a flag
    takes no value, so it shows no type (as typer did before)."""
    from typer.core import TyperOption

    shown = TyperOption.display_type_rich
    if getattr(shown, "hides_flags", False):
        return

    def display_type_rich(self: Any, ctx: Any) -> str | None:
        return None if getattr(self, "is_flag", False) else shown(self, ctx)

    display_type_rich.hides_flags = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


def hoist_debug(args: list[str]) -> list[str]:
    """`gpuclust run --debug ...` as well as `gpuclust --debug run ...`: --debug is the root's option, so
    one given after the command moves before it (not after a bare `--`, where it is a value)."""
    end = args.index("--") if "--" in args else len(args)
    if "--debug" not in args[:end]:
        return args
    rest = [a for a in args[:end] if a != "--debug"] + args[end:]
    return ["--debug", *rest]
