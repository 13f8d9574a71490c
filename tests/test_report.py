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
from gpuclust.report.fmt import fmt
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
    # one inline script, loading nothing; no stylesheet or import from elsewhere
    assert page.lower().count("<script") == 1 and "<script>" in page and "@import" not in page
    assert "<link" not in page.lower()
    for text in ("wool · scarf · knit", "Choice of k", "highest silhouette", "users nearest the centre", "silhouette"):
        assert text in page
    # what the clusters are and are worth comes before how the run went
    assert page.index("Clusters at a glance") < page.index("Anomalies") < page.index("Run details") \
        < page.index("Timings")


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
    # a run written before anomaly scores reached the assignments: the top list still shows
    pd.read_parquet(bare / "assignments.parquet").drop(columns=["anomaly_score"]).to_parquet(
        bare / "assignments.parquet")
    page = build_report(bare).read_text()
    assert "id='anomalies-table'" in page and "score above" not in page


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


def _chromium():
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("no chromium or chromium-browser on PATH; the HTML and PNG checks above still ran")
    return browser


def test_headless_browser_renders_the_page(run_dir, tmp_path):
    browser = _chromium()
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


# Put first in <head>: every error and console.error of the page is kept.
CATCH = ("<script>window.__errors=[];addEventListener('error',function(e){__errors.push(String(e.message))});"
         "var __ce=console.error;console.error=function(){__errors.push([].join.call(arguments,' '));"
         "__ce.apply(console,arguments)};</script>")
# Put last in <body>: uses the page as a reader would (clicks, typing, picking) and writes what it saw.
DRIVE = """<script>
(function(){
function col(t,i){return [].map.call(t.tBodies[0].rows,function(r){return r.cells[i].getAttribute('data-v')})}
function shown(t){return [].filter.call(t.tBodies[0].rows,function(r){return !r.hidden}).length}
var t=document.getElementById('clusters'),heads=t.tHead.rows[0].cells,users=-1,name=-1;
[].forEach.call(heads,function(h,i){if(h.textContent==='users')users=i;if(h.textContent==='name')name=i;});
var out={tables:document.querySelectorAll('table.data').length,errors:window.__errors};
heads[users].click();out.first=col(t,users).map(Number);
heads[users].click();out.second=col(t,users).map(Number);
heads[name].click();out.names=col(t,name);
var f=document.querySelector("input.filter[data-for='clusters']");
f.value=t.tBodies[0].rows[0].cells[name].textContent;f.dispatchEvent(new Event('input'));
out.filtered=shown(t);out.total=t.tBodies[0].rows.length;
f.value='no such cluster';f.dispatchEvent(new Event('input'));out.none=shown(t);
out.csv=[].map.call(document.querySelectorAll('a.csv'),function(a){return [a.getAttribute('download'),
  a.href.slice(0,22)]});
var b=document.getElementById('compare-b');b.value=b.options[2].value;b.dispatchEvent(new Event('change'));
out.compared=[].filter.call(document.querySelectorAll('#compare-table thead th[data-c]'),
  function(h){return !h.hidden}).map(function(h){return h.getAttribute('data-c')});
out.options=[].map.call(b.options,function(o){return o.value});
out.errors=window.__errors;
var pre=document.createElement('pre');pre.id='drive-result';pre.textContent=JSON.stringify(out);
document.body.appendChild(pre);
})();
</script>"""


def test_headless_browser_sorts_filters_compares_and_offers_csv(run_dir, tmp_path):
    """The page's own script, run in Chromium: headings sort, the filter hides rows, every table has its
    CSV link, the comparison shows the two picked clusters, and nothing goes to the console as an error."""
    browser = _chromium()
    page = build_report(run_dir).read_text(encoding="utf-8")
    driven = tmp_path / "driven.html"
    driven.write_text(page.replace("<head>", "<head>" + CATCH, 1).replace("</body>", DRIVE + "</body>", 1),
                      encoding="utf-8")
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
           f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", driven.as_uri()]
    done = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="drive-result">(.*?)</pre>', done.stdout, re.S)
    assert found, f"the page did not run to the end: {done.stderr[-2000:]}"
    import html as html_module

    seen = json.loads(html_module.unescape(found.group(1)))
    assert seen["errors"] == [] and "Uncaught" not in done.stderr
    assert seen["first"] == sorted(seen["first"], reverse=True) and seen["second"] == sorted(seen["first"])
    assert seen["names"] == sorted(seen["names"])
    assert seen["filtered"] >= 1 and seen["none"] == 0 and seen["total"] == 3
    assert len(seen["csv"]) == seen["tables"] == 3
    assert {name for name, _ in seen["csv"]} == {"clusters.csv", "compare.csv", "anomalies.csv"}
    assert all(href == "data:text/csv;charset=" for _, href in seen["csv"])
    assert seen["compared"] == ["all", seen["options"][0], seen["options"][2]]


def _decode_rgb(data: bytes) -> np.ndarray:
    """Decode a PNG into an array with matplotlib (a dependency of the report)."""
    import io

    from matplotlib import image

    return image.imread(io.BytesIO(data), format="png")


def _csv(page: str, table_id: str) -> list[dict]:
    """The rows of a table's CSV download, decoded from its data: link."""
    import csv
    import html
    import io
    from urllib.parse import unquote

    link = re.search(rf"data-for='{table_id}'.*?href='(data:text/csv[^']*)'", page, re.S).group(1)
    data = unquote(html.unescape(link).split(",", 1)[1])
    return list(csv.DictReader(io.StringIO(data)))


def test_value_share_beside_user_share_matches_the_events(run_dir):
    """Value share is each cluster's part of the summed event value, computed from the events themselves."""
    events = pd.read_parquet(run_dir.parent / "events.parquet")
    assigned = pd.read_parquet(run_dir / "assignments.parquet")
    per_cluster = events.merge(assigned, on="user_id").groupby("cluster")["value"].sum()
    expected = (per_cluster / per_cluster.sum()).to_dict()
    clusters = json.loads((run_dir / "clusters.json").read_text())["clusters"]
    for c in clusters:
        assert c["value_share"] == pytest.approx(expected[c["cluster"]], abs=1e-4)
    rows = _csv(build_report(run_dir).read_text(encoding="utf-8"), "clusters")
    assert [int(r["cluster"]) for r in rows] == [c["cluster"] for c in clusters]
    for row, c in zip(rows, clusters, strict=True):
        assert float(row["value share"]) == c["value_share"] and int(row["users"]) == c["size"]
        assert float(row["user share"]) == c["share"]


def test_behaviour_figures_say_what_they_measure_and_the_population_figure(run_dir):
    page = build_report(run_dir).read_text(encoding="utf-8")
    population = json.loads((run_dir / "clusters.json").read_text())["population"]
    # "spend per user" of a cluster beside all users' spend per user, in the card and the comparison
    assert "spend per user <span class='muted'>(monetary)</span>" in page
    assert f"{population['monetary']:,.2f}" in page and "days since the user&#x27;s last event" in page
    compare = _csv(page, "compare-table")
    spend = next(r for r in compare if r["figure"] == "spend per user")
    assert float(spend["all users"]) == pytest.approx(population["monetary"])
    assert {"figure", "all users"} < set(compare[0]) and len(compare[0]) == 2 + 3  # every cluster in the CSV


def test_anomalies_show_the_top_users_and_withhold_small_clusters(run_dir, tmp_path):
    doc = json.loads((run_dir / "clusters.json").read_text())
    page = build_report(run_dir).read_text(encoding="utf-8")
    rows = _csv(page, "anomalies-table")
    assert [r["user"] for r in rows] == [str(a["user_id"]) for a in doc["anomalies"]] and rows
    scores = pd.read_parquet(run_dir / "assignments.parquet")["anomaly_score"]
    assert f"<b>{int((scores > 3.5).sum()):,}</b> of {len(scores):,} users" in page
    # privacy on, one cluster too small: its anomalous users are left out, the rest stay
    private = tmp_path / "private"
    shutil.copytree(run_dir, private)
    small = doc["anomalies"][0]["cluster"]
    doc["privacy"] = {"pseudonymised": True, "method": "HMAC-SHA256", "key_fingerprint": "ab12", "min_group_size": 10}
    doc["clusters"] = [{"cluster": c["cluster"], "size": None, "share": None, "suppressed": "fewer than 10 users"}
                       if c["cluster"] == small else c for c in doc["clusters"]]
    (private / "clusters.json").write_text(json.dumps(doc))
    page = build_report(private).read_text(encoding="utf-8")
    kept = _csv(page, "anomalies-table")
    assert kept and all(int(r["cluster"]) != small for r in kept)
    assert "user (pseudonymised)" in kept[0] and "are left out" in page
    assert len(kept) == sum(a["cluster"] != small for a in doc["anomalies"])


def test_the_overview_says_how_many_users_withheld_clusters_hold_and_counts_them_in_the_total(run_dir, tmp_path):
    private = tmp_path / "private"
    shutil.copytree(run_dir, private)
    doc = json.loads((private / "clusters.json").read_text())
    sizes = pd.read_parquet(private / "assignments.parquet")["cluster"].value_counts()
    small = int(sizes.index[-1])
    doc["clusters"] = [{"cluster": c["cluster"], "size": None, "share": None, "suppressed": "fewer than 10 users"}
                       if c["cluster"] == small else c for c in doc["clusters"]]
    (private / "clusters.json").write_text(json.dumps(doc))
    page = build_report(private).read_text(encoding="utf-8")
    glance = page[page.index("id='glance'"):page.index("id='clusters'")]
    assert f"{int(sizes[small]):,} users are in clusters whose figures are withheld ({small}: " in glance
    # the value total is every user's, as the headline's: the withheld cluster's users are not dropped from it
    mean = doc["population"]["monetary"]
    total = re.search(r"total ([\d,.]+)\.", glance).group(1)
    assert total == fmt(mean * int(sizes.sum())) and f"<b>{total}</b>" in page  # the headline's total value
    assert total != fmt(mean * int(sizes.drop(small).sum()))
    shown = build_report(run_dir).read_text(encoding="utf-8")
    assert "clusters whose figures are withheld" not in shown and f"total {total}." in shown


def test_a_cluster_card_leads_with_its_name_and_description(run_dir, tmp_path):
    named = tmp_path / "named"
    shutil.copytree(run_dir, named)
    doc = json.loads((named / "clusters.json").read_text())
    doc["clusters"][0].update(name="Knitwear fans", description="Buy scarves & wool, mostly in winter.")
    (named / "clusters.json").write_text(json.dumps(doc))
    page = build_report(named).read_text(encoding="utf-8")
    cid = doc["clusters"][0]["cluster"]
    card = page[page.index(f"id='cluster-{cid}'"):]
    assert card.index("Knitwear fans") < card.index("Buy scarves &amp; wool") < card.index("wool · scarf · knit")


def test_the_map_projection_shows_the_clusters_apart():
    """Clusters apart along a few directions, much spread along others: plain PCA shows one blob, the
    plane of the cluster centres shows the clusters."""
    from sklearn.metrics import silhouette_score

    from gpuclust.backend import cpu_backend
    from gpuclust.explain.projection import project_2d

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 400)
    x = rng.normal(size=(1200, 20))
    x[:, :3] *= 6.0  # within-cluster spread dominates these directions
    x[:, 3:6] += 4.0 * np.eye(3)[labels]  # the clusters differ along others
    users = pd.DataFrame({"user_idx": np.arange(1200, dtype=np.int32), "user_id": np.arange(1200) + 7})
    out = project_2d(x.astype(np.float32), labels, users, cpu_backend(), sample=1000, seed=0)
    assert len(out) == 1000 and out["user_id"].min() >= 7
    assert silhouette_score(out[["x", "y"]].to_numpy(), out["cluster"].to_numpy()) > 0.4
    centred = x - x.mean(axis=0)
    pca = centred @ np.linalg.svd(centred, full_matrices=False)[2][:2].T
    assert silhouette_score(pca, labels) < 0.05  # what the map showed before: a blob
