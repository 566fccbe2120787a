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


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_a_unit_that_is_a_combination_of_others_is_singular_however_it_rounds(dtype):
    # rank D - 1: a Cholesky of such a matrix often "succeeds" with a last pivot of round-off
    # (1e-14..4e-13 of the variance, above D * eps for D = 30), and the KL it gave was noise
    # (0.17 .. 1.26 where independent data gives 0.195); every draw must be refused
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 5000)
    for _ in range(40):
        x = rng.normal(size=(5000, 30))
        x[:, 5] = 0.3 * x[:, 3] - 1.7 * x[:, 4] + 0.2 * x[:, 7]
        with pytest.raises(ValueError, match="singular|not positive definite"):
            kl_matrix(*class_gaussians(x.astype(dtype), y, 2))
    # the same design with an independent unit: a finite KL near its expectation
    x = rng.normal(size=(5000, 30))
    assert 0.0 < kl_matrix(*class_gaussians(x, y, 2))[0, 1] < 0.5


def _fake_kl_inputs(monkeypatch, features: dict):
    """run_kl's cache: `features` (setup -> [n, D]) as every setup's representation."""
    from types import SimpleNamespace

    import torch

    from ssl_dynamics.inspect import representations

    y = np.repeat(np.arange(3), 40)
    ds = SimpleNamespace(train_y=torch.as_tensor(y), classes=["a", "b", "c"], n_classes=3)
    monkeypatch.setattr(representations, "_one_model",
                        lambda cache, s, epoch, seed: (features[s], 7, 0, "asked for"))
    return SimpleNamespace(dataset=ds), y


def test_one_setups_singular_covariance_leaves_the_others_kl(tmp_path, monkeypatch):
    import h5py

    from ssl_dynamics.inspect.outputs import Outputs
    from ssl_dynamics.inspect.representations import run_kl

    rng = np.random.default_rng(1)
    good = rng.normal(size=(120, 4)) + np.repeat(np.eye(3, 4), 40, axis=0)
    dead = good.copy()
    dead[:, 2] = 0.0  # a dead unit: every class's covariance is singular
    cache, y = _fake_kl_inputs(monkeypatch, {"simclr": good, "random_labels": dead})
    res = run_kl(cache, Outputs(tmp_path), ["random_labels", "simclr"])
    assert res["partial"]  # `inspect all` says so in its summary, and computes it again next time
    assert any(n.startswith("fig5_2: random_labels epoch 7") and "KL undefined: covariance of class 0"
               in n for n in res["notes"]), res["notes"]
    with h5py.File(tmp_path / "analysis.h5", "r") as f:
        assert sorted(f["kl"]) == ["simclr_kl"]
        np.testing.assert_allclose(f["kl/simclr_kl"][()], kl_matrix(*class_gaussians(good, y, 3)))
    assert (tmp_path / "figures" / "fig5_2_kl.png").is_file()
    # none defined: one error naming the setups
    cache, _ = _fake_kl_inputs(monkeypatch, {"simclr": dead, "random_labels": dead})
    with pytest.raises(ValueError, match="KL undefined for random_labels, simclr: covariance of class 0"):
        run_kl(cache, Outputs(tmp_path / "none"), ["random_labels", "simclr"])


def test_kl_figure_gives_each_panel_its_own_scale_and_prints_the_numbers():
    import matplotlib.pyplot as plt

    from ssl_dynamics.inspect.embed_figures import draw_kl, kl_label

    small = np.array([[0.0, 66.0, 245.0], [412.0, 0.0, 1061.0], [210.0, 423.0, 0.0]])
    large = small * 20.0
    fig = draw_kl({"simclr": small, "supervised": large, "random_labels": "covariance of class 0 is singular"},
                  ["a", "b", "c"])
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert len(panels) == 3
    for ax, k in zip(panels[:2], (small, large)):
        norm = ax.images[0].norm
        assert (norm.vmin, norm.vmax) == (k[k > 0].min(), k.max())  # its own range, not a shared one
        assert sorted(t.get_text() for t in ax.texts) == sorted(["0"] * 3 + [kl_label(v) for v in k[k > 0]])
    assert "KL undefined" in panels[2].texts[0].get_text() and not panels[2].images
    plt.close(fig)
    assert [kl_label(v) for v in (18697.4, 66.0, 9.94, 0.123)] == ["18697", "66", "9.9", "0.12"]


def test_embed_moves_an_earlier_runs_kl_aside_when_its_own_is_undefined(tmp_path, monkeypatch):
    """`inspect embed` writes the t-SNE figure, then fails KL: the KL figure and table of an
    earlier run would sit beside this run's t-SNE, unmarked; they go to stale/kl/."""
    import h5py

    from ssl_dynamics.inspect import representations
    from ssl_dynamics.inspect.outputs import Outputs

    rng = np.random.default_rng(1)
    good = rng.normal(size=(120, 4)) + np.repeat(np.eye(3, 4), 40, axis=0)
    dead = good.copy()
    dead[:, 2] = 0.0
    monkeypatch.setattr(representations, "run_tsne", lambda *a, **k: {"tables": {}, "notes": [], "figures": []})
    out = Outputs(tmp_path)
    cache, _ = _fake_kl_inputs(monkeypatch, {"simclr": good})
    representations.run_embed(cache, out, ["simclr"])
    assert (tmp_path / "figures" / "fig5_2_kl.png").is_file()
    cache, _ = _fake_kl_inputs(monkeypatch, {"simclr": dead})
    with pytest.raises(ValueError, match=r"KL undefined for simclr: .* \(the KL outputs of an earlier run, "
                                         r"fig5_2_kl, kl_pairs, were moved to .*stale/kl\)"):
        representations.run_embed(cache, out, ["simclr"])
    assert not (tmp_path / "figures" / "fig5_2_kl.png").exists()
    assert (tmp_path / "stale" / "kl" / "figures" / "fig5_2_kl.png").is_file()
    with h5py.File(tmp_path / "analysis.h5", "r") as f:
        assert "kl" not in f
