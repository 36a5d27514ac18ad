"""The data README's trivial baselines: L2 logistic regression on 6 frame statistics or on the 768 pixels.

They see the block-averaged 24x32 frames in absolute degrees (no standardisation), which is
exactly what lets them pick up the capture-protocol confound; the CNN must beat them to mean
anything. Fitted by Newton's method in numpy (no scikit-learn), features z-scored on the
training part, penalty 1/(2C)*|w|^2 like scikit-learn's default C=1.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

FRAME_STATISTICS: tuple[str, ...] = ("min", "max", "mean", "std", "lr_mean_abs_diff", "p90")


def frame_statistics(frames_c: npt.ArrayLike) -> FloatArray:
    """(N, H, W) degrees -> (N, 6): min, max, mean, std, left-right mean absolute difference, 90th percentile."""
    x = np.asarray(frames_c, dtype=np.float64)
    if x.ndim != 3:
        raise ValueError(f"expected (N, H, W) frames, got shape {x.shape}")
    flat = x.reshape(x.shape[0], -1)
    lr_diff = np.abs(x - x[:, :, ::-1]).mean(axis=(1, 2))
    return np.stack(
        [flat.min(1), flat.max(1), flat.mean(1), flat.std(1), lr_diff, np.percentile(flat, 90, axis=1)], axis=1
    )


def pixel_features(frames_c: npt.ArrayLike) -> FloatArray:
    """(N, H, W) degrees -> (N, H*W)."""
    x = np.asarray(frames_c, dtype=np.float64)
    if x.ndim != 3:
        raise ValueError(f"expected (N, H, W) frames, got shape {x.shape}")
    return x.reshape(x.shape[0], -1)


def _sigmoid(z: FloatArray) -> FloatArray:
    out: FloatArray = 0.5 * (1.0 + np.tanh(0.5 * z))
    return out


@dataclass
class LogisticRegression:
    """Binary L2 logistic regression with an unpenalised intercept."""

    c: float = 1.0
    max_iter: int = 50
    tol: float = 1e-8
    mean_: FloatArray = field(default_factory=lambda: np.zeros(0))
    scale_: FloatArray = field(default_factory=lambda: np.ones(0))
    coef_: FloatArray = field(default_factory=lambda: np.zeros(0))
    intercept_: float = 0.0

    def fit(self, features: npt.ArrayLike, labels: npt.ArrayLike) -> LogisticRegression:
        x = np.asarray(features, dtype=np.float64)
        y = np.asarray(labels, dtype=np.float64).ravel()
        if x.ndim != 2 or x.shape[0] != y.size:
            raise ValueError(f"features {x.shape} do not match {y.size} labels")
        self.mean_ = x.mean(axis=0)
        std = x.std(axis=0)
        self.scale_ = np.where(std > 1e-12, std, 1.0)
        z = np.hstack([np.ones((x.shape[0], 1)), (x - self.mean_) / self.scale_])
        penalty = np.full(z.shape[1], 1.0 / self.c)
        penalty[0] = 0.0
        w = np.zeros(z.shape[1])
        for _ in range(self.max_iter):
            p = _sigmoid(z @ w)
            grad = z.T @ (p - y) + penalty * w
            hess = (z * (p * (1.0 - p))[:, None]).T @ z + np.diag(penalty + 1e-9)
            step = np.linalg.solve(hess, grad)
            w -= step
            if float(np.max(np.abs(step))) < self.tol:
                break
        self.intercept_ = float(w[0])
        self.coef_ = w[1:]
        return self

    def predict_proba(self, features: npt.ArrayLike) -> FloatArray:
        """Probability of the positive class, shape (N,)."""
        x = np.asarray(features, dtype=np.float64)
        return _sigmoid(((x - self.mean_) / self.scale_) @ self.coef_ + self.intercept_)
