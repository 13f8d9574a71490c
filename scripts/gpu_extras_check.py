"""Resolve each GPU extra of pyproject.toml against a package index without installing anything.

`pip install --dry-run --report` with `--use-feature=fast-deps` reads each wheel's metadata by HTTP range
requests, so the multi-GB CUDA wheels stay on the index: a mirror that serves no PEP 658 metadata files (this
project's registry serves none) otherwise makes pip download every wheel whole, 4-5 GB into its temporary
folder, and a CI machine with less free disk failed with "No space left on device". Each extra must resolve without backtracking (pins that fight
make pip backtrack: an unpinned `gpu` extra once took 295 s) and to one CUDA major: the RAPIDS, CuPy,
FAISS and torch wheels of one set must share a CUDA runtime. The machine's pip configuration (local
wheel folders, constraints) is ignored, so the answer is what a user on a plain index gets.

    python scripts/gpu_extras_check.py [--extra gpu-cu12] [--index-url URL] [--max-rejected 20]

Backtracking is measured as the candidates pip rejected for a conflict (from its log), which does not
depend on the network: on this 2-core shared machine the wall time (mostly metadata fetches, about 136
packages) ranged from 47 to 190 s for the same 6 rejected candidates. The wall time is printed and only
bounded loosely (`--max-seconds`, 540: it runs beside the 9-minute suite, and the network, not the resolver, sets its pace) so that a hung resolver still fails.

The CUDA 12 set takes torch from PyTorch's cu129 index (PyPI has no torch on CUDA >= 12.9, which
RAPIDS 26.10 needs); an extra whose index cannot be reached is skipped, saying so.

Exit 0: every extra checked resolved, without backtracking, to its CUDA major; 1: one did not (the reason on stderr);
3: none failed but at least one could not be checked (an index unreachable, the disk full).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYPI = "https://pypi.org/simple"
# extra -> (its CUDA major, the extra indexes it needs beside PyPI, the project each index must serve)
EXTRAS = {
    "gpu-cu12": (12, [("https://download.pytorch.org/whl/cu129", "torch")]),
    "gpu-cu13": (13, []),
}
UNREACHABLE = 3

# Where a wheel says which CUDA it is built on: a name suffix (cudf-cu12, nvidia-cudnn-cu13, cupy-cuda12x)
# or the version of a package that follows CUDA's own numbering (cuda-toolkit 13.0.3, nvidia-cuda-runtime
# 13.0.96). Library wheels such as nvidia-cufft 12.2 (CUDA 13's cuFFT) number themselves and say nothing.
_SUFFIX = re.compile(r"-cu(?:da)?(\d+)x?$")
_TOOLKIT = re.compile(r"^(cuda-toolkit|cuda-bindings|cuda-python|nvidia-cuda-(runtime|nvrtc|cupti)|nvidia-nvjitlink)$")


def requirements(extra: str, pyproject: Path = ROOT / "pyproject.toml") -> list[str]:
    """The project's dependencies plus the extra's, self-references (`gpuclust[gpu-cu12]`) expanded."""
    project = tomllib.loads(pyproject.read_text("utf-8"))["project"]
    extras = project["optional-dependencies"]
    if extra not in extras:
        raise SystemExit(f"pyproject.toml has no extra {extra!r}; it has {', '.join(sorted(extras))}")
    out, todo, seen = list(project["dependencies"]), [extra], set()
    while todo:
        name = todo.pop()
        seen.add(name)
        for req in extras[name]:
            own = re.fullmatch(rf"{re.escape(project['name'])}\[([^\]]+)\]", req.replace(" ", ""))
            if own:
                todo += [e for e in own.group(1).split(",") if e not in seen]
            else:
                out.append(req)
    return out


def cuda_majors(report: dict) -> dict[int, list[str]]:
    """CUDA major -> the resolved packages built on it."""
    found: dict[int, list[str]] = {}
    for item in report["install"]:
        name = item["metadata"]["name"].lower().replace("_", "-")
        version = item["metadata"]["version"]
        suffix = _SUFFIX.search(name)
        if suffix:
            found.setdefault(int(suffix.group(1)), []).append(f"{name} {version}")
        elif _TOOLKIT.match(name) and re.match(r"\d+\.", version):
            found.setdefault(int(version.split(".")[0]), []).append(f"{name} {version}")
    return found


def reachable(index_url: str, project: str = "pip", timeout: float = 10.0) -> str | None:
    """None when the index answers for `project`; else why not."""
    try:
        with urllib.request.urlopen(f"{index_url.rstrip('/')}/{project}/", timeout=timeout) as answer:
            answer.read(1)
    except (OSError, urllib.error.URLError) as exc:
        return f"{index_url} unreachable ({exc})"
    return None


def resolve(reqs: list[str], index_url: str, extra_urls: list[str], timeout: float) -> tuple[dict, float, int]:
    """pip's dry-run report, the seconds it took (killed at `timeout`) and the candidates it rejected."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull  # no local wheel folders, extra indexes or constraints
    with tempfile.TemporaryDirectory() as tmp:
        report, log = Path(tmp) / "report.json", Path(tmp) / "pip.log"
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--use-feature=fast-deps", "--ignore-installed",
               "--quiet", "--disable-pip-version-check", "--only-binary", ":all:", "--index-url", index_url,
               *(arg for url in extra_urls for arg in ("--extra-index-url", url)),
               "--report", str(report), "--log", str(log), *reqs]  # pip's own cache: metadata once fetched is kept
        start = time.perf_counter()
        try:
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise ResolveError(f"pip did not resolve within {timeout:.0f} s (backtracking?)") from None
        seconds = time.perf_counter() - start
        if done.returncode != 0 and "No space left on device" in done.stderr:
            # The machine, not the pins: fast-deps falls back to whole wheels where a server refuses ranges.
            raise Unreachable(f"not checked: pip filled the disk of {tempfile.gettempdir()} (free some space)")
        if done.returncode != 0:
            tail = " | ".join(line.strip() for line in done.stderr.strip().splitlines()[-4:])
            raise ResolveError(f"pip could not resolve it: {tail}")
        rejected = log.read_text("utf-8", "replace").count("Will try a different candidate")
        return json.loads(report.read_text("utf-8")), seconds, rejected


class ResolveError(RuntimeError):
    pass


class Unreachable(RuntimeError):
    pass


def check(extra: str, index_url: str, max_rejected: int = 20, max_seconds: float = 540.0) -> str:
    """One line saying what the extra resolved to; ResolveError when it breaks a rule."""
    want, extra_indexes = EXTRAS[extra]
    for url, project in [(index_url, "pip"), *extra_indexes]:
        why = reachable(url, project)
        if why:
            raise Unreachable(f"{extra}: not checked: {why}")
    try:
        report, seconds, rejected = resolve(requirements(extra), index_url, [url for url, _ in extra_indexes],
                                            timeout=max_seconds)
    except Unreachable as exc:
        raise Unreachable(f"{extra}: {exc}") from None
    majors = cuda_majors(report)
    picked = {item["metadata"]["name"].lower(): item["metadata"]["version"] for item in report["install"]}
    if rejected > max_rejected:
        raise ResolveError(f"{extra}: pip rejected {rejected} candidates before it resolved (bound {max_rejected}): "
                           "the pins fight; pin the packages named in `pip install --dry-run` output")
    if set(majors) != {want}:
        mixed = "; ".join(f"CUDA {m}: {', '.join(sorted(p)[:6])}" for m, p in sorted(majors.items()))
        raise ResolveError(f"{extra}: expected CUDA {want} only, resolved {mixed or 'no CUDA wheel'}")
    return (f"{extra}: {len(picked)} wheels, all CUDA {want} ({len(majors[want])} CUDA packages), "
            f"torch {picked.get('torch', '-')}, cudf {picked.get(f'cudf-cu{want}', '-')}, "
            f"resolved in {seconds:.1f} s, {rejected} candidates rejected")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--extra", action="append", choices=sorted(EXTRAS), help="default: every GPU extra")
    parser.add_argument("--index-url", default=os.environ.get("GPUCLUST_CHECK_INDEX", PYPI))
    parser.add_argument("--max-rejected", type=int, default=20)
    parser.add_argument("--max-seconds", type=float, default=540.0)
    args = parser.parse_args(argv)
    failed = skipped = False
    for extra in args.extra or sorted(EXTRAS):
        try:
            print(check(extra, args.index_url, args.max_rejected, args.max_seconds), flush=True)
        except ResolveError as exc:
            print(f"gpu extras: FAILED {exc}", file=sys.stderr, flush=True)
            failed = True
        except Unreachable as exc:
            print(f"gpu extras: {exc}", file=sys.stderr, flush=True)
            skipped = True
    return 1 if failed else UNREACHABLE if skipped else 0


if __name__ == "__main__":
    sys.exit(main())
