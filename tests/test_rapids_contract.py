"""The RAPIDS API contract checker (scripts/rapids_contract.py), run against CPU stand-ins.

The real check runs in scripts/rapids-contract.sh against the RAPIDS wheels; here NumPy, SciPy, pandas and
scikit-learn stand in for CuPy, cupyx, cuDF and cuML, so the suite exercises how uses are found, resolved and
bound, and that wrong ones fail, without the wheels.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
WRONG = ROOT / "tests" / "data" / "rapids_contract_wrong.py"


def _load_checker():
    spec = importlib.util.spec_from_file_location("rapids_contract", ROOT / "scripts" / "rapids_contract.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


rc = _load_checker()


@pytest.fixture(scope="module")
def stand_ins():
    return rc.Libraries(stand_ins=True)


def outcomes(tmp_path: Path, source: str, libraries, project: Path | None = None) -> list:
    path = tmp_path / "snippet.py"
    path.write_text(textwrap.dedent(source))
    found, stale, _ = rc.check([path], project, libraries)
    return found + [rc.Outcome(rc.Use(str(path), int(w.rsplit(":", 1)[1]), "", rc.HOST, ""), "fail", "", "stale")
                    for w in stale]


def by_line(found: list) -> dict[int, set[str]]:
    out: dict[int, set[str]] = {}
    for o in found:
        out.setdefault(o.use.line, set()).add(o.status)
    return out


def test_fails_on_each_deliberately_wrong_call_and_nothing_else(stand_ins):
    found, stale, versions = rc.check([WRONG], None, stand_ins)
    wrong_lines = {i for i, line in enumerate(WRONG.read_text().splitlines(), 1) if "# wrong:" in line}
    assert len(wrong_lines) >= 5 and not stale
    assert {o.use.line for o in found if o.status == "fail"} == wrong_lines
    assert all(o.status == "ok" for o in found if o.use.line not in wrong_lines)
    code, lines = rc.report(found, stale, versions)
    assert code == 1 and lines[-1].startswith(f"rapids contract: FAILED: {len(wrong_lines)} of ")
    details = "\n".join(lines)
    for why in ("'n_clusterz'", "'lower'", "no attribute 'choleski'", "'use_cols'", "'keep_first'"):
        assert why in details


def test_a_correct_module_passes_and_the_last_line_counts_calls_and_versions(tmp_path, stand_ins):
    found = outcomes(tmp_path, """
        from cuml.cluster import KMeans as CuKMeans

        def fit(x, backend, k):
            xp = backend.xp
            model = CuKMeans(n_clusters=k, n_init=1, random_state=0).fit(xp.asarray(x, dtype=xp.float32))
            return model.cluster_centers_, xp.linalg.norm(x, axis=1), backend.sparse.coo_matrix(x).tocsr()
    """, stand_ins)
    assert {o.status for o in found} == {"ok"}
    apis = {o.api for o in found}
    assert {"cuml.cluster.KMeans", "cuml.cluster.KMeans.fit", "cuml.cluster.KMeans.cluster_centers_",
            "cupy.asarray", "cupy.float32", "cupy.linalg.norm", "cupyx.scipy.sparse.coo_matrix",
            "cupyx.scipy.sparse.coo_matrix.tocsr"} <= apis
    code, lines = rc.report(found, [], stand_ins.versions())
    assert code == 0
    assert re.fullmatch(r"rapids contract: \d+ calls ok \(pandas [\d.]+, numpy [\d.]+, scipy [\d.]+, sklearn [\d.]+\)",
                        lines[-1])


def test_every_cuml_estimator_the_project_imports_is_found_in_its_code(stand_ins):
    """The uses come from the code: each `from cuml... import X` in gpuclust/ is a checked use."""
    imported = set()
    for path in (ROOT / "gpuclust").rglob("*.py"):
        for module, names in re.findall(r"from (cuml[\w.]*) import ([\w, ]+)", path.read_text()):
            imported |= {f"{module}.{n.split(' as ')[0].strip()}" for n in names.split(",")}
    found, _, _ = rc.check([ROOT / "gpuclust"], ROOT / "gpuclust", stand_ins)
    assert imported and imported <= {o.api for o in found}
    constructed = {o.api for o in found if o.use.call and o.api.startswith("cuml.")}
    assert {"cuml.cluster.KMeans", "cuml.cluster.DBSCAN", "cuml.cluster.HDBSCAN", "cuml.decomposition.PCA",
            "cuml.manifold.UMAP"} <= constructed
    where = {(Path(o.use.file).name, o.api) for o in found}
    assert ("svd.py", "cupy.linalg.cholesky") in where and ("parse.py", "cudf.to_datetime") in where


def _fake_cuml(tmp_path: Path, name: str, pca_init: str) -> None:
    package = tmp_path / name
    (package / "decomposition").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "decomposition" / "__init__.py").write_text(f"class PCA:\n    def __init__({pca_init}):\n        pass\n")


GUARDED = """
    import inspect

    from cuml.decomposition import PCA as CuPCA

    def fit(seed):
        kwargs = {"n_components": 2, "output_type": "cupy"}
        if "random_state" in inspect.signature(CuPCA).parameters:
            kwargs["random_state"] = seed
        return CuPCA(**kwargs)

    def fit_inline(seed):
        return CuPCA(n_components=2, **({"random_state": seed} if "random_state" in
                                       inspect.signature(CuPCA).parameters else {}))

    def unguarded(seed):
        return CuPCA(n_components=2, random_state=seed)

    def guarded_by_the_wrong_class(seed):
        kwargs = {"n_components": 2}
        if "random_state" in inspect.signature(fit).parameters:
            kwargs["random_state"] = seed
        return CuPCA(**kwargs)
"""


@pytest.mark.parametrize("version, has_random_state", [("old", True), ("new", False)])
def test_a_signature_checked_keyword_is_verified_on_both_branches(tmp_path, monkeypatch, version, has_random_state):
    """cuML 25.02 dropped PCA's random_state: with a run-time check the call works before and after."""
    init = "self, *, n_components=None, output_type=None" + (", random_state=None" if has_random_state else "")
    _fake_cuml(tmp_path, f"fakecuml_{version}", init)
    monkeypatch.syspath_prepend(str(tmp_path))
    libraries = rc.Libraries(stand_ins=True, renames={"cuml": f"fakecuml_{version}"})
    found = [o for o in outcomes(tmp_path, GUARDED, libraries) if o.use.call]
    guarded = [o for o in found if o.use.guarded_keywords]
    assert len(guarded) == 2 and {o.status for o in guarded} == {"guarded"}
    assert all(o.use.guarded_keywords == ("random_state",) for o in guarded)
    taken = "random_state: taken by the installed version" if has_random_state else "random_state: not taken"
    assert all(taken in o.detail and "the call without it binds" in o.detail for o in guarded)
    unguarded = [o for o in found if o.use.text.startswith("CuPCA(n_components=2, random_state")
                 or o.use.keywords == ("n_components", "random_state")]
    assert len(unguarded) == 2  # one checks another callable's signature: no guard for CuPCA
    assert {o.status for o in unguarded} == ({"ok"} if has_random_state else {"fail"})


def test_a_guard_does_not_excuse_the_other_keywords(tmp_path, monkeypatch):
    _fake_cuml(tmp_path, "fakecuml_bad", "self, *, n_components=None")
    monkeypatch.syspath_prepend(str(tmp_path))
    found = outcomes(tmp_path, GUARDED, rc.Libraries(stand_ins=True, renames={"cuml": "fakecuml_bad"}))
    statuses = {o.use.text.split("(")[0] + ("(**kwargs)" if "**kwargs" in o.use.text else ""): o.status
                for o in found if o.use.guarded_keywords}
    assert statuses == {"CuPCA(**kwargs)": "fail", "CuPCA": "guarded"}  # the dict's output_type is not taken


def test_keywords_that_cannot_be_read_from_the_code_fail(tmp_path, stand_ins):
    found = outcomes(tmp_path, """
        from cuml.decomposition import PCA as CuPCA

        def fit(options):
            return CuPCA(**options)
    """, stand_ins)
    failing = [o for o in found if o.status == "fail"]
    assert len(failing) == 1 and "cannot read the keys of **options" in failing[0].detail


def test_hasattr_guards_waivers_and_stale_markers(tmp_path, stand_ins):
    found = outcomes(tmp_path, """
        import faiss

        def probe():
            if not hasattr(faiss, "no_such_probe") or faiss.no_such_probe() < 1:
                return None
            faiss.no_such_either()
            faiss.no_such_third()  # rapids-contract: waive only reached on a machine with the fork installed
            faiss.no_such_fourth()  # rapids-contract: waive
            return faiss.IndexFlatL2(2)  # rapids-contract: waive marker with nothing to waive
    """, stand_ins)
    statuses = by_line(found)
    assert statuses[5] == {"guarded"}
    assert statuses[7] == {"fail"}
    assert statuses[8] == {"waived"}
    assert statuses[9] == {"fail"}  # a waiver needs a reason
    assert statuses[10] == {"fail"}  # the use there verifies: the waiver is stale


class FakeGpuFrame:
    """A cuDF stand-in that lacks what cuDF might lack: drop_duplicates, and merge's validate."""

    def merge(self, right, how="inner", on=None):
        return self


class FakeGpuStrings:
    def lower(self):
        return self


def test_frame_methods_answer_to_the_gpu_twin_of_the_pandas_class_that_takes_them(tmp_path):
    libraries = rc.Libraries(stand_ins=True)
    libraries.pairs = {"frame": [(pd.DataFrame, FakeGpuFrame)], "array": [(np.ndarray, np.ndarray)]}
    libraries.accessors["str"] = [(type(pd.Series(["a"]).str), FakeGpuStrings)]
    found = outcomes(tmp_path, """
        import numpy as np

        def prepare(events, items, xp, values):
            joined = events.merge(items, how="left", on=xp.__name__)
            joined.drop_duplicates(subset=["user_id"])
            events.merge(items, how="left", on="item_id", validate="m:1")
            joined["name"].str.lower()
            joined["name"].str.strip()
            words = "a b".split()
            return [v.item() if isinstance(v, np.generic) else v for v in values], words, joined.groupby("a").agg_all()
    """, libraries)
    statuses = by_line(found)
    assert statuses[5] == {"ok"}
    assert statuses[6] == {"fail"}  # pandas has drop_duplicates, the GPU twin does not
    assert statuses[7] == {"fail"}  # pandas takes validate=, the GPU twin does not
    assert statuses[8] >= {"ok"} and "fail" not in statuses[8]
    assert "fail" in statuses[9]
    assert 10 not in statuses  # str.split is a host call
    assert statuses[11] == {"fail"}  # a group-by has no agg_all (a NumPy scalar's item is a host call)


def test_faiss_kmeans_keywords_are_checked_against_its_clustering_parameters(tmp_path, stand_ins):
    found = outcomes(tmp_path, """
        import faiss

        def train(x, k):
            ok = faiss.Kmeans(8, k, niter=5, nredo=1, seed=0, gpu=False, max_points_per_centroid=300, verbose=False)
            bad = faiss.Kmeans(8, k, n_iter=5)
            ok.train(x)
            return ok.centroids, bad
    """, stand_ins)
    statuses = by_line(found)
    assert statuses[5] == {"ok"} and statuses[7] == {"ok"} and statuses[8] == {"ok"}
    assert statuses[6] == {"fail"}
    assert any("ClusteringParameters has no field n_iter" in o.detail for o in found)


def test_signatures_come_from_cython_docstrings_where_inspect_has_none():
    class CythonLike:
        """sum(self, axis=None, dtype=None, out=None, keepdims=False) -> ndarray

        What Cython's embedsignature writes; CuPy's ufuncs escape the star: maximum(x1, x2, /, out=None, \\*)."""

        __signature__ = None

    def no_signature():
        pass

    no_signature.__doc__ = r"maximum(x1, x2, /, out=None, \*, casting='same_kind', dtype=None)"
    no_signature.__signature__ = "broken"  # makes inspect.signature raise
    sig = rc.signature(no_signature)
    assert list(sig.parameters) == ["x1", "x2", "out", "casting", "dtype"]
    assert sig.parameters["casting"].kind is sig.parameters["casting"].KEYWORD_ONLY
    use = rc.Use("f", 1, "", rc.VAL, "maximum", call=True, n_positional=2, keywords=("out",))
    assert rc.bind(sig, use, ("out",)) == ""
    assert "unexpected keyword" in rc.bind(sig, use, ("where",))


def test_a_signature_check_through_a_helper_counts_as_a_guard(tmp_path, monkeypatch):
    _fake_cuml(tmp_path, "fakecuml_helper", "self, *, n_components=None")
    monkeypatch.syspath_prepend(str(tmp_path))
    found = outcomes(tmp_path, """
        import inspect

        from cuml.decomposition import PCA as CuPCA

        def takes(callable_, keyword):
            return keyword in inspect.signature(callable_).parameters

        def fit(seed):
            kwargs = {"n_components": 2}
            if takes(CuPCA, "random_state"):
                kwargs["random_state"] = seed
            return CuPCA(**kwargs)
    """, rc.Libraries(stand_ins=True, renames={"cuml": "fakecuml_helper"}))
    call = next(o for o in found if o.use.call)
    assert call.status == "guarded" and call.use.guarded_keywords == ("random_state",)


@pytest.mark.parametrize("version, has_random_state", [("filter_old", True), ("filter_new", False)])
def test_keywords_filtered_by_a_signature_reading_helper_are_guarded(tmp_path, monkeypatch, version, has_random_state):
    """gpuclust.compat.accepted_kwargs(C, kw=...) passes on the keywords C names: both branches verify."""
    init = "self, *, n_components=None, output_type=None" + (", random_state=None" if has_random_state else "")
    _fake_cuml(tmp_path, f"fakecuml_{version}", init)
    monkeypatch.syspath_prepend(str(tmp_path))
    found = outcomes(tmp_path, """
        import inspect

        from cuml.decomposition import PCA as CuPCA

        def accepted_kwargs(factory, **optional):
            named = inspect.signature(factory).parameters
            return {k: v for k, v in optional.items() if k in named}

        def fit(seed):
            return CuPCA(n_components=2, output_type="cupy", **accepted_kwargs(CuPCA, random_state=seed))

        def wrong(seed):
            return CuPCA(n_component=2, **accepted_kwargs(CuPCA, random_state=seed))
    """, rc.Libraries(stand_ins=True, renames={"cuml": f"fakecuml_{version}"}))
    calls = {o.use.text.split("(")[1].split("=")[0]: o for o in found if o.use.call and o.api.endswith("PCA")}
    assert calls["n_components"].status == "guarded" and calls["n_components"].use.guarded_keywords == ("random_state",)
    assert ("taken by the installed" if has_random_state else "not taken") in calls["n_components"].detail
    assert calls["n_component"].status == "fail"


def test_a_frame_module_passed_untyped_and_keywords_passed_through_are_checked(tmp_path, stand_ins):
    """`frame.to_datetime` on a `frame: Any` parameter is the frame library's; **options are its callers'."""
    found = outcomes(tmp_path, """
        from typing import Any

        from gpuclust.frames import host_frame

        def parse_dates(text: Any, frame: Any, pandas: bool):
            utc = {"utc": True} if pandas else {}

            def parse(values, **options):
                return frame.to_datetime(values, errors="coerce", **utc, **options)

            first = parse(text)
            return first, parse(text, dayfirst=True), parse(text, format="mixed"), host_frame(first)

        def misspelt(text: Any, frame: Any):
            return frame.to_numeric(text, erors="coerce")
    """, stand_ins)
    calls = {o.use.line: o for o in found if o.use.call and o.api.startswith("cudf.")}
    assert calls[10].api == "cudf.to_datetime" and calls[10].status == "ok"
    assert set(calls[10].use.keywords) == {"errors", "utc", "dayfirst", "format"}
    assert calls[16].api == "cudf.to_numeric" and calls[16].status == "fail"


def test_a_local_annotation_says_what_a_name_holds_over_what_its_bindings_suggest(tmp_path, stand_ins):
    """`q: torch.Tensor = ...` makes later `q.argmax(1)` a torch call, not a guess at cuDF's; without the
    annotation the same code is read as a RAPIDS use."""
    annotated = outcomes(tmp_path, """
        import torch

        def step(xp, scores):
            q: torch.Tensor = scores
            q = q + xp.zeros(3)
            info: dict
            for info in scores:
                info.get("training")
            return q.argmax(dim=1)
    """, stand_ins)
    assert not [o for o in annotated if o.status == "fail"]
    bare = outcomes(tmp_path, """
        def step(xp, scores):
            q = scores + xp.zeros(3)
            return q.argmax(dim=1)
    """, stand_ins)
    assert [o for o in bare if o.status == "fail"]
