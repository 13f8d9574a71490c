"""Deliberately wrong RAPIDS calls: the contract must fail on each line marked `wrong`, and on nothing else.

scripts/rapids-contract.sh checks this file against the real wheels before it trusts a pass on gpuclust/,
and tests/test_rapids_contract.py checks it against the CPU stand-ins (NumPy, pandas, scikit-learn).
"""

from types import ModuleType

from cuml.cluster import KMeans


def misnamed(xp: ModuleType, backend, a, frame: ModuleType):
    KMeans(n_clusterz=3)  # wrong: a misspelt keyword of a cuML estimator
    xp.linalg.cholesky(a, lower=True)  # wrong: SciPy's keyword; CuPy's (and NumPy's) cholesky has none
    xp.linalg.choleski(a)  # wrong: no such function
    backend.frame.read_csv("events.csv", use_cols=["user_id"])  # wrong: the keyword is usecols
    frame.DataFrame({"a": [1]}).drop_duplicates(subset=["a"], keep_first=True)  # wrong: no such keyword
    return KMeans(n_clusters=3), xp.linalg.cholesky(a), frame.DataFrame({"a": [1]}).drop_duplicates(subset=["a"])
