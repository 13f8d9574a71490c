"""`gpuclust run` against the script a data scientist would write instead, on the same data, same machine.

    python benchmarks/event_table_bench.py --users 200000 --events-per-user 40 --k 20 --name event-table-cpu-200k

Per size: `gpuclust synth` once; then, each in a fresh process, (1) preprocessing alone (read + clean
into the event table), (2) `gpuclust run --features behaviour,tfidf` end to end (explanations, segments,
model and outputs written), and (3) the plain script: pandas -> CSR -> TF-IDF -> TruncatedSVD(64) ->
KMeans(n_init=1) -> labels to Parquet; and (4) the same script plus the item-kNN a data scientist would add
for recommendations (SciPy's XᵀX of the column-normalised binary matrix, each item's 50 best), the work
the run's personal recommender does (it also tunes the neighbourhood on a held-out split). Wall seconds (gpuclust's and the script's process, imports
included; the script's own timer, without its imports, as `script.seconds`), peak RSS, the run's stage seconds and ARI against
the planted groups go to benchmarks/results/NAME.{json,md}, with the load average seen at the start.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

PREPROCESS = """
import sys, time, json, warnings
warnings.simplefilter("ignore")
from gpuclust.backend import resolve_backend
from gpuclust.config import PipelineConfig
from gpuclust.io.inputs import read_inputs
from gpuclust.preprocess.clean import Preprocessor
backend = resolve_backend(sys.argv[2]); cfg = PipelineConfig(device=sys.argv[2])
t0 = time.perf_counter(); inputs = read_inputs(backend.frame, cfg.columns, sys.argv[1]); t1 = time.perf_counter()
data = Preprocessor(cfg.preprocess).run(inputs.events, backend); t2 = time.perf_counter()
print(json.dumps({"read_s": t1 - t0, "preprocess_s": t2 - t1, "events": len(data.table), "users": data.n_users,
                  "array_library": type(data.table.user).__module__.split(".")[0]}))
"""

SCRIPT = """
import sys, time, json
import numpy as np, pandas as pd, scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfTransformer
from sklearn.decomposition import TruncatedSVD
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score
t0 = time.perf_counter()
ev = pd.read_parquet(sys.argv[1], columns=["user_id", "item_id", "event_type"])
weights = ev["event_type"].astype(str).map({"view": 1.0, "click": 2.0, "cart": 3.0, "purchase": 5.0}).fillna(0.0)
users, user_ids = pd.factorize(ev["user_id"])
items, _ = pd.factorize(ev["item_id"])
x = sp.csr_matrix((weights.to_numpy(np.float32), (users, items)), shape=(len(user_ids), items.max() + 1))
x = TfidfTransformer().fit_transform(x)
z = TruncatedSVD(64, random_state=0).fit_transform(x)
labels = KMeans(int(sys.argv[3]), n_init=1, random_state=0).fit_predict(z)
pd.DataFrame({"user_id": user_ids, "cluster": labels}).to_parquet(sys.argv[4])
if len(sys.argv) > 5:  # item-kNN: cosine over the binary users x items matrix, each item's 50 best
    from sklearn.preprocessing import normalize
    b = x.copy()
    b.data[:] = 1.0
    xn = normalize(b, axis=0)
    sim = (xn.T @ xn).tocsr()
    sim.setdiag(0)
    sim.eliminate_zeros()
    neighbours = np.full((sim.shape[0], 50), -1, dtype=np.int64)
    for i in range(sim.shape[0]):
        lo, hi = sim.indptr[i], sim.indptr[i + 1]
        top = np.argpartition(-sim.data[lo:hi], 49)[:50] if hi - lo > 50 else np.arange(hi - lo)
        neighbours[i, :len(top)] = sim.indices[lo:hi][top]
    np.save(sys.argv[5], neighbours)
seconds = time.perf_counter() - t0
truth = pd.read_parquet(sys.argv[2]).merge(pd.DataFrame({"user_id": user_ids, "cluster": labels}), on="user_id")
truth = truth[truth["group"] >= 0]
print(json.dumps({"seconds": seconds, "ari": adjusted_rand_score(truth["group"], truth["cluster"])}))
"""


def timed(cmd: list[str], env: dict) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (GiB) and stdout of one child process."""
    import tempfile

    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"failed: {' '.join(cmd)}\n{err.read()}")
        return seconds, usage.ru_maxrss / 2**20, out.read()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=200_000)
    ap.add_argument("--items", type=int, default=20_000)
    ap.add_argument("--groups", type=int, default=20)
    ap.add_argument("--events-per-user", type=float, default=40.0)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--data", type=Path, default=Path("/tmp/gpuclust-bench"))
    ap.add_argument("--name", default=None)
    ap.add_argument("--skip-script", action="store_true", help="only gpuclust (e.g. at sizes the script cannot hold)")
    ap.add_argument("--config", type=Path, default=None,
                    help="a TOML for the gpuclust run, e.g. [recommend] personal = 'none' to time the run without "
                         "its personal recommender")
    args = ap.parse_args()

    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    py = sys.executable
    data = args.data / f"u{args.users}-e{args.events_per_user:g}-i{args.items}-g{args.groups}"
    if not (data / "events.parquet").exists():
        subprocess.run([py, "-m", "gpuclust.cli.app", "synth", "--users", str(args.users), "--items", str(args.items),
                        "--groups", str(args.groups), "--events-per-user", str(args.events_per_user), "--out",
                        str(data), "--json"], env=env, check=True, stdout=subprocess.DEVNULL)
    result = {"users": args.users, "events_per_user": args.events_per_user, "items": args.items, "k": args.k,
              "device": args.device, "load_average_at_start": os.getloadavg()[0], "cpus": os.cpu_count(),
              "date": time.strftime("%Y-%m-%d")}

    seconds, _, out = timed([py, "-c", PREPROCESS, str(data / "events.parquet"), args.device], env)
    result["preprocess"] = {**json.loads(out.strip().splitlines()[-1]), "process_seconds": round(seconds, 2)}

    run_dir = data / "run"
    seconds, peak, out = timed([py, "-m", "gpuclust.cli.app", "run", "--events", str(data / "events.parquet"),
                             "--items", str(data / "items.parquet"), "--truth", str(data / "truth.parquet"),
                             "--features", "behaviour,tfidf", "--k", str(args.k), "--device", args.device,
                             "--out", str(run_dir), "--json",
                             *(["--config", str(args.config)] if args.config else [])], env)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    stages = manifest["timings"]["stages"]
    result["gpuclust_run"] = {"seconds": round(seconds, 2), "peak_rss_gib": round(peak, 2),
                              "config": args.config.read_text() if args.config else None,
                              "ari": manifest["metrics"].get("ari"),
                              "stages": {k: round(v["seconds"], 2) for k, v in stages.items()},
                              "event_frames_built": {k: v.get("event_frames_built") for k, v in stages.items()
                                                     if v.get("event_frames_built")}}
    if not args.skip_script:
        seconds, peak, out = timed([py, "-c", SCRIPT, str(data / "events.parquet"), str(data / "truth.parquet"),
                                 str(args.k), str(data / "script-labels.parquet")], env)
        result["script"] = {**json.loads(out.strip().splitlines()[-1]), "process_seconds": round(seconds, 2),
                            "peak_rss_gib": round(peak, 2)}
        seconds, peak, out = timed([py, "-c", SCRIPT, str(data / "events.parquet"), str(data / "truth.parquet"),
                                 str(args.k), str(data / "script-labels.parquet"), str(data / "script-knn.npy")], env)
        result["script_with_knn"] = {**json.loads(out.strip().splitlines()[-1]), "process_seconds": round(seconds, 2),
                                     "peak_rss_gib": round(peak, 2)}
    name = args.name or f"event-table-{args.device}-{args.users}"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
