"""`gpuclust report`: one self-contained HTML page whose pictures are really there."""

import base64
import json
import re
import shutil
import struct
import subprocess
import zlib
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

from gpuclust.config import PipelineConfig
from gpuclust.errors import UsageError
from gpuclust.report import build_report
from gpuclust.run import run_files
from tests.helpers import blob_events

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images: dict[str, str] = {}
        self.refs: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for name in ("src", "href"):
            if attrs.get(name):
                self.refs.append(attrs[name])
        if tag == "img":
            self.images[attrs.get("data-name", "?")] = attrs["src"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A finished run on blob data, with a map and a k sweep added the way the pipeline will write them."""
    root = tmp_path_factory.mktemp("report")
    events, items, truth = blob_events(n_users=150)
    for name, frame in (("events", events), ("items", items), ("truth", truth)):
        frame.to_parquet(root / f"{name}.parquet")
    config = PipelineConfig(device="cpu")
    config.cluster.k = 3
    config.cluster.n_init = 1
    out = root / "run"
    run_files(config, root / "events.parquet", out, items=root / "items.parquet", truth=root / "truth.parquet")
    assigned = pd.read_parquet(out / "assignments.parquet")
    rng = np.random.default_rng(0)
    pd.DataFrame({"user_id": assigned["user_id"], "x": rng.normal(size=len(assigned)) + assigned["cluster"],
                  "y": rng.normal(size=len(assigned)), "cluster": assigned["cluster"]}).to_parquet(out / "map.parquet")
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["cluster"]["k_sweep"] = {
        "curve": [{"k": k, "silhouette": 0.5 - 0.05 * abs(k - 3), "calinski_harabasz": 100.0 / k,
                   "davies_bouldin": 0.5 + 0.1 * k, "inertia": 900.0 / k} for k in range(2, 7)],
        "best_k": 3, "rule": "highest silhouette",
    }
    (out / "manifest.json").write_text(json.dumps(manifest))
    clusters = json.loads((out / "clusters.json").read_text())
    for c in clusters["clusters"]:
        c.update(label="wool · scarf · knit", terms=[{"term": "wool", "score": 0.4}], exemplars=[100, 101])
    (out / "clusters.json").write_text(json.dumps(clusters))
    return out


def png_ok(data: bytes) -> tuple[int, int]:
    """Signature, an IHDR first, a CRC-valid IDAT stream that inflates: the PNG is whole. Returns (w, h)."""
    assert data[:8] == PNG_SIGNATURE
    pos, width, height, idat = 8, 0, 0, b""
    while pos < len(data):
        (length,), kind = struct.unpack(">I", data[pos:pos + 4]), data[pos + 4:pos + 8]
        body, crc = data[pos + 8:pos + 8 + length], data[pos + 8 + length:pos + 12 + length]
        assert zlib.crc32(kind + body) == struct.unpack(">I", crc)[0], kind
        if kind == b"IHDR":
            width, height = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
        if kind == b"IEND":
            break
    assert width > 0 and height > 0 and zlib.decompress(idat)
    return width, height


def test_report_embeds_every_picture_and_references_nothing_outside(run_dir):
    path = build_report(run_dir)
    assert path == run_dir / "report.html"
    page = path.read_text(encoding="utf-8")
    parser = Images()
    parser.feed(page)
    assert set(parser.images) == {"map.png", "sizes.png", "lift.png", "kcurve.png"}
    for name, src in parser.images.items():
        assert src.startswith("data:image/png;base64,"), name
        data = base64.b64decode(src.split(",", 1)[1], validate=True)
        png_ok(data)
        assert data == (run_dir / "report" / name).read_bytes()
    assert not re.search(r"https?://", page)
    assert all(ref.startswith(("data:", "#")) for ref in parser.refs)
    assert "<script" not in page.lower() and "@import" not in page and "<link" not in page.lower()
    for text in ("wool · scarf · knit", "Choice of k", "highest silhouette", "users nearest the centre", "silhouette"):
        assert text in page


def test_optional_inputs_missing_drop_their_sections(run_dir, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("assignments.parquet", "clusters.json", "manifest.json"):
        shutil.copy(run_dir / name, bare / name)
    build_report(bare)
    assert (bare / "report" / "kcurve.png").exists()
    manifest = json.loads((bare / "manifest.json").read_text())
    del manifest["cluster"]["k_sweep"]
    (bare / "manifest.json").write_text(json.dumps(manifest))
    page = build_report(bare).read_text()
    parser = Images()
    parser.feed(page)
    assert set(parser.images) == {"sizes.png", "lift.png"}
    assert "Choice of k" not in page and not (bare / "report" / "kcurve.png").exists()


def test_missing_run_or_file_is_a_usage_error_naming_it(tmp_path, run_dir):
    with pytest.raises(UsageError, match="gpuclust run"):
        build_report(tmp_path / "nowhere")
    partial = tmp_path / "partial"
    partial.mkdir()
    shutil.copy(run_dir / "manifest.json", partial / "manifest.json")
    with pytest.raises(UsageError, match=r"assignments\.parquet not found.*gpuclust run"):
        build_report(partial)
    shutil.copy(run_dir / "assignments.parquet", partial / "assignments.parquet")
    (partial / "clusters.json").write_text("{not json")
    with pytest.raises(UsageError, match="clusters.json is not valid JSON"):
        build_report(partial)
    import pandas as pd

    shutil.copy(run_dir / "clusters.json", partial / "clusters.json")
    pd.DataFrame({"cluster": ["a", "b"]}).to_parquet(partial / "assignments.parquet")
    with pytest.raises(UsageError, match="its 'cluster' column holds object, not cluster numbers"):
        build_report(partial)
    shutil.copy(run_dir / "assignments.parquet", partial / "assignments.parquet")
    (partial / "clusters.json").write_text('{"clusters": [{"cluster": null, "size": null}]}')
    with pytest.raises(UsageError, match="cluster entry 0 lacks a whole-number 'cluster'"):
        build_report(partial)


def test_cli_command_prints_the_path(run_dir, capsys):
    from gpuclust.cli.report import report

    report(run=run_dir, out=None, json_out=True)
    printed = json.loads(capsys.readouterr().out)
    assert printed["report"] == str(run_dir / "report.html") and len(printed["images"]) == 4


def test_headless_browser_renders_the_page(run_dir, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("no chromium or chromium-browser on PATH; the HTML and PNG checks above still ran")
    page = build_report(run_dir)
    shot = tmp_path / "shot.png"
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1200,3000",
           f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", page.as_uri()]
    subprocess.run(cmd, check=False, capture_output=True, timeout=120)
    assert shot.is_file(), "chromium wrote no screenshot"
    width, height = png_ok(shot.read_bytes())
    assert (width, height) == (1200, 3000)
    pixels = _decode_rgb(shot.read_bytes())
    # Not blank: many distinct colours (plots, text), not one background colour.
    assert len(np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0)) > 50


def _decode_rgb(data: bytes) -> np.ndarray:
    """Decode a PNG into an array with matplotlib (a dependency of the report)."""
    import io

    from matplotlib import image

    return image.imread(io.BytesIO(data), format="png")
