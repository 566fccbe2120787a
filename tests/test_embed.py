import numpy as np
import pytest

from ssl_dynamics.inspect import embed
from ssl_dynamics.inspect.embed import stratified_subset, tsne_2d


def test_stratified_subset_exact_counts_and_determinism():
    rng = np.random.default_rng(0)
    labels = rng.permutation(np.repeat(np.arange(5), [100, 37, 1, 250, 12]))
    idx = stratified_subset(labels, 0.25, seed=3)
    assert np.all(np.diff(idx) > 0)  # sorted, unique
    counts = np.bincount(labels, minlength=5)
    got = np.bincount(labels[idx], minlength=5)
    np.testing.assert_array_equal(got, [round(0.25 * c) for c in counts])
    np.testing.assert_array_equal(idx, stratified_subset(labels, 0.25, seed=3))
    assert not np.array_equal(idx, stratified_subset(labels, 0.25, seed=4))
    full = stratified_subset(labels, 1.0, seed=0)
    np.testing.assert_array_equal(full, np.arange(labels.size))


def test_stratified_subset_rounds_half_to_even_not_down():
    # sizes where round() and int() disagree, worked by hand (docstring: Python's round):
    # 3 -> 0.75 -> 1, 10 -> 2.5 -> 2 (half to even), 14 -> 3.5 -> 4 (half to even),
    # 7 -> 1.75 -> 2, 2 -> 0.5 -> 0 (half to even), 1 -> 0.25 -> 0
    rng = np.random.default_rng(1)
    labels = rng.permutation(np.repeat(np.arange(6), [3, 10, 14, 7, 2, 1]))
    idx = stratified_subset(labels, 0.25, seed=0)
    np.testing.assert_array_equal(np.bincount(labels[idx], minlength=6), [1, 2, 4, 2, 0, 0])
    assert np.all(np.diff(idx) > 0)
    # 0.5 of 3 is 1.5 -> 2, of 5 is 2.5 -> 2, of 1 is 0.5 -> 0, of 9 is 4.5 -> 4
    labels = np.repeat(np.arange(4), [3, 5, 1, 9])
    idx = stratified_subset(labels, 0.5, seed=2)
    np.testing.assert_array_equal(np.bincount(labels[idx], minlength=4), [2, 2, 0, 4])


def test_stratified_subset_cifar_size():
    labels = np.repeat(np.arange(10), 5000)
    idx = stratified_subset(labels, 0.25, seed=0)
    assert idx.size == 12_500
    assert np.all(np.bincount(labels[idx]) == 1250)


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5])
def test_stratified_subset_bad_fraction(fraction):
    with pytest.raises(ValueError):
        stratified_subset(np.zeros(10, dtype=int), fraction, seed=0)


def _two_clusters(n=200, d=16, seed=0):
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1], n // 2)
    x = rng.normal(size=(n, d)) + 10.0 * y[:, None]
    return x.astype(np.float32), y


def _nn_agreement(emb, y):
    dist = ((emb[:, None, :] - emb[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(dist, np.inf)
    return float(np.mean(y[dist.argmin(1)] == y))


@pytest.mark.parametrize("method", ["thesis", "opentsne", "sklearn"])
def test_tsne_small_finite_deterministic_separating(method):
    x, y = _two_clusters()
    a = tsne_2d(x, seed=0, method=method, n_jobs=1)
    assert a.shape == (200, 2) and np.all(np.isfinite(a))
    b = tsne_2d(x, seed=0, method=method, n_jobs=1)
    np.testing.assert_array_equal(a, b)
    assert _nn_agreement(a, y) > 0.9


def test_tsne_default_is_the_thesis_method():
    import inspect

    assert inspect.signature(tsne_2d).parameters["method"].default == "thesis"


def test_tsne_auto_uses_benchmark_winner():
    assert embed.AUTO_METHOD in ("opentsne", "sklearn")
    x, y = _two_clusters(n=100, seed=1)
    auto = tsne_2d(x, seed=1, method="auto", n_jobs=1)
    explicit = tsne_2d(x, seed=1, method=embed.AUTO_METHOD, n_jobs=1)
    np.testing.assert_array_equal(auto, explicit)


def test_tsne_invalid_input():
    with pytest.raises(ValueError):
        tsne_2d(np.zeros(10), seed=0)
    with pytest.raises(ValueError):
        tsne_2d(np.zeros((10, 3)), seed=0, method="umap")
    bad = np.zeros((10, 3))
    bad[0, 0] = np.nan
    with pytest.raises(ValueError):
        tsne_2d(bad, seed=0)
