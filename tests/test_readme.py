"""The README's examples are tests: every ```bash/```sh and ```python block runs, in README order, in one
scratch folder, with `gpuclust` and `python` resolving to this checkout.

A block may be skipped only by a marker on the line before it, `<!-- readme-test: skip (why) -->`; the
skips show in pytest's summary with their reasons. A block fails its test when any command in it fails
(bash -e). A `# {...}` comment after a command is an expected JSON answer: the block's output must hold a
JSON object with the same keys, whose empty lists are empty too (an `"unplaced":[]` that comes back
non-empty fails). Servers use a free port in place of 8000 and are stopped with the block.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
SHELLS = {"bash", "sh", "shell"}
_FENCE = re.compile(r"^```(\w*)\s*$")
_MARK = re.compile(r"^<!--\s*readme-test:\s*skip\s*\((.+)\)\s*-->\s*$")


@dataclass
class Block:
    language: str
    line: int  # of the opening fence, 1-based
    code: str
    skip: str | None  # the marker's reason

    @property
    def name(self) -> str:
        return f"{self.language}-line-{self.line}"


def blocks(text: str) -> list[Block]:
    """The fenced blocks of a Markdown text, each with the skip marker just before it, if any."""
    out, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        fence = _FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        before = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        mark = _MARK.match(before.strip())
        out.append(Block(fence.group(1).lower(), i + 1, "\n".join(lines[i + 1:end]) + "\n",
                         mark.group(1) if mark else None))
        i = end + 1
    return out


def expected_answers(code: str) -> list[dict]:
    """The `# {...}` comments of a block, parsed."""
    return [json.loads(line.strip()[1:]) for line in code.splitlines() if line.strip().startswith("# {")]


def check_answers(expected: list[dict], output: str) -> None:
    found = list(_json_objects(output))
    for want in expected:
        match = next((got for got in found if set(got) == set(want)), None)
        assert match is not None, f"no answer with the keys {sorted(want)} in the output:\n{output[-2000:]}"
        for key, value in want.items():
            if value == []:
                assert match[key] == [], f"{key} should be empty, got {match[key]}"


def _json_objects(text: str):
    decoder = json.JSONDecoder()
    for start in (m.start() for m in re.finditer(r"\{", text)):
        try:
            obj, _ = decoder.raw_decode(text, start)
        except ValueError:
            continue
        if isinstance(obj, dict):
            yield obj


README_BLOCKS = [b for b in blocks(README.read_text("utf-8")) if b.language in SHELLS | {"python"}]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A scratch folder that looks like a clone with its .venv: `gpuclust` and `python` run this checkout."""
    home = tmp_path_factory.mktemp("readme")
    bin_dir = home / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    for name, command in (("gpuclust", f'"{sys.executable}" -m gpuclust.cli.app'), ("python", f'"{sys.executable}"')):
        (bin_dir / name).write_text(f'#!/bin/sh\nexec {command} "$@"\n')
        (bin_dir / name).chmod(0o755)
    (bin_dir / "activate").write_text(f'export PATH="{bin_dir}:$PATH"\n')
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}", "NO_COLOR": "1", "COLUMNS": "120"}
    return home, env


def test_the_readme_has_runnable_blocks_and_every_skip_says_why():
    assert [b for b in README_BLOCKS if b.skip is None and b.language in SHELLS]
    assert [b for b in README_BLOCKS if b.skip is None and b.language == "python"]
    assert all(len(b.skip) > 10 for b in README_BLOCKS if b.skip is not None)


@pytest.mark.slow
@pytest.mark.parametrize("block", README_BLOCKS, ids=[b.name for b in README_BLOCKS])
def test_readme_block_runs(block: Block, workspace):
    if block.skip:
        pytest.skip(f"README line {block.line}: {block.skip}")
    home, env = workspace
    code = block.code
    if "localhost:8000" in code or "--port 8000" in code:
        if shutil.which("curl") is None:
            pytest.skip(f"README line {block.line}: curl is not installed")
        code = code.replace("8000", str(_free_port()))
    if block.language == "python":
        cmd = [sys.executable, "-c", code]
    else:
        cmd = ["bash", "-euo", "pipefail", "-c", code]
    proc = subprocess.Popen(cmd, cwd=home, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # its own process group: a server it left is stopped below
    try:
        output, _ = proc.communicate(timeout=600)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait()
    assert proc.returncode == 0, f"README line {block.line} failed (exit {proc.returncode}):\n{output[-4000:]}"
    check_answers(expected_answers(block.code), output)


def test_expected_answers_catch_an_unplaced_user():
    """What caught the README's own /v1/assign example: item ids outside its model left the user unplaced."""
    want = expected_answers('curl ...\n# {"users":[{"user_id":"u1"}],"unplaced":[]}\n')
    check_answers(want, 'noise {"users":[{"user_id":"u1","cluster":2}],"unplaced":[]} more')
    with pytest.raises(AssertionError, match="unplaced should be empty"):
        check_answers(want, '{"users":[],"unplaced":[{"user_id":"u1","reason":"no known items"}]}')
    with pytest.raises(AssertionError, match="no answer"):
        check_answers(want, '{"error": "unsupported media type"}')


def test_skip_markers_bind_to_the_next_block_only():
    text = ("a\n<!-- readme-test: skip (needs a GPU here) -->\n```bash\necho 1\n```\n\n```python\nprint(2)\n```\n")
    first, second = blocks(text)
    assert (first.skip, first.code, first.line) == ("needs a GPU here", "echo 1\n", 3)
    assert second.skip is None and second.language == "python"
