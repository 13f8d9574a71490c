"""Where the CLI speaks to a person: one stderr console, and a spinner naming the stage in progress."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

console = Console(stderr=True)


@contextmanager
def progress(enabled: bool) -> Iterator[Callable[[str], None]]:
    """A spinner naming the stage in progress; silent under --json or when output is not a terminal."""
    if not enabled:
        yield lambda _name: None
        return
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task("starting", total=None)
        yield lambda name: bar.update(task, description=name)
