import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ssl_dynamics.inspect import representations as reps
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


def _init_layer(d, n_classes, seed):
    """The probe's starting layer: nn.Linear(d, C) built right after torch.manual_seed(seed)
    (module docstring: "the layer is initialised under `seed`"), as float64 numpy."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layer = torch.nn.Linear(d, n_classes)
    return layer.weight.detach().double().numpy().copy(), layer.bias.detach().double().numpy().copy()


def _mean_ce(w, b, x, y):
    """Mean cross-entropy of the linear layer (w, b) on (x, y), float64, by hand."""
    logits = x @ w.T + b
    top = logits.max(axis=1, keepdims=True)
    log_z = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
    return float(np.mean(log_z - logits[np.arange(len(y)), y]))


def _hand_adam_probe(xtr, ytr, xte, yte, n_classes, epochs, batch_size, lr, seed):
    """Slow reference of the thesis's probe: plain Adam (betas 0.9/0.999, eps 1e-8, no weight
    decay) on the mean minibatch cross-entropy, gradients by hand, minibatch order from
    torch.randperm with a CPU generator seeded with `seed` (module docstring)."""
    x, y = xtr.astype(np.float64), np.asarray(ytr)
    w, b = _init_layer(x.shape[1], n_classes, seed)
    params = [w, b]
    m1 = [np.zeros_like(p) for p in params]
    m2 = [np.zeros_like(p) for p in params]
    gen = torch.Generator(device="cpu").manual_seed(seed)
    step, epoch_losses = 0, []
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=gen).numpy()
        total = 0.0
        for start in range(0, len(y), batch_size):
            idx = order[start:start + batch_size]
            xb, yb = x[idx], y[idx]
            total += _mean_ce(w, b, xb, yb) * len(idx)
            logits = xb @ w.T + b
            prob = np.exp(logits - logits.max(axis=1, keepdims=True))
            prob /= prob.sum(axis=1, keepdims=True)
            prob[np.arange(len(yb)), yb] -= 1.0
            prob /= len(yb)
            grads = [prob.T @ xb, prob.sum(axis=0)]
            step += 1
            for p, g, a, v in zip(params, grads, m1, m2):
                a *= 0.9
                a += 0.1 * g
                v *= 0.999
                v += 0.001 * g * g
                denom = np.sqrt(v) / np.sqrt(1 - 0.999 ** step) + 1e-8
                p -= (lr / (1 - 0.9 ** step)) * a / denom
        epoch_losses.append(total / len(y))
    xe = xte.astype(np.float64)
    return {"epoch_losses": epoch_losses, "train_loss": _mean_ce(w, b, x, y),
            "test_loss": _mean_ce(w, b, xe, np.asarray(yte)),
            "train_acc": float(np.mean((x @ w.T + b).argmax(1) == y)),
            "test_acc": float(np.mean((xe @ w.T + b).argmax(1) == np.asarray(yte)))}


def test_test_split_is_scored_on_test_labels():
    # the same images with every label moved on by one class: a perfect probe is right on all
    # of train and wrong on all of test, so scoring the test split with the training labels
    # (or on the training split) cannot pass
    xtr, ytr = _blobs(3000, seed=0)
    out = train_linear_probe(xtr, ytr, xtr, (ytr + 1) % 3, n_classes=3)
    assert out["train_acc"] == 1.0 and out["test_acc"] == 0.0
    assert out["n_train"] == out["n_test"] == 9000 and out["dim"] == 20
    assert out["test_loss"] > 1.0 > 0.5 > out["train_loss"]


def test_losses_and_accuracies_match_a_hand_written_adam():
    # nearly separable blobs, 20 epochs at lr 0.05 with a short last minibatch (300 = 4 x 64 +
    # 44): the weights keep growing, so even a weight decay of 1e-5 (L2 or decoupled) moves
    # the losses by >= 2e-5 relative, as do a wrong Adam setting, an unweighted last batch or
    # a wrong reduction; float32 against this float64 reference agrees to ~3e-7
    xtr, ytr = _blobs(100, d=6, sep=6.0, seed=7)
    xte, yte = _blobs(40, d=6, sep=6.0, seed=8)
    kw = dict(n_classes=3, epochs=20, batch_size=64, lr=0.05, seed=3)
    got = train_linear_probe(xtr, ytr, xte, yte, **kw)
    want = _hand_adam_probe(xtr, ytr, xte, yte, **kw)
    np.testing.assert_allclose(got["epoch_losses"], want["epoch_losses"], rtol=5e-6)
    assert got["train_loss"] == pytest.approx(want["train_loss"], rel=5e-6)
    assert got["test_loss"] == pytest.approx(want["test_loss"], rel=5e-6)
    assert got["train_acc"] == pytest.approx(want["train_acc"], abs=1.01 / 300)
    assert got["test_acc"] == pytest.approx(want["test_acc"], abs=1.01 / 120)
    assert want["train_loss"] < 0.1 * want["epoch_losses"][0]  # it did train


def test_losses_are_means_over_every_row_across_eval_chunks():
    # more rows than one evaluation chunk (8192) on both splits; at lr 1e-9 one Adam step moves
    # no weight by more than ~1e-9, so the losses are those of the initial layer, computed
    # here by torch's cross_entropy over the whole split at once
    g = np.random.default_rng(5)
    xtr, ytr = g.normal(size=(8300, 4)).astype(np.float32), g.integers(0, 3, 8300)
    xte, yte = (g.normal(size=(9000, 4)) * 3 + 1).astype(np.float32), g.integers(0, 3, 9000)
    out = train_linear_probe(xtr, ytr, xte, yte, n_classes=3, epochs=1, batch_size=8300,
                             lr=1e-9, seed=2)
    w, b = (torch.from_numpy(a) for a in _init_layer(4, 3, 2))

    def ce(x, y):
        return float(F.cross_entropy(torch.from_numpy(x).double() @ w.T + b, torch.from_numpy(y)))

    assert out["train_loss"] == pytest.approx(ce(xtr, ytr), rel=1e-6)
    assert out["test_loss"] == pytest.approx(ce(xte, yte), rel=1e-6)
    assert out["epoch_losses"][0] == pytest.approx(ce(xtr, ytr), rel=1e-6)  # one full batch
    assert abs(out["test_loss"] - out["train_loss"]) > 0.1  # the two splits are told apart


def test_mean_std_is_sample_std():
    # [0.5, 0.7, 0.9]: mean 0.7, squared deviations 0.04 + 0 + 0.04 over n - 1 = 2 -> std 0.2
    assert reps._mean_std([0.5, 0.7, 0.9]) == pytest.approx((0.7, 0.2), rel=1e-12)
    # [0.25, 0.75]: mean 0.5, (0.0625 + 0.0625) / 1 -> std sqrt(0.125)
    assert reps._mean_std([0.25, 0.75]) == pytest.approx((0.5, 0.125 ** 0.5), rel=1e-12)
    mean, std = reps._mean_std([0.3])  # one seed: its spread is undefined, not 0
    assert mean == 0.3 and np.isnan(std)


def test_probe_row_aggregates_seeds_with_sample_std():
    # three hand-made "seeds" of features (different separations, offset and scaled so that
    # z-scoring changes what the probe sees); each probe is run here on its own, the z-scored
    # features are built here with numpy, and the row must hold their means and ddof-1 stds
    g = np.random.default_rng(21)
    y_tr, y_te = np.repeat(np.arange(3), 30), np.repeat(np.arange(3), 10)
    centres = g.normal(size=(3, 4))
    feats = []
    for sep, scale in ((0.3, 0.05), (1.0, 20.0), (3.0, 0.5)):
        tr = (centres[y_tr] * sep + g.normal(size=(90, 4))) * scale + 7.0
        te = (centres[y_te] * sep + g.normal(size=(30, 4))) * scale + 7.0
        feats.append((tr.astype(np.float32), te.astype(np.float32)))

    def probe(tr, te):
        return train_linear_probe(tr, y_tr, te, y_te, n_classes=3, seed=4)

    raw = [probe(tr, te) for tr, te in feats]
    zs = []
    for tr, te in feats:
        mean, std = tr.mean(axis=0), tr.std(axis=0)
        zs.append(probe((tr - mean) / std, (te - mean) / std))
    tr_acc = np.array([a["train_acc"] for a in raw])
    te_acc = np.array([a["test_acc"] for a in raw])
    # preconditions: the seeds differ, and z-scoring changes the result
    assert np.ptp(tr_acc) > 0 and np.ptp(te_acc) > 0
    assert [a["test_acc"] for a in zs] != te_acc.tolist()
    row, arrays = reps._probe_row("simclr", feats, 7, "why", y_tr, y_te, 3, 4, "cpu")
    assert row["seeds"] == 3 and row["dim"] == 4 and row["epoch"] == 7
    assert row["train_acc"] == pytest.approx(tr_acc.mean(), rel=1e-12)
    assert row["test_acc"] == pytest.approx(te_acc.mean(), rel=1e-12)
    assert row["train_std"] == pytest.approx(np.std(tr_acc, ddof=1), rel=1e-12)
    assert row["test_std"] == pytest.approx(np.std(te_acc, ddof=1), rel=1e-12)
    assert row["train_acc_z"] == pytest.approx(np.mean([a["train_acc"] for a in zs]), rel=1e-12)
    assert row["test_acc_z"] == pytest.approx(np.mean([a["test_acc"] for a in zs]), rel=1e-12)
    assert (row["thesis_train"], row["thesis_test"]) == (0.8186, 0.8060)
    np.testing.assert_array_equal(arrays["simclr_train_acc"], tr_acc)
    np.testing.assert_array_equal(arrays["simclr_test_acc"], te_acc)
    np.testing.assert_array_equal(arrays["simclr_test_acc_z"], [a["test_acc"] for a in zs])
    np.testing.assert_array_equal(arrays["simclr_train_acc_z"], [a["train_acc"] for a in zs])
