"""Release differences of the libraries we call: keywords that come and go, exception types."""

from __future__ import annotations

import pytest

from gpuclust.compat import accepted_kwargs, torch_oom_error


def test_accepted_kwargs_passes_only_the_names_a_signature_takes():
    def new(*, n_components=None, output_type=None):
        return None

    def old(n_components=None, random_state=None, output_type=None):
        return None

    def forwards(n_components=None, **kwargs):
        return None

    assert accepted_kwargs(new, random_state=0) == {}
    assert accepted_kwargs(old, random_state=0, copy=True) == {"random_state": 0}
    assert accepted_kwargs(forwards, random_state=0) == {}  # **kwargs may forward to a base that rejects it
    assert accepted_kwargs(len, random_state=0) == {}  # unreadable signature: leave optional keywords out


def test_torch_oom_error_exists_without_the_top_level_name(monkeypatch):
    torch = pytest.importorskip("torch")
    monkeypatch.delattr(torch, "OutOfMemoryError", raising=False)  # as in torch 2.3 and 2.4
    error = torch_oom_error()
    assert issubclass(error, RuntimeError) and error is torch.cuda.OutOfMemoryError
