"""Noise is not a cluster: counted apart everywhere, and a warning with the fix when it is most users."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from gpuclust import UserClusterer
from gpuclust.errors import ResultWarning
from tests.helpers import blob_events


class HalfNoise:
    """A scikit-learn-style clusterer that leaves the first `share` of users in noise (-1)."""

    def __init__(self, share: float) -> None:
        self.share = share

    def fit(self, X):
        n = X.shape[0]
        self.labels_ = np.where(np.arange(n) < int(self.share * n), -1, np.arange(n) % 2)
        return self


def test_mostly_noise_is_a_warning_naming_the_settings_that_place_more_users():
    events, _, _ = blob_events(n_users=90)
    with pytest.warns(ResultWarning, match=r"45 of 90 users \(50.0%\) are noise, in no cluster \(HalfNoise\)"):
        UserClusterer(clusterer=HalfNoise(0.5), device="cpu").fit(events)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResultWarning)
        UserClusterer(clusterer=HalfNoise(0.1), device="cpu").fit(events)  # a little noise is normal


def test_hdbscan_noise_names_min_cluster_size_and_min_samples(monkeypatch, capsys, tmp_path):
    from tests.helpers import cli

    events, _, _ = blob_events(n_users=90)
    events.to_parquet(tmp_path / "events.parquet")
    code, out, err = cli(monkeypatch, capsys, "run", "--events", tmp_path / "events.parquet", "--algorithm",
                         "hdbscan", "--min-cluster-size", 10, "--min-samples", 30, "--device", "cpu",
                         "--out", tmp_path / "out")
    assert code == 0, err
    noise = [line for line in err.splitlines() if "are noise" in line]
    assert len(noise) == 1 and "lower --min-cluster-size or --min-samples" in noise[0]
    clusters = out.split(" clusters of 90 users")[0].split()[-1]
    import json

    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert int(clusters) == manifest["cluster"]["k"]  # the table counts clusters as the manifest does
    assert f"{manifest['metrics']['noise_users']:,} of them noise" in out


def test_the_cli_table_counts_clusters_without_noise(tmp_path, capsys):
    from gpuclust.cli.app import report

    events, _, _ = blob_events(n_users=90)
    with pytest.warns(ResultWarning):
        model = UserClusterer(clusterer=HalfNoise(0.5), device="cpu").fit(events)
    report(model, tmp_path, json_out=False)
    out = capsys.readouterr().out
    assert "2 clusters of 90 users, 45 of them noise (in no cluster)" in out and "│ noise" in out
    assert model.n_clusters_ == 2 == model.manifest_["cluster"]["k"]
