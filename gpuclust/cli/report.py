"""`gpuclust report --run DIR`: a thin wrapper over `gpuclust.report.build_report`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer


def report(
    run: Annotated[Path, typer.Option("--run", help="Output directory of a finished `gpuclust run`.")],
    out: Annotated[Path | None, typer.Option("--out", help="Where to write the HTML (default: RUN/report.html).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")] = False,
) -> None:
    """Write one self-contained report.html (pictures embedded) and its PNGs for a finished run."""
    from gpuclust.report import build_report
    from gpuclust.report.html import IMAGE_DIR, IMAGES

    path = build_report(run, out)
    images = [str(run / IMAGE_DIR / name) for name in IMAGES if (run / IMAGE_DIR / name).is_file()]
    if json_out:
        print(json.dumps({"report": str(path), "images": images}, indent=2))
    else:
        print(path)
