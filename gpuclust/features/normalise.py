"""Column normalisers for behaviour features, written once against `xp` (NumPy or CuPy).

A `Normaliser` learns its statistics on the users it was fitted on and applies the same ones to new
users, so a saved model places new users on the scale its clusters were found on.
"""

from __future__ import annotations

from typing import Any

from gpuclust.errors import UsageError

METHODS = ("standard", "minmax", "log1p", "quantile", "none")
RELATIVE_EPS = 1e-5
QUANTILES = 1001


def _scale(spread, level, xp):
    """The spread, or 1 where a column is constant: float32 rounding leaves a spread of ~1e-7 x its
    level, and dividing by that would blow new users' values up by a factor of millions."""
    tolerance = RELATIVE_EPS * xp.maximum(xp.abs(level), 1.0)
    return xp.where(spread > tolerance, spread, 1.0)


def signed_log1p(x, xp):
    return xp.sign(x) * xp.log1p(xp.abs(x))


class Normaliser:
    """standard | minmax | log1p (signed log1p, then standard: tames counts and money) | quantile | none."""

    def __init__(self, method: str = "log1p") -> None:
        self.method = method

    def fit(self, x: Any, xp) -> Normaliser:
        if self.method not in METHODS:
            raise UsageError(f"unknown normaliser {self.method!r}: choose one of {', '.join(METHODS)}")
        x = self._pre(x, xp)
        if self.method in ("standard", "log1p"):
            mean, std = x.mean(axis=0), x.std(axis=0)
            self.params_ = {"shift": mean, "scale": _scale(std, mean, xp)}
        elif self.method == "minmax":
            low = x.min(axis=0)
            self.params_ = {"shift": low, "scale": _scale(x.max(axis=0) - low, low, xp)}
        elif self.method == "quantile":
            levels = xp.linspace(0.0, 1.0, QUANTILES)
            self.params_ = {"quantiles": xp.quantile(x.astype(xp.float64), levels, axis=0)}
        else:
            self.params_ = {}
        self.params_ = {k: v.astype(xp.float32) for k, v in self.params_.items()}
        return self

    def transform(self, x: Any, xp) -> Any:
        x = self._pre(x, xp)
        if self.method == "none":
            return x
        if self.method == "quantile":
            # Position of each value among the fitted quantiles, scaled to [0, 1]. Columns are copied
            # contiguous: cupy.interp raises NotImplementedError for a non-C-contiguous x (a column of a
            # C-ordered matrix), where numpy.interp copies it itself.
            q = self.params_["quantiles"]
            levels = xp.linspace(0.0, 1.0, q.shape[0]).astype(xp.float32)
            cols = [xp.interp(xp.ascontiguousarray(x[:, j]), xp.ascontiguousarray(q[:, j]), levels)
                    for j in range(x.shape[1])]
            return xp.stack(cols, axis=1).astype(xp.float32)
        return ((x - self.params_["shift"]) / self.params_["scale"]).astype(xp.float32)

    def fit_transform(self, x: Any, xp) -> Any:
        return self.fit(x, xp).transform(x, xp)

    def _pre(self, x, xp):
        return signed_log1p(x, xp) if self.method == "log1p" else x
