"""Warnings on the command line: gpuclust's own as one line each, the libraries' only under --debug.

A user error is one line on stderr, and a successful run prints its results, not 23 lines of
scikit-learn, pandas or NumPy warnings the user cannot act on. gpuclust's `InputWarning`s do say
something about the user's data (rows dropped, ids or epoch units reinterpreted), so they are kept
and printed, one line each, once the command has succeeded; when it fails they are dropped and the
error line stands alone. Their counts are in the manifest's steps either way.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from gpuclust.errors import InputWarning


@contextmanager
def quiet_warnings(debug: bool = False) -> Iterator[None]:
    """Hold every warning raised inside; on success print the InputWarnings as 'warning: ...' lines.
    Under `debug` nothing is held: Python shows every warning where it happens."""
    if debug:
        yield
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")  # each distinct warning once, as Python shows them
        yield
    shown: set[str] = set()
    for w in caught:
        message = str(w.message)
        if issubclass(w.category, InputWarning) and message not in shown:
            shown.add(message)
            print(f"warning: {message}", file=sys.stderr)
