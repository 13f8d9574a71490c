"""Progress of long work, one mechanism for run, evaluate, compare and bench.

The library names each step as it starts by calling `progress(line)`, a callable taking one line of text
(None: nobody is listening). How a step is shown is the caller's choice: the CLI draws a spinner on a
terminal and writes timestamped lines to a log (`gpuclust.cli.console`); a notebook can pass `print`.
A step is "what is happening now" until the next call; there is no "done" call to forget.
"""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[str], None]


def tell(progress: Progress | None, line: str) -> None:
    """Name the step that starts now (nothing when nobody listens)."""
    if progress is not None:
        progress(line)


class _Within:
    """Steps of one part of a longer job, named with that part (a class, not a closure: it pickles)."""

    def __init__(self, progress: Progress, prefix: str) -> None:
        self.progress, self.prefix = progress, prefix

    def __call__(self, line: str) -> None:
        self.progress(f"{self.prefix}: {line}")


def within(progress: Progress | None, prefix: str) -> Progress | None:
    """`progress` for the steps of a part ("validation fit: features"), so a nested fit's stage names say
    which fit they belong to."""
    return None if progress is None else _Within(progress, prefix)
