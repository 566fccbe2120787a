"""KL divergence between class-conditional Gaussians of a representation (Fig. 5.2).

docs/science.md, "Representations" (eq. 5.1-5.2): for each class y, the mean
mu_y and unbiased covariance Sigma_y (D = 512) of the representations of its training
images; then

    KL(N_y || N_z) = 1/2 (tr(Sigma_z^-1 Sigma_y) + (mu_z - mu_y)^T Sigma_z^-1 (mu_z - mu_y)
                          + ln |Sigma_z| / |Sigma_y| - D).

Everything is float64 and goes through Cholesky factors: with Sigma = L L^T,
tr(Sigma_z^-1 Sigma_y) = ||L_z^-1 L_y||_F^2, the Mahalanobis term is ||L_z^-1 d||^2 and
ln|Sigma| = 2 sum log diag L. No explicit inverse or determinant is formed.

A singular covariance (always the case for a class with fewer than D + 1 samples, and
common for ReLU features with dead units) makes the KL undefined; it raises `ValueError`
rather than returning NaN/inf. "Singular" includes numerically: a unit that the units before
it determine to within 1e-5 of its std (a Cholesky pivot below 1e-10 of its variance). `shrinkage=alpha` opts in to the Ledoit-Wolf-style
regularisation Sigma <- (1 - alpha) Sigma + alpha (tr Sigma / D) I.
"""
from __future__ import annotations

import numpy as np
from scipy.linalg import LinAlgError, cholesky, solve_triangular


__all__ = ["class_gaussians", "gaussian_kl", "kl_matrix", "shrink_covariance"]

# A Cholesky pivot L_kk^2 below this many units of D * eps * Sigma_kk is treated as zero: a
# rank-deficient matrix often factors "successfully" with round-off-sized pivots. Each pivot
# is compared with its own variance (Cholesky's backward error in that entry is about
# D * eps * Sigma_kk), so a valid covariance with one low-variance unit is not refused: the KL
# does not change when a dimension is rescaled.
_PIVOT_RTOL_FACTOR = 1.0
# ... and, whatever D, a pivot below 1e-10 Sigma_kk: unit k is then the linear combination of
# the units before it to within 1e-5 of its own std. Exactly dependent units (features in
# float32 or float64) measured 1e-13 to 4e-13 there, above D * eps for small D, and passed
# as "positive definite" with a KL of round-off; a real representation this degenerate
# would give Sigma^-1 entries of 1e10 / variance, a KL that is mostly round-off too.
_MIN_RELATIVE_PIVOT = 1e-10


def _as_float64(x, name: str) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor, without importing torch here
        x = x.detach().cpu().numpy()
    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be numeric: {e}") from None


def class_gaussians(features, labels, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-class mean and unbiased covariance of `features` [n, D] -> ([C, D], [C, D, D]).

    float64 throughout. Every class 0..n_classes-1 needs at least 2 samples (the unbiased
    covariance divides by count - 1); labels outside that range are an error.
    """
    x = _as_float64(features, "features")
    y = labels.detach().cpu().numpy() if hasattr(labels, "detach") else np.asarray(labels)
    if x.ndim != 2:
        raise ValueError(f"features must be 2-D [n, D], got shape {x.shape}")
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"labels must be 1-D with {x.shape[0]} entries, got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {y.dtype}")
    n_classes = int(n_classes)
    if n_classes < 1:
        raise ValueError(f"n_classes must be positive, got {n_classes}")
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise ValueError(f"labels must lie in [0, {n_classes}), got range [{y.min()}, {y.max()}]")
    if not np.all(np.isfinite(x)):
        raise ValueError("features contain NaN or inf")
    d = x.shape[1]
    means = np.zeros((n_classes, d))
    covs = np.zeros((n_classes, d, d))
    for c in range(n_classes):
        xc = x[y == c]
        if xc.shape[0] < 2:
            raise ValueError(
                f"class {c} has {xc.shape[0]} sample(s); an unbiased covariance needs at least 2"
            )
        means[c] = xc.mean(axis=0)
        centred = xc - means[c]
        covs[c] = centred.T @ centred / (xc.shape[0] - 1)
        covs[c] = 0.5 * (covs[c] + covs[c].T)
    return means, covs


def shrink_covariance(cov, shrinkage: float) -> np.ndarray:
    """(1 - a) Sigma + a (tr Sigma / D) I for a in [0, 1]."""
    cov = _as_float64(cov, "cov")
    a = float(shrinkage)
    if not (0.0 <= a <= 1.0):
        raise ValueError(f"shrinkage must be in [0, 1], got {shrinkage}")
    if a == 0.0:
        return cov
    d = cov.shape[-1]
    return (1.0 - a) * cov + a * (np.trace(cov) / d) * np.eye(d)


def _check_gaussian(mu: np.ndarray, cov: np.ndarray, name: str) -> None:
    if mu.ndim != 1:
        raise ValueError(f"mean of {name} must be 1-D, got shape {mu.shape}")
    if cov.shape != (mu.shape[0], mu.shape[0]):
        raise ValueError(
            f"covariance of {name} must be [{mu.shape[0]}, {mu.shape[0]}], got {cov.shape}"
        )
    if not (np.all(np.isfinite(mu)) and np.all(np.isfinite(cov))):
        raise ValueError(f"mean or covariance of {name} contains NaN or inf")


def _cholesky(cov: np.ndarray, name: str) -> np.ndarray:
    """Lower Cholesky factor, or ValueError if `cov` is singular / not positive definite."""
    d = cov.shape[0]
    hint = (
        f"; a class with fewer than D + 1 = {d + 1} samples always has a singular covariance,"
        " as do constant feature dimensions; regularise with --shrinkage 1e-3 (inspect embed"
        " or all; shrinkage= in Python)"
    )
    try:
        low = cholesky(cov, lower=True, check_finite=False)
    except LinAlgError:
        raise ValueError(f"covariance of {name} is not positive definite{hint}") from None
    pivots, variances = np.diag(low) ** 2, np.diag(cov)
    tol = max(_PIVOT_RTOL_FACTOR * d * np.finfo(np.float64).eps, _MIN_RELATIVE_PIVOT) * variances
    if d == 0 or not np.all(variances > 0.0) or not np.all(pivots > tol):
        raise ValueError(f"covariance of {name} is singular (numerically rank deficient){hint}")
    return low


def _kl_from_factors(mu_y, low_y, mu_z, low_z) -> float:
    d = mu_y.shape[0]
    trace = float(np.sum(solve_triangular(low_z, low_y, lower=True, check_finite=False) ** 2))
    w = solve_triangular(low_z, mu_z - mu_y, lower=True, check_finite=False)
    maha = float(w @ w)
    logdet = 2.0 * float(np.sum(np.log(np.diag(low_z))) - np.sum(np.log(np.diag(low_y))))
    kl = 0.5 * (trace + maha + logdet - d)
    if not np.isfinite(kl):
        raise ValueError("KL divergence is not finite; the covariances are too ill-conditioned")
    # KL >= 0; a round-off-sized negative value (identical Gaussians) becomes 0.
    return max(kl, 0.0)


def gaussian_kl(mu_y, cov_y, mu_z, cov_z) -> float:
    """KL(N(mu_y, cov_y) || N(mu_z, cov_z)) in nats, via Cholesky factors (float64)."""
    mu_y, cov_y = _as_float64(mu_y, "mu_y"), _as_float64(cov_y, "cov_y")
    mu_z, cov_z = _as_float64(mu_z, "mu_z"), _as_float64(cov_z, "cov_z")
    _check_gaussian(mu_y, cov_y, "N_y")
    _check_gaussian(mu_z, cov_z, "N_z")
    if mu_y.shape != mu_z.shape:
        raise ValueError(f"dimension mismatch: {mu_y.shape[0]} vs {mu_z.shape[0]}")
    return _kl_from_factors(mu_y, _cholesky(cov_y, "N_y"), mu_z, _cholesky(cov_z, "N_z"))


def kl_matrix(means, covs, shrinkage: float = 0.0) -> np.ndarray:
    """[C, C] matrix with entry [y, z] = KL(N_y || N_z); zero diagonal; float64.

    `shrinkage` in [0, 1] (default 0: none) is applied to every covariance first.
    Each covariance is factored once; a singular one raises ValueError naming the class.
    """
    means = _as_float64(means, "means")
    covs = _as_float64(covs, "covs")
    if means.ndim != 2:
        raise ValueError(f"means must be [C, D], got shape {means.shape}")
    c, d = means.shape
    if covs.shape != (c, d, d):
        raise ValueError(f"covs must be [{c}, {d}, {d}], got shape {covs.shape}")
    lows = []
    for k in range(c):
        _check_gaussian(means[k], covs[k], f"class {k}")
        cov = shrink_covariance(covs[k], shrinkage)
        lows.append(_cholesky(cov, f"class {k}"))
    out = np.zeros((c, c))
    for y in range(c):
        for z in range(c):
            if y != z:
                out[y, z] = _kl_from_factors(means[y], lows[y], means[z], lows[z])
    return out
