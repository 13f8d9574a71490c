"""PCA before clustering: cuML on the GPU, scikit-learn on the CPU, torch on GPU machines without RAPIDS.

Each engine only learns the mean and the components; the projection is done once, the same way, with xp,
so `transform` on new users gives what `fit_transform` gave. Component signs follow scikit-learn (the
largest-magnitude loading of each component is positive), so engines agree on the output, not just up to sign.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from gpuclust.backend import Backend, from_torch, to_host, to_torch
from gpuclust.compat import accepted_kwargs
from gpuclust.errors import UsageError

if TYPE_CHECKING:
    import torch

# Up to this many features the torch engine diagonalises the d x d covariance (exact, deterministic);
# beyond it, a seeded randomized low-rank PCA.
TORCH_EXACT_MAX_DIMS = 4096


class PCA:
    """Project users onto the top `n_components` principal axes; `fit_transform` returns xp float32.

    Sets components_ (xp float32, (n_components, d)), mean_ (xp float32, (d,)), explained_variance_ratio_
    (host float64), engine_ and info_ (for the manifest).
    """

    def __init__(self, n_components: int = 32, engine: str = "auto", seed: int = 0) -> None:
        self.n_components = n_components
        self.engine = engine
        self.seed = seed

    def fit_transform(self, x: Any, backend: Backend):
        n, d = _check_matrix(x, "PCA")
        c = int(self.n_components)
        if not 1 <= c <= min(n, d):
            raise UsageError(f"PCA n_components={self.n_components} must be between 1 and min(users, features) = "
                             f"{min(n, d)}; lower --reduce-components")
        self.engine_ = backend.pick_engine("pca", self.engine)
        fit = {"sklearn": self._fit_sklearn, "cuml": self._fit_cuml, "torch": self._fit_torch}[self.engine_]
        components, mean, ratio = fit(x, backend, c)
        xp = backend.xp
        self.components_ = _flip_signs(xp.asarray(components, dtype=xp.float32), xp)
        self.mean_ = xp.asarray(mean, dtype=xp.float32)
        self.explained_variance_ratio_ = np.asarray(to_host(ratio), dtype=np.float64)
        self.info_ = {
            "method": "pca", "engine": self.engine_, "n_components": c, "input_dims": d,
            "explained_variance": float(self.explained_variance_ratio_.sum()),
        }
        return self.transform(x, backend)

    def transform(self, x: Any, backend: Backend, chunk: int = 65_536):
        """(x - mean_) @ components_.T, chunked: the centred copy never exceeds `chunk` rows."""
        xp = backend.xp
        out = xp.empty((x.shape[0], self.components_.shape[0]), dtype=xp.float32)
        for start in range(0, x.shape[0], chunk):
            block = x[start:start + chunk].astype(xp.float32, copy=False) - self.mean_
            out[start:start + chunk] = block @ self.components_.T
        return out

    # --- engines: each returns (components, mean, explained variance ratio) ----------------------

    def _fit_sklearn(self, x, backend: Backend, c: int):
        from sklearn.decomposition import PCA as SkPCA

        model = SkPCA(n_components=c, random_state=self.seed).fit(to_host(x))
        return model.components_, model.mean_, model.explained_variance_ratio_

    def _fit_cuml(self, x, backend: Backend, c: int):
        from cuml.decomposition import PCA as CuPCA

        # cuML 25.02 removed random_state (its PCA solvers are deterministic); earlier releases take it.
        model = CuPCA(n_components=c, output_type="cupy", **accepted_kwargs(CuPCA, random_state=self.seed))
        model.fit(backend.xp.ascontiguousarray(x, dtype=backend.xp.float32))
        return model.components_, model.mean_, model.explained_variance_ratio_

    def _fit_torch(self, x, backend: Backend, c: int):
        components, mean, ratio = torch_pca(to_torch(x), c, self.seed)
        return from_torch(components, backend), from_torch(mean, backend), ratio  # ratio: to_host, in the caller


def torch_pca(x: torch.Tensor, n_components: int, seed: int = 0, chunk: int = 65_536):
    """(components (c, d), mean (d,), explained variance ratio (c,)) of a torch matrix, on its device."""
    import torch

    n, d = x.shape
    mean = x.mean(dim=0, dtype=torch.float64)
    if d <= TORCH_EXACT_MAX_DIMS:
        cov = torch.zeros((d, d), dtype=torch.float64, device=x.device)
        for start in range(0, n, chunk):
            block = x[start:start + chunk].to(torch.float64) - mean
            cov += block.T @ block
        values, vectors = torch.linalg.eigh(cov)  # ascending
        values = values.flip(0).clamp_min(0.0)
        components = vectors.flip(1)[:, :n_components].T
        ratio = values[:n_components] / values.sum().clamp_min(1e-300)
    else:
        total = ((x.to(torch.float64) - mean) ** 2).sum()
        devices = [x.device.index or 0] if x.is_cuda else []
        with torch.random.fork_rng(devices=devices):  # seeded without touching the caller's RNG state
            torch.manual_seed(seed)
            _, s, v = torch.pca_lowrank(x.to(torch.float32), q=min(n_components + 10, n, d), center=True, niter=4)
        components = v[:, :n_components].T.to(torch.float64)
        ratio = (s[:n_components].to(torch.float64) ** 2) / total.clamp_min(1e-300)
    return components.to(torch.float32).contiguous(), mean.to(torch.float32), ratio


def _flip_signs(components, xp):
    """scikit-learn's sign rule: each component's largest-magnitude loading is positive."""
    rows = xp.arange(components.shape[0])
    signs = xp.sign(components[rows, xp.argmax(xp.abs(components), axis=1)])
    return components * xp.where(signs == 0, 1.0, signs).astype(components.dtype)[:, None]


def _check_matrix(x: Any, what: str) -> tuple[int, int]:
    if getattr(x, "ndim", None) != 2:
        raise UsageError(f"{what} needs a 2-D (users x features) matrix, got shape {getattr(x, 'shape', None)}")
    return int(x.shape[0]), int(x.shape[1])
