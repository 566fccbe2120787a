import math

import numpy as np
import pytest

from ssl_dynamics.inspect.kl import class_gaussians, gaussian_kl, kl_matrix, shrink_covariance


def _random_spd(rng, d):
    a = rng.normal(size=(d, d))
    return a @ a.T / d + np.eye(d)


def _slow_kl(mu_y, cov_y, mu_z, cov_z):
    d = mu_y.shape[0]
    inv_z = np.linalg.inv(cov_z)
    diff = mu_z - mu_y
    return 0.5 * (
        np.trace(inv_z @ cov_y)
        + diff @ inv_z @ diff
        + np.log(np.linalg.det(cov_z) / np.linalg.det(cov_y))
        - d
    )


def test_identical_gaussians_zero():
    rng = np.random.default_rng(0)
    mu, cov = rng.normal(size=6), _random_spd(rng, 6)
    assert gaussian_kl(mu, cov, mu, cov) == pytest.approx(0.0, abs=1e-10)


@pytest.mark.parametrize("mu_y,s_y,mu_z,s_z", [(0.0, 1.0, 0.0, 1.0), (1.0, 0.5, -2.0, 3.0), (3.0, 2.0, 3.5, 0.7)])
def test_one_dimensional_closed_form(mu_y, s_y, mu_z, s_z):
    expected = math.log(s_z / s_y) + (s_y**2 + (mu_y - mu_z) ** 2) / (2 * s_z**2) - 0.5
    got = gaussian_kl([mu_y], [[s_y**2]], [mu_z], [[s_z**2]])
    assert got == pytest.approx(expected, rel=1e-12, abs=1e-14)


def test_diagonal_is_sum_of_1d_terms():
    rng = np.random.default_rng(1)
    d = 7
    mu_y, mu_z = rng.normal(size=d), rng.normal(size=d)
    s_y, s_z = rng.uniform(0.3, 2.0, size=d), rng.uniform(0.3, 2.0, size=d)
    expected = np.sum(np.log(s_z / s_y) + (s_y**2 + (mu_y - mu_z) ** 2) / (2 * s_z**2) - 0.5)
    got = gaussian_kl(mu_y, np.diag(s_y**2), mu_z, np.diag(s_z**2))
    assert got == pytest.approx(expected, rel=1e-12)


def test_kl_matrix_matches_direct_formula():
    rng = np.random.default_rng(2)
    c, d = 4, 8
    means = rng.normal(size=(c, d))
    covs = np.stack([_random_spd(rng, d) for _ in range(c)])
    m = kl_matrix(means, covs)
    assert m.shape == (c, c) and m.dtype == np.float64
    for y in range(c):
        for z in range(c):
            want = 0.0 if y == z else _slow_kl(means[y], covs[y], means[z], covs[z])
            assert m[y, z] == pytest.approx(want, rel=1e-9, abs=1e-12)
    assert np.all(m >= 0)


def test_asymmetric():
    mu = np.zeros(2)
    a, b = np.eye(2), np.diag([4.0, 0.5])
    assert gaussian_kl(mu, a, mu, b) != pytest.approx(gaussian_kl(mu, b, mu, a))
    m = kl_matrix(np.stack([mu, mu + 1]), np.stack([a, b]))
    assert m[0, 1] != pytest.approx(m[1, 0])


def test_class_gaussians_match_numpy():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 5)).astype(np.float32)
    y = rng.integers(0, 3, size=300)
    means, covs = class_gaussians(x, y, 3)
    assert means.dtype == np.float64 and covs.shape == (3, 5, 5)
    for c in range(3):
        xc = x[y == c].astype(np.float64)
        np.testing.assert_allclose(means[c], xc.mean(0), rtol=1e-12)
        np.testing.assert_allclose(covs[c], np.cov(xc, rowvar=False), rtol=1e-10, atol=1e-14)


def test_too_few_samples_singular_raises_and_shrinkage_fixes():
    rng = np.random.default_rng(4)
    d = 16
    x = np.concatenate([rng.normal(size=(200, d)), rng.normal(size=(10, d)) + 1.0])  # class 1: 10 < d+1
    y = np.array([0] * 200 + [1] * 10)
    means, covs = class_gaussians(x, y, 2)
    with pytest.raises(ValueError, match=r"class 1.*(?s:.*)shrinkage") as info:
        kl_matrix(means, covs)
    assert "D + 1" in str(info.value) and "\n" not in str(info.value)
    m = kl_matrix(means, covs, shrinkage=0.1)
    assert np.all(np.isfinite(m)) and m[0, 1] > 0 and m[1, 0] > 0


def test_exactly_singular_and_indefinite_raise():
    mu = np.zeros(3)
    singular = np.diag([1.0, 1.0, 0.0])
    indefinite = np.diag([1.0, -1.0, 1.0])
    with pytest.raises(ValueError, match="class 0"):
        kl_matrix(np.stack([mu, mu]), np.stack([singular, np.eye(3)]))
    with pytest.raises(ValueError):
        gaussian_kl(mu, np.eye(3), mu, indefinite)
    m = kl_matrix(np.stack([mu, mu + 1]), np.stack([singular, np.eye(3)]), shrinkage=0.05)
    assert np.all(np.isfinite(m))



def test_low_variance_unit_is_not_singular_and_kl_ignores_rescaling():
    # KL is invariant under x -> D x (D diagonal, invertible): a unit of tiny but real variance
    # (1e-14 relative, as a nearly dead ReLU unit gives) must not be called singular
    rng = np.random.default_rng(9)
    d = 64
    x = np.concatenate([rng.normal(size=(300, d)), rng.normal(size=(300, d)) * 1.3 + 0.5])
    y = np.repeat([0, 1], 300)
    means, covs = class_gaussians(x, y, 2)
    scale = np.ones(d)
    scale[0] = 1e-7
    scaled = kl_matrix(means * scale, covs * np.outer(scale, scale))
    np.testing.assert_allclose(scaled, kl_matrix(means, covs), rtol=1e-8)
    # ... while a unit that is an exact copy of another stays singular at any scale
    x2 = np.column_stack([x, 1e-7 * x[:, 1]])
    with pytest.raises(ValueError, match="singular"):
        kl_matrix(*class_gaussians(x2, y, 2))


def test_shrinkage_formula_and_validation():
    cov = np.diag([1.0, 3.0])
    np.testing.assert_allclose(shrink_covariance(cov, 0.5), np.diag([1.5, 2.5]))
    with pytest.raises(ValueError):
        kl_matrix(np.zeros((2, 2)), np.stack([np.eye(2)] * 2), shrinkage=1.5)


def test_class_gaussians_validation():
    with pytest.raises(ValueError, match="class 2"):
        class_gaussians(np.zeros((4, 2)), np.array([0, 0, 1, 1]), 3)
    with pytest.raises(ValueError):
        class_gaussians(np.zeros((4, 2)), np.array([0, 0, 1, 5]), 3)


def _shrunk_by_hand(cov, a):
    """(1 - a) S + a (tr S / D) I, entry by entry with explicit loops."""
    d = cov.shape[0]
    trace = sum(cov[i, i] for i in range(d))
    out = np.empty((d, d))
    for i in range(d):
        for j in range(d):
            out[i, j] = (1.0 - a) * cov[i, j] + (a * trace / d if i == j else 0.0)
    return out


@pytest.mark.parametrize("a", [0.0, 0.1, 0.37, 1.0])
def test_shrink_covariance_matches_formula_on_full_matrix(a):
    rng = np.random.default_rng(11)
    cov = _random_spd(rng, 5)  # off-diagonal entries too: they must scale by (1 - a)
    np.testing.assert_allclose(shrink_covariance(cov, a), _shrunk_by_hand(cov, a), rtol=1e-13, atol=1e-15)


def test_shrink_covariance_hand_worked():
    # hand-worked 2 x 2: S = [[2, 1], [1, 4]], tr S / D = 3, a = 0.25
    # -> 0.75 S + 0.75 I = [[2.25, 0.75], [0.75, 3.75]]
    np.testing.assert_allclose(shrink_covariance(np.array([[2.0, 1.0], [1.0, 4.0]]), 0.25),
                               [[2.25, 0.75], [0.75, 3.75]], rtol=1e-14)


@pytest.mark.parametrize("a", [0.05, 0.1, 0.6])
def test_kl_matrix_with_shrinkage_matches_slow_kl_of_shrunk_covariances(a):
    # the singular case of test_too_few_samples_singular_raises_and_shrinkage_fixes, plus a
    # well-conditioned one: every entry must be the KL of the shrunk Gaussians, computed
    # slowly (explicit inverse and determinants) on covariances shrunk by hand
    rng = np.random.default_rng(4)
    d = 16
    x = np.concatenate([rng.normal(size=(200, d)), rng.normal(size=(10, d)) + 1.0,
                        rng.normal(size=(100, d)) * 1.5 - 0.5])
    y = np.array([0] * 200 + [1] * 10 + [2] * 100)
    means, covs = class_gaussians(x, y, 3)
    m = kl_matrix(means, covs, shrinkage=a)
    shrunk = [_shrunk_by_hand(covs[k], a) for k in range(3)]
    for yy in range(3):
        assert m[yy, yy] == 0.0
        for z in range(3):
            if yy != z:
                want = _slow_kl(means[yy], shrunk[yy], means[z], shrunk[z])
                assert m[yy, z] == pytest.approx(want, rel=1e-8)
                assert m[yy, z] == pytest.approx(
                    gaussian_kl(means[yy], shrunk[yy], means[z], shrunk[z]), rel=1e-10)
