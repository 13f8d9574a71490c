"""Frame code must not lean on pandas-only behaviour that cuDF does not share.

cuDF propagates nulls: a comparison with a null is null (pandas' NumPy dtypes give False), `|` and `&`
keep the null, `shift` leaves one in the first row, and `groupby` drops null keys and sum skips null
values. pandas' nullable extension dtypes (`Int32`, `boolean`, `timestamp[ns][pyarrow]`) follow the
same rules, so running gpuclust's frame functions on them here makes code that relies on pandas'
NumPy semantics fail on the CPU, not first on a RAPIDS machine. cuDF has no `.apply` with a Python
callable on its frames (nor `.iterrows`): the last test keeps those out of the package.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gpuclust import PipelineConfig, UserClusterer
from gpuclust.backend import cpu_backend
from gpuclust.features.behaviour import behaviour_statistics
from gpuclust.preprocess.clean import Preprocessor
from tests.helpers import blob_events

B = cpu_backend()
NULLABLE = ("numpy_nullable", "pyarrow")  # Int32/boolean/Float32, and Arrow-backed int/timestamp/string


def _sessions_log() -> pd.DataFrame:
    """User 100 has one session, user 101 two (a 2-day gap), user 102 one event."""
    return pd.DataFrame({
        "user_id": [100, 100, 101, 101, 101, 102],
        "item_id": [1, 2, 1, 3, 2, 1],
        "event_type": ["view", "purchase", "view", "view", "cart", "view"],
        "timestamp": pd.to_datetime(["2026-01-01 10:00", "2026-01-01 10:10", "2026-01-01 09:00",
                                     "2026-01-03 09:00", "2026-01-03 09:05", "2026-01-02 12:00"]),
        "value": [0.0, 5.0, 0.0, 0.0, 0.0, 0.0],
    })


@pytest.mark.parametrize("backend", NULLABLE)
def test_session_counts_do_not_depend_on_null_propagation(backend):
    data = Preprocessor(seed=0).run(_sessions_log(), B)
    plain = behaviour_statistics(data, B).frame(B)
    nullable = data.with_events(data.events.convert_dtypes(dtype_backend=backend))
    assert str(nullable.events["user_idx"].dtype) in ("Int32", "int32[pyarrow]")  # the propagating kind
    raw = behaviour_statistics(nullable, B).frame(B)
    assert raw["sessions"].tolist() == [1, 2, 1]  # user 0 keeps its session; the one-event user has one
    assert (raw["sessions"] >= 1).all() and np.isfinite(raw.to_numpy(dtype=np.float64)).all()
    pd.testing.assert_frame_equal(raw, plain, check_dtype=False, check_index_type=False)


def _with_missing_values(events: pd.DataFrame) -> pd.DataFrame:
    """A few missing ids, times and values: rows preprocessing must drop or fill the same way everywhere."""
    events = events.astype({"user_id": "float64", "value": "float64"})
    events.loc[[3, 40], "user_id"] = np.nan
    events.loc[[11, 12], "timestamp"] = pd.NaT
    events.loc[[20, 21, 22], "value"] = np.nan
    return events


@pytest.mark.parametrize("backend", NULLABLE)
def test_preprocessing_is_the_same_on_nullable_frames(backend):
    events, items, _ = blob_events(n_users=80)
    events = _with_missing_values(events)
    plain = Preprocessor(seed=0).run(events, B, items)
    nullable = Preprocessor(seed=0).run(events.convert_dtypes(dtype_backend=backend), B,
                                        items.convert_dtypes(dtype_backend=backend))
    # Id-type steps record how a dtype was read (float ids with NaN become integers; nullable Int64 are
    # already); every step that keeps or drops rows must agree.
    def kept(steps):
        return [s.to_dict() for s in steps if not s.step.endswith("_types")]

    assert kept(nullable.steps) == kept(plain.steps)
    columns = ["user_idx", "item_idx", "timestamp", "value", "weight"]
    got, want = nullable.events[columns], plain.events[columns]
    np.testing.assert_array_equal(got.to_numpy(dtype=np.float64, na_value=np.nan),
                                  want.to_numpy(dtype=np.float64, na_value=np.nan))
    assert nullable.n_users == plain.n_users and nullable.n_items == plain.n_items


@pytest.mark.parametrize("backend", NULLABLE)
def test_the_pipeline_clusters_nullable_frames_as_plain_ones(backend):
    events, items, truth = blob_events(n_users=120)
    config = PipelineConfig(device="cpu", seed=0)
    config.cluster.k = 3
    plain = UserClusterer(config=config).fit(events, items, truth)
    nullable = UserClusterer(config=config).fit(events.convert_dtypes(dtype_backend=backend),
                                    items.convert_dtypes(dtype_backend=backend), truth)
    np.testing.assert_array_equal(nullable.labels_["cluster"].to_numpy(), plain.labels_["cluster"].to_numpy())
    assert nullable.metrics_["ari"] == plain.metrics_["ari"]


# Methods that run a Python callable per row or group: cuDF has none of these on frames (or only a
# numba-compiled subset), and they are the slow path in pandas.
ROW_LOOPS = {"apply", "applymap", "iterrows", "itertuples"}
TAKES_CALLABLE = {"map", "agg", "aggregate", "transform", "pipe"}
# Calls of those names on what is no frame, each with what it is instead.
NOT_FRAMES = {("features/learned/softmax.py", "_LOGSUMEXP"): "a torch.autograd.Function: .apply is how it runs"}


def _row_loops(tree: ast.AST, where: str = "") -> list[int]:
    lines = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        if isinstance(node.func.value, ast.Name) and (where, node.func.value.id) in NOT_FRAMES:
            continue
        if node.func.attr in ROW_LOOPS or (
                node.func.attr in TAKES_CALLABLE and any(isinstance(a, ast.Lambda) for a in node.args)):
            lines.append(node.lineno)
    return lines


def test_no_stage_runs_python_callables_over_frame_rows():
    package = Path(__file__).resolve().parents[1] / "gpuclust"
    found = {str(path.relative_to(package)): hits for path in sorted(package.rglob("*.py"))
             if (hits := _row_loops(ast.parse(path.read_text(), str(path)), str(path.relative_to(package))))}
    assert not found, f"per-row Python callables (not in cuDF): {found}"
    assert _row_loops(ast.parse("df.apply(f)\nframe.map(lambda v: v)\nfor r in df.iterrows(): pass"))  # the check bites
