"""Differences between releases of the libraries we call, decided here and nowhere else.

Signatures move (cuML's PCA lost `random_state` in 25.02; scikit-learn's HDBSCAN gained `copy`), and
exception types move (torch.OutOfMemoryError appeared in torch 2.5). Checking at run time, rather than
pinning a version, keeps every supported release working and both branches testable.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any


def accepted_kwargs(factory: Callable[..., Any], **optional: Any) -> dict[str, Any]:
    """The keyword arguments of `optional` that `factory` names in its signature.

    A `**kwargs` catch-all does not count as accepting a name (it may forward to a base that rejects
    it), and an unreadable signature accepts nothing: leaving an optional keyword out is the safe side.
    """
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return {}
    named = {name for name, p in parameters.items()
             if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}
    return {name: value for name, value in optional.items() if name in named}


def torch_oom_error() -> type[BaseException]:
    """torch's CUDA out-of-memory exception in every release we allow (torch >= 2.3).

    `torch.cuda.OutOfMemoryError` exists since 1.13; from 2.5 it is the same class as the newer
    top-level `torch.OutOfMemoryError`, which 2.3 and 2.4 lack.
    """
    import torch

    return torch.cuda.OutOfMemoryError


def transformers_dtype(dtype: Any) -> dict[str, Any]:
    """`from_pretrained`'s weight dtype keyword: `dtype` from transformers 4.56 on (`torch_dtype` is then
    deprecated), `torch_dtype` before it (4.44 and up are allowed)."""
    import transformers
    from packaging.version import Version

    return {"dtype" if Version(transformers.__version__).release >= (4, 56) else "torch_dtype": dtype}
