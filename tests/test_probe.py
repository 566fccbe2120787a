import numpy as np
import pytest
import torch

from ssl_dynamics.inspect.probe import raw_pixel_features, train_linear_probe


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny matmuls: one intra-op thread is faster and immune to a busy shared CPU."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _blobs(n_per, d=20, n_classes=3, sep=10.0, seed=0):
    """Gaussian blobs around fixed centres (always the same), noise drawn from `seed`."""
    centers = np.random.default_rng(12345).normal(size=(n_classes, d))
    centers *= sep / np.linalg.norm(centers, axis=1, keepdims=True)
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_classes), n_per)
    x = centers[y] + rng.normal(size=(y.size, d))
    perm = rng.permutation(y.size)
    return x[perm].astype(np.float32), y[perm]


def test_separable_blobs_reach_full_accuracy():
    xtr, ytr = _blobs(3000, seed=0)  # 36 minibatches per epoch: enough Adam steps at lr 1e-3
    xte, yte = _blobs(500, seed=1)  # same centres, fresh noise
    out = train_linear_probe(xtr, ytr, torch.from_numpy(xte), torch.from_numpy(yte), n_classes=3)
    assert out["train_acc"] >= 0.99 and out["test_acc"] >= 0.99
    assert len(out["epoch_losses"]) == 10 and out["epoch_losses"][-1] < out["epoch_losses"][0]


def test_random_labels_stay_near_chance_on_test():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3000, 20)).astype(np.float32)
    y = rng.integers(0, 3, size=3000)
    out = train_linear_probe(x[:2000], y[:2000], x[2000:], y[2000:], n_classes=3)
    assert abs(out["test_acc"] - 1 / 3) < 0.07


def test_deterministic_given_seed():
    xtr, ytr = _blobs(200, sep=1.0, seed=2)
    xte, yte = _blobs(100, sep=1.0, seed=3)
    a = train_linear_probe(xtr, ytr, xte, yte, n_classes=3, seed=5, epochs=3)
    b = train_linear_probe(xtr, ytr, xte, yte, n_classes=3, seed=5, epochs=3)
    assert a == b
    c = train_linear_probe(xtr, ytr, xte, yte, n_classes=3, seed=6, epochs=3)
    assert c["epoch_losses"] != a["epoch_losses"]


def test_does_not_touch_global_rng():
    xtr, ytr = _blobs(50, seed=0)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train_linear_probe(xtr, ytr, xtr, ytr, n_classes=3, epochs=1)
    assert torch.equal(torch.rand(3), expected)


def test_invalid_inputs():
    x, y = _blobs(10, seed=0)
    with pytest.raises(ValueError):
        train_linear_probe(x, y, x, y, n_classes=2)  # labels out of range
    with pytest.raises(ValueError):
        train_linear_probe(x, y.astype(np.float32), x, y, n_classes=3)
    with pytest.raises(ValueError):
        train_linear_probe(x, y, x[:, :5], y, n_classes=3)


def test_raw_pixel_features():
    imgs = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    imgs[0, 0, 0, 0], imgs[0, 0, 0, 1] = 0, 255
    f = raw_pixel_features(imgs)
    assert f.shape == (4, 192) and f.dtype == torch.float32
    assert float(f.min()) == 0.0 and float(f.max()) == 1.0
    torch.testing.assert_close(f[1], imgs[1].flatten().float() / 255)
    g = raw_pixel_features(imgs.numpy())
    assert isinstance(g, np.ndarray) and g.dtype == np.float32 and g.shape == (4, 192)
    np.testing.assert_allclose(g, f.numpy())
    with pytest.raises(ValueError):
        raw_pixel_features(imgs.float())
    with pytest.raises(ValueError):
        raw_pixel_features(imgs[:, :1])


def test_standardize_uses_train_statistics_only():
    import numpy as np

    from ssl_dynamics.inspect.representations import standardize

    train = np.array([[1.0, 5.0], [3.0, 5.0]])
    test = np.array([[2.0, 7.0]])
    ztr, zte = standardize(train, test)
    assert np.allclose(ztr, [[-1.0, 0.0], [1.0, 0.0]])  # constant column stays 0, no NaN
    assert np.allclose(zte, [[0.0, 2.0]])
