"""Where the CLI speaks to a person: one stderr console, and how the library's progress is shown.

The library names each step as it starts (`gpuclust.progress`); this module decides how that is shown:

    rich    a terminal: a spinner naming the step, with the time since the command started
    plain   a log (stderr is not a terminal): timestamped lines, `HH:MM:SS  step`, once the command has
            run a few seconds, so a quick command or refusal stays exactly its result or its one line
    off     nothing (the default under --json, where stdout carries the result)

`auto` (the default) picks rich on a terminal, plain otherwise, off under --json; the environment variable
GPUCLUST_PROGRESS=auto|rich|plain|off overrides it (e.g. `plain` to log a --json run's steps on stderr).
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.text import Text

from gpuclust.errors import UsageError

console = Console(stderr=True)

ENV = "GPUCLUST_PROGRESS"
MODES = ("auto", "rich", "plain", "off")
PLAIN_DELAY_S = 3.0  # a command quicker than this prints no progress line at all
PLAIN_EVERY_S = 60.0  # a step longer than this gets a "still running" line this often
# What a progress line looks like in a log, for whoever reads one back (tests, log filters).
PLAIN_LINE = re.compile(r"^\d\d:\d\d:\d\d  ")


# Characters that act on a terminal rather than show on it: C0 and C1 controls (ESC starts a colour, a title,
# a screen clear; CR and backspace overwrite what came before) and the bidirectional overrides.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def visible(value: object) -> str:
    """`str(value)` with each control character written as its escape (`\\x1b`, `\\n`): item titles, category
    names and user ids are user data, and printed as they are they could recolour, retitle or clear the
    terminal, or hide what follows them."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), str(value))


def shown(value: object) -> Text:
    """User data as a table cell or a printed piece of text: `visible`, and never read as rich markup (a
    category `[/x]` ended the run's table in rich's MarkupError; `[link=...]` made a link)."""
    return Text(visible(value))


def progress_mode(json_out: bool, stream: TextIO | None = None) -> str:
    """rich, plain or off: GPUCLUST_PROGRESS if set, else from --json and whether `stream` is a terminal."""
    asked = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if asked not in MODES:
        raise UsageError(f"{ENV}={asked!r} is not a progress mode: set it to one of {', '.join(MODES)}, or unset it")
    if asked != "auto":
        return asked
    if json_out:
        return "off"
    return "rich" if (stream or sys.stderr).isatty() else "plain"


@contextmanager
def progress(json_out: bool = False) -> Iterator[Callable[[str], None]]:
    """A callable to pass as the library's `progress`, shown as `progress_mode` says while the block runs."""
    mode = progress_mode(json_out)
    if mode == "off":
        yield lambda _line: None
    elif mode == "rich":
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                      console=console, transient=True) as bar:
            task = bar.add_task("starting", total=None)
            yield lambda line: bar.update(task, description=line)
    else:
        lines = PlainLines(sys.stderr)
        ok = False
        try:
            yield lines
            ok = True
        finally:
            lines.close(ok)


class PlainLines:
    """Timestamped progress lines for a log. Silent for the command's first `delay` seconds; then the step
    in progress, a line as each later step starts, a "still running" line every `every` seconds of a long
    step, and at a successful end the total time. A background thread does the waiting, so a step that
    runs for minutes shows up while it runs, not when the next one starts."""

    def __init__(self, stream: TextIO, delay: float | None = None, every: float = PLAIN_EVERY_S,
                 tick: float = 0.25) -> None:
        self.stream, self.every, self.tick = stream, every, tick
        self.delay = PLAIN_DELAY_S if delay is None else delay
        self.started = time.monotonic()
        self.step: str | None = None
        self.step_started = self.started
        self.last_written = self.started
        self.speaking = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="gpuclust-progress", daemon=True)
        self._thread.start()

    def __call__(self, line: str) -> None:
        with self._lock:
            self.step, self.step_started = " ".join(str(line).split()), time.monotonic()
            if not self._stop.is_set() and self.step_started - self.started >= self.delay:
                self.speaking = True
                self._write(self.step)

    def close(self, ok: bool = True) -> None:
        """Stop the watcher before the command's own last words (its result, or its one error line)."""
        self._stop.set()
        self._thread.join(timeout=2)
        with self._lock:
            if ok and self.speaking:
                self._write(f"done in {_duration(time.monotonic() - self.started)}")
            self.speaking = False

    def _watch(self) -> None:
        while not self._stop.wait(self.tick):
            with self._lock:
                if self._stop.is_set() or self.step is None:
                    continue
                now = time.monotonic()
                if not self.speaking and now - self.started >= self.delay:
                    self.speaking = True
                    self._write(self.step)
                elif self.speaking and now - self.last_written >= self.every:
                    self._write(f"{self.step} (running {_duration(now - self.step_started)})")

    def _write(self, text: str) -> None:
        self.last_written = time.monotonic()
        try:
            self.stream.write(f"{time.strftime('%H:%M:%S')}  {text}\n")
            self.stream.flush()
        except (OSError, ValueError):  # a closed log or pipe must not stop the work it reports on
            self._stop.set()


def _duration(seconds: float) -> str:
    minutes, rest = divmod(int(round(seconds)), 60)
    return f"{minutes}m{rest:02d}s" if minutes else f"{seconds:.1f} s"
