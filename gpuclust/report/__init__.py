"""`gpuclust report`: one self-contained HTML page and PNGs for a finished run."""

from gpuclust.report.html import build_report, load_run

__all__ = ["build_report", "load_run"]
