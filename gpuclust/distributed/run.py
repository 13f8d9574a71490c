"""`gpuclust run --scheduler` and `gpuclust assign --scheduler`: files in, files out, on a Dask cluster.

The output set is staged and swapped in as one unit (`io.outputs.OutputDir`), as on one machine; the
assignments are a partitioned dataset, OUT/assignments/part.N.parquet, written by the workers into
the staging folder. A run that fails or is interrupted closes the LocalCluster it started and leaves
nothing behind. With a remote cluster (an address) the workers write OUT's staging folder themselves,
so OUT must be on storage every worker mounts; that is checked, and said, before the swap.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import gpuclust
from gpuclust import schema
from gpuclust.backend import resolve_backend
from gpuclust.config import PipelineConfig
from gpuclust.distributed import prepare
from gpuclust.distributed.blocks import Blocks, broadcast, pmap
from gpuclust.distributed.cluster import Session, open_session
from gpuclust.distributed.engine import from_frame, read_events_lazy
from gpuclust.errors import UsageError, warn_dropped
from gpuclust.io.inputs import Inputs, read_inputs
from gpuclust.io.outputs import OutputDir, overlaps
from gpuclust.io.readers import read_items, read_truth
from gpuclust.io.run_folder import write_run
from gpuclust.io.writers import write_json
from gpuclust.manifest import StageRecorder, machine, now_iso, versions
from gpuclust.preprocess.clean import NO_KNOWN_ITEMS, UNKNOWN_ITEM_FIX, UNPLACED_USERS_STEP, warn_unplaced
from gpuclust.report.html import ASSIGNMENT_PARTS


def read_inputs_lazy(config: PipelineConfig, device: str, events: str | Path, items: str | Path | None,
                     truth: str | Path | None, adapter: str | None) -> tuple[Inputs, int | None]:
    """Events as a lazy frame (a Parquet file, folder or glob is read by the workers; other formats and
    adapters by this process, then partitioned); items and truth in memory (they are small)."""
    import pandas

    if adapter is None:
        lazy, rows, _ = read_events_lazy(events, config.columns, device)
        if lazy is not None:
            raw_items = read_items(items, pandas, config.columns) if items is not None else None
            raw_truth = read_truth(truth, pandas) if truth is not None else None
            sources = {"events": str(events), "items": None if items is None else str(items),
                       "truth": None if truth is None else str(truth), "adapter": None, "events_read": "lazy"}
            return Inputs(lazy, raw_items, raw_truth, [], sources), rows
    inputs = read_inputs(pandas, config.columns, events, items, truth, adapter)
    inputs.sources["events_read"] = "in memory, then partitioned"
    return inputs, len(inputs.events)


def check_out_outside(events: str | Path, out: str | Path) -> None:
    """An output set inside the events dataset folder, or where the events glob reaches, would be read as
    events by the next run over it (its Parquet files, the model's too): refused before anything is read or
    written."""
    import glob

    if Path(events).is_dir() and overlaps(Path(out), Path(events)):
        raise UsageError(f"--out {out} is inside the events dataset folder {events}: a later run over that folder "
                         "would read the outputs as events; give a folder outside it")
    if glob.has_magic(str(events)) and _glob_reaches_into(str(events), Path(out)):
        raise UsageError(f"--out {out} is where the events pattern {events} reaches: a later run with that pattern "
                         "would read the outputs as events; give a folder it does not reach")


def _glob_reaches_into(pattern: str, folder: Path) -> bool:
    """Whether a file inside `folder` can match `pattern` as the reader expands it (glob.glob, recursive):
    each of the folder's components matches the pattern's, and the pattern goes deeper, or reaches any
    depth through '**'."""
    import fnmatch

    parts, inside = Path(os.path.abspath(pattern)).parts, Path(os.path.abspath(folder)).parts
    for i, part in enumerate(parts):
        if part == "**":
            return True
        if i == len(inside):  # every component of the folder matched, and the pattern names files below it
            return True
        if not fnmatch.fnmatchcase(inside[i], part):
            return False
    return False  # the pattern stops at the folder's depth or above: it may name the folder, no file in it


def run_distributed(config: PipelineConfig, events: str | Path, out: str | Path, items: str | Path | None,
                    truth: str | Path | None, adapter: str | None, on_stage: Any, layout: dict,
                    model_key: Any = None, item_vectors: Any = None) -> Any:
    from gpuclust.estimator import UserClusterer

    check_out_outside(events, out)
    with OutputDir(out, "run", layout) as staging:
        started = time.perf_counter()
        backend = resolve_backend(config.device)
        reading = StageRecorder(backend, on_stage)
        with reading.stage("read"):  # lazy, and every file's schema checked: bad input before a cluster starts
            inputs, rows = read_inputs_lazy(config, backend.device, events, items, truth, adapter)
        with open_session(config.dask.scheduler, config.dask, backend.device) as session:
            model = UserClusterer(config=config, scheduler=session.client, progress=on_stage,
                                  item_vectors=item_vectors)
            settings = model._settings()
            from gpuclust.distributed.fit import fit_distributed

            fit_distributed(model, inputs.events, inputs.items, inputs.truth, settings, session, rows)
            manifest = model.manifest_
            manifest["inputs"] = inputs.sources
            manifest["rows"]["steps"] = [s.to_dict() for s in inputs.steps] + manifest["rows"]["steps"]
            manifest["timings"]["stages"] = {**reading.stages, **manifest["timings"]["stages"]}
            with StageRecorder(backend, on_stage).stage("write") as rec:
                files = write_parts(model._distributed.assignments, staging / ASSIGNMENT_PARTS)
                rec["files"] = files
            manifest["timings"]["stages"]["write_assignments"] = rec
            manifest["assignments"] = {"dataset": ASSIGNMENT_PARTS, "files": files}
            model._distributed = None
        manifest["timings"]["total_seconds"] = round(time.perf_counter() - started, 4)
        write_run(model, staging, assignments_file=False, model_key=model_key)
    return model


def _write_part(frame: Any, path: str) -> str:
    from gpuclust.io.writers import write_parquet

    write_parquet(path, frame)
    return path


def write_parts(frames: Blocks, folder: Path) -> int:
    """Each partition's frame as folder/part.N.parquet, written where it lives; then checked from here."""
    folder.mkdir()
    paths = [str(folder / f"part.{i}.parquet") for i in range(len(frames.futures))]
    frames.client.gather(pmap(frames.client, _write_part, frames.futures, paths))
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise UsageError(f"the workers wrote {Path(missing[0]).name} where this machine cannot see it: with a "
                         "remote cluster, give an --out on storage every worker mounts")
    return len(paths)


# --- assign on the cluster ------------------------------------------------------------------------

def _place(cleaned: prepare.Cleaned, placer: Any, device: str) -> Any:
    """Users of one partition placed in the model's clusters, as `UserClusterer.place` does."""
    from gpuclust.cluster.outcome import nearest_centres
    from gpuclust.quality.anomaly import scores_against

    backend = prepare.worker_backend(device)
    p = placer.items
    part = prepare.index_partition(cleaned, p["vocabulary"], None, p["event_types"], True, device)
    if part.n_users == 0:  # its user_id keeps the ids' type: a dataset's files must agree (text ids, int64 here)
        ids = prepare.host_frame(part.users)[schema.USER].reset_index(drop=True)
        return pd.DataFrame({schema.USER: ids, "cluster": pd.Series([], dtype="int32"),
                             "distance": pd.Series([], dtype="float32"),
                             "anomaly_score": pd.Series([], dtype="float32")}), part.steps
    g = prepare.Globals(p["vocabulary"], len(p["vocabulary"]), part.n_users, 0, p["reference_time"],
                        p["event_types"], p["text_columns"], [])
    data = g.prepared(part, backend)
    xp = backend.xp
    x = p["fuser"].transform({f.name: f.transform(data, backend) for f in p["featurizers"]}, xp)
    if p["reducer"] is not None:
        x = p["reducer"].transform(x, backend)
    centres = xp.asarray(p["centres"])
    labels, distances = nearest_centres(x, centres, xp)
    scores = scores_against(labels, distances, xp.asarray(p["median"]), xp.asarray(p["scale"]), xp)
    users = prepare.host_frame(part.users)
    from gpuclust.backend import to_host

    frame = pd.DataFrame({schema.USER: users[schema.USER].to_numpy(), "cluster": to_host(labels).astype(np.int32),
                          "distance": to_host(distances).astype(np.float32),
                          "anomaly_score": to_host(scores).astype(np.float32)})
    return frame, part.steps


def _latest_known(cleaned: prepare.Cleaned, vocabulary: Any) -> int | None:
    """The partition's latest time (ns) of an event on an item the model knows; None where it has none."""
    from gpuclust.preprocess.clean import _vocabulary_index

    codes = cleaned.codes
    if codes is None or len(codes) == 0:
        return None
    known = _vocabulary_index(codes, vocabulary) >= 0
    return int(codes.time[known].max()) if bool(known.any()) else None


def _frame_of(placed):
    return placed[0]


def _steps_of(placed):
    return placed[1]


def assign_distributed(model: str | Path, events: str | Path, out: str | Path, device: str | None,
                       adapter: str | None, scheduler: str, dask_config: Any, layout: dict,
                       model_key: Any = None) -> tuple[Any, dict]:
    """`gpuclust assign` with the users placed on a Dask cluster, written as a partitioned dataset."""

    from gpuclust.distributed.engine import partition_count
    from gpuclust.distributed.features import shippable
    from gpuclust.distributed.fit import _Bundle
    from gpuclust.estimator import UserClusterer
    from gpuclust.features.factory import build_featurizer  # noqa: F401 - registry names load with the model

    started = time.perf_counter()
    check_out_outside(events, out)
    with OutputDir(out, "assign", layout) as staging:
        fitted = UserClusterer.load(model, device=device, model_key=model_key)
        if (fitted.privacy_ or {}).get("pseudonymised"):  # placed here, its users' raw ids would be written
            raise UsageError(f"model {model} was fitted on pseudonymised user ids, which need its key, and "
                             "--pseudonymise does not run on a Dask cluster yet; place the users without --scheduler "
                             "and with --pseudonymise KEY_FILE")
        backend = fitted.backend_
        config = fitted.config_
        inputs, rows = read_inputs_lazy(config, backend.device, events, None, None, adapter)  # before the cluster
        with open_session(scheduler, dask_config, backend.device) as session:
            client = session.client
            lazy = inputs.events
            threads = session.describe()["threads"]
            if not hasattr(lazy, "to_delayed"):
                lazy = from_frame(lazy, backend.device, max(1, threads * 2))
            pcfg = config.preprocess.for_placing()  # every user with a readable event, as one process
            parts = partition_count(rows or 0, threads, dask_config.partitions)
            cleaned, summaries, steps = prepare.clean_partitions(client, lazy, pcfg, config.seed, backend.device,
                                                                 rows or 0, parts, fixed=True)
            present = {n for s in summaries for n in s.event_names}
            vocabulary = prepare.host_frame(fitted.vocabulary_)
            # Recency runs from the latest event on a known item, as one process measures it (after the
            # events on unknown items are dropped), not from the latest event read.
            latest = [t for t in client.gather(pmap(client, _latest_known, cleaned, vocabulary=vocabulary))
                      if t is not None]
            reference = pd.Timestamp(max(latest)) if latest else \
                max(s.time_range[1] for s in summaries if s.time_range[1] is not None)
            text_columns = tuple(c for c in vocabulary.columns
                                 if c not in (schema.ITEM, schema.ITEM_IDX, schema.CATEGORY, schema.PRICE))
            placer = broadcast(client, _Bundle({
                "vocabulary": vocabulary, "event_types": tuple(t for t in pcfg.event_weights if t in present),
                "reference_time": pd.Timestamp(reference), "text_columns": text_columns,
                "featurizers": [shippable(f) for f in fitted.featurizers_], "fuser": fitted.fuser_,
                "reducer": fitted.reducer_, "centres": fitted.cluster_centers_,
                "median": fitted.spread_[0], "scale": fitted.spread_[1]}))
            placed = pmap(client, _place, cleaned, placer=placer, device=backend.device)
            frames = Blocks(client, pmap(client, _frame_of, placed), [0] * len(placed))
            part_steps = client.gather(pmap(client, _steps_of, placed))
            unknown = prepare.summed_steps([prepare.Cleaned(None, s, [], (0, 0, None), {}, [], [], (None, None),
                                                            None, "") for s in part_steps])
            files = write_parts(frames, staging / ASSIGNMENT_PARTS)
            sizes = _cluster_sizes(client, frames)
            n_users = int(sum(sizes.values()))
            workers = session.describe()
        if n_users == 0:
            raise UsageError(NO_KNOWN_ITEMS)  # one process's words
        for step in unknown:  # counted over the partitions, warned about once, as one process does
            if step.step == UNPLACED_USERS_STEP:
                warn_unplaced(step)
            else:
                warn_dropped(step.dropped, step.rows_in, step.why, fix=UNKNOWN_ITEM_FIX)
        manifest = {
            "gpuclust": gpuclust.__version__, "created": now_iso(), "model": str(model),
            "model_run_id": fitted.manifest_.get("run_id"), "inputs": inputs.sources, "device": machine(backend),
            "versions": versions(),
            "rows": {"steps": [s.to_dict() for s in inputs.steps + steps + unknown], "users": n_users},
            "cluster_sizes": sizes, "seconds": round(time.perf_counter() - started, 4),
            "assignments": {"dataset": ASSIGNMENT_PARTS, "files": files}, "dask": workers,
        }
        write_json(staging / "manifest.json", manifest)
    return fitted, manifest


def _sizes_of(frame: Any) -> dict[int, int]:
    return {int(k): int(v) for k, v in frame["cluster"].value_counts().items()}


def _cluster_sizes(client: Any, frames: Blocks) -> dict[int, int]:
    out: dict[int, int] = {}
    for part in client.gather(pmap(client, _sizes_of, frames.futures)):
        for k, v in part.items():
            out[k] = out.get(k, 0) + v
    return dict(sorted(out.items()))


def session_info(session: Session) -> dict[str, Any]:
    return session.describe()
