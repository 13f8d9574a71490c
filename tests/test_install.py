"""The install story: the GPU extras pin one CUDA runtime (their dry-run resolution against PyPI is
scripts/gpu_extras_check.py, run by .ci/run), environment.yml names what pip installs, and setup.sh finds a
CPU torch on a local wheel folder or a plain index."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


extras_check = _script("gpu_extras_check")
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]

# pip name -> conda name, where they differ; pip-only extras of a name are dropped before mapping.
CONDA_NAME = {"cudf-cu12": "cudf", "cuml-cu12": "cuml", "dask-cudf-cu12": "dask-cudf", "cupy-cuda12x": "cupy",
              "faiss-gpu-cu12": "faiss-gpu", "torch": "pytorch-gpu", "uvicorn": "uvicorn-standard"}
# conda entries with no pip requirement of their own: the interpreter, the CUDA pin, pip itself, and what
# pip gets through an extra or a dependency (cuml[dask] -> raft-dask, dask[distributed], the MiniLM
# package -> sentence-transformers: listed so that pip does not pull torch from PyPI into the conda env).
CONDA_ONLY = {"python", "cuda-version", "pip", "raft-dask", "distributed", "sentence-transformers"}
ENV_EXTRAS = ("gpu-cu12", "dev", "dask", "serve", "umap")


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].strip().lower()


def _environment() -> tuple[dict[str, str], list[str]]:
    """conda name -> its spec, and the pip section."""
    env = yaml.safe_load((ROOT / "environment.yml").read_text("utf-8"))
    conda, pip = {}, []
    for entry in env["dependencies"]:
        if isinstance(entry, dict):
            pip += entry["pip"]
        else:
            conda[_name(entry)] = entry
    return conda, pip


def test_environment_yml_names_the_pip_extras_packages():
    conda, pip = _environment()
    assert "-e ." in pip
    wanted = {_name(r) for r in extras_check.requirements("gpu-cu12")}
    for extra in ENV_EXTRAS[1:]:
        wanted |= {_name(r) for r in PROJECT["optional-dependencies"][extra]}
    pip_only = {_name(r) for r in pip if not r.startswith("-")}
    expected = {CONDA_NAME.get(n, n) for n in wanted - pip_only}
    assert set(conda) - CONDA_ONLY == expected, (
        f"only in environment.yml: {sorted(set(conda) - CONDA_ONLY - expected)}; "
        f"only in pyproject.toml: {sorted(expected - set(conda))}")


def test_environment_yml_pins_the_rapids_release_of_the_cu12_extra():
    conda, _ = _environment()
    pins = {_name(r): r for r in extras_check.requirements("gpu-cu12")}
    for pip_name in ("cudf-cu12", "cuml-cu12", "dask-cudf-cu12", "dask-cuda"):
        release = re.search(r"==(\d+\.\d+)\.\*", pins[pip_name]).group(1)
        assert conda[CONDA_NAME.get(pip_name, pip_name)].endswith(f"={release}"), (pip_name, release)
    assert conda["cuda-version"].startswith("cuda-version>=12") and conda["cuda-version"].endswith("<13")


def test_gpu_is_the_cu12_set():
    assert set(extras_check.requirements("gpu")) == set(extras_check.requirements("gpu-cu12"))


@pytest.mark.parametrize("extra", sorted(extras_check.EXTRAS))
def test_each_gpu_extra_pins_one_cuda_major_and_one_rapids_release(extra):
    """What the extra names itself; the dry run below checks what those names pull in."""
    major, _ = extras_check.EXTRAS[extra]
    reqs = PROJECT["optional-dependencies"][extra]
    suffixes = {int(m.group(1)) for r in reqs if (m := extras_check._SUFFIX.search(_name(r)))}
    assert suffixes == {major}
    rapids = {re.search(r"==([\d.]+\*)", r).group(1) for r in reqs if _name(r).startswith(("cudf", "cuml", "dask-cud"))}
    assert len(rapids) == 1, rapids


def test_cuda_majors_read_from_a_report():
    report = {"install": [{"metadata": {"name": n, "version": v}} for n, v in [
        ("cudf-cu12", "26.10.2"), ("cupy-cuda12x", "14.2.0"), ("nvidia-cufft", "12.2.0.57"),
        ("cuda-toolkit", "13.0.3"), ("numpy", "2.4.0"), ("nvidia-nvjitlink-cu12", "12.9.86")]]}
    assert extras_check.cuda_majors(report) == {
        12: ["cudf-cu12 26.10.2", "cupy-cuda12x 14.2.0", "nvidia-nvjitlink-cu12 12.9.86"],
        13: ["cuda-toolkit 13.0.3"]}  # nvidia-cufft numbers itself: not a CUDA version


def test_ci_runs_the_dry_run_resolution_of_the_gpu_extras():
    """The resolution itself waits on the network (47-152 s here), so .ci/run runs it beside the CPU-bound suite
    rather than inside it; a failure (exit 1) fails CI, an unreachable index (exit 3) is reported."""
    ci = (ROOT / ".ci" / "run").read_text("utf-8")
    assert "scripts/gpu_extras_check.py" in ci and '"$extras_rc" = 1' in ci


def test_setup_sh_takes_a_cpu_torch_from_a_local_wheel_or_the_cpu_index(tmp_path):
    """The decision setup.sh makes, on wheel folders standing in for both kinds of index."""
    local, plain = tmp_path / "local", tmp_path / "plain"
    _fake_torch(local, "2.13.0+cpu", [])
    _fake_torch(plain, "2.13.0", ["nvidia-cublas-cu12==12.8.4.1", "cuda-toolkit==13.0.3"])
    for folder, cpu in ((local, True), (plain, False)):
        done = subprocess.run(["bash", "-c", _function("is_cpu_build") + '\nis_cpu_build --no-index --find-links "$1"',
                               "sh", str(folder)], cwd=tmp_path, env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
                              "TORCH": "torch==2.13.0", "PIP_CONFIG_FILE": "/dev/null"},
                              capture_output=True, text=True, timeout=120)
        assert (done.returncode == 0) is cpu, (folder.name, done.stderr)


def _function(name: str) -> str:
    """A bash function of setup.sh, with .venv/bin/python standing for the interpreter running the tests."""
    text = (ROOT / "scripts" / "setup.sh").read_text("utf-8")
    body = re.search(rf"^{name}\(\) \{{\n.*?^\}}\n", text, re.S | re.M).group(0)
    return body.replace(".venv/bin/python", sys.executable)


def _fake_torch(folder: Path, version: str, requires: list[str]) -> None:
    """A metadata-only wheel named torch, enough for pip's dry run to pick it and report its requirements."""
    import base64
    import hashlib
    import zipfile

    folder.mkdir()
    dist = f"torch-{version}.dist-info"
    files = {f"{dist}/METADATA": "Metadata-Version: 2.1\nName: torch\nVersion: " + version + "\n"
             + "".join(f"Requires-Dist: {r}\n" for r in requires),
             f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = "".join(f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(body.encode()).digest()).rstrip(b'=').decode()},"
                     f"{len(body)}\n" for name, body in files.items()) + f"{dist}/RECORD,,\n"
    with zipfile.ZipFile(folder / f"torch-{version}-py3-none-any.whl", "w") as whl:
        for name, body in {**files, f"{dist}/RECORD": record}.items():
            whl.writestr(name, body)
