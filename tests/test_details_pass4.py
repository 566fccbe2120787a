"""Details that break silently when they are wrong, pass 4: the guard of the central position,
the settings the thesis's t-SNE runs with and the images it is drawn on, ... Each test fails
when its detail is changed."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from _util import fake_activation_workspace, force_channels

# ------------------------------------------------------------------------------ activation maximization


def test_an_input_whose_feature_map_ends_at_the_central_position_is_refused_by_name():
    """Block 1 has stride 1 and central position 5: a 5x5 input gives a 5x5 map, where index 5
    is one past the end. That is a one-line ValueError naming the sizes, not an IndexError from
    inside the indexing; a 6x6 input (index 5 is the last) is fine."""
    from ssl_dynamics.inspect.activations import central_activations
    from ssl_dynamics.models import CifarResNet18

    torch.manual_seed(0)
    model = CifarResNet18(4).eval()
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match=r"too small for block 1: the feature map is \(5, 5\), the central position is 5"):
        central_activations(model, 1, torch.rand(1, 3, 5, 5, generator=g), [0])
    with torch.no_grad():
        assert central_activations(model, 1, torch.rand(1, 3, 6, 6, generator=g), [0]).shape == (1,)


# ------------------------------------------------------------------------------ t-SNE (Fig. 5.1)


class _RecordingTSNE:
    """A stand-in for sklearn.manifold.TSNE that records how it was built and what it was fed."""

    made: list[dict] = []
    fed: list[np.ndarray] = []

    def __init__(self, **kwargs):
        type(self).made.append(kwargs)

    def fit_transform(self, x):
        type(self).fed.append(np.array(x))
        return np.zeros((len(x), 2))


@pytest.fixture
def recording_tsne(monkeypatch):
    import sklearn.manifold

    _RecordingTSNE.made, _RecordingTSNE.fed = [], []
    monkeypatch.setattr(sklearn.manifold, "TSNE", _RecordingTSNE)
    return _RecordingTSNE


def test_the_thesis_tsne_runs_with_scikit_learns_2021_defaults(recording_tsne):
    """docs/science.md, Fig. 5.1: the thesis's notebook called TSNE() of 2021: Barnes-Hut,
    init='random', learning_rate=200, perplexity 30, early exaggeration 12, 1000 iterations in
    all; seeded with the t-SNE seed (another seed, another random start)."""
    from ssl_dynamics.inspect.embed import tsne_2d

    x = np.random.default_rng(0).normal(size=(100, 5))
    tsne_2d(x, seed=7, n_jobs=1)
    tsne_2d(x, seed=8, n_jobs=1, method="thesis")
    first, second = recording_tsne.made
    assert {k: first[k] for k in ("n_components", "init", "learning_rate", "perplexity", "early_exaggeration",
                                  "max_iter", "method", "metric", "random_state")} == {
        "n_components": 2, "init": "random", "learning_rate": 200.0, "perplexity": 30.0,
        "early_exaggeration": 12.0, "max_iter": 1000, "method": "barnes_hut", "metric": "euclidean",
        "random_state": 7}
    assert second["random_state"] == 8


def test_a_small_input_lowers_the_perplexity_to_a_third_of_its_neighbours(recording_tsne):
    """Perplexity 30 needs more than 30 points (scikit-learn refuses perplexity >= n): 10 points
    run at (10 - 1) / 3 = 3; 100 points keep 30 (99 / 3 = 33 is larger). Fewer than 4 points
    are refused by name."""
    from ssl_dynamics.inspect.embed import tsne_2d

    rng = np.random.default_rng(0)
    tsne_2d(rng.normal(size=(10, 4)), seed=0, n_jobs=1)
    tsne_2d(rng.normal(size=(100, 4)), seed=0, n_jobs=1)
    assert [m["perplexity"] for m in recording_tsne.made] == [3.0, 30.0]
    with pytest.raises(ValueError, match="need at least 4 points, got 3"):  # nothing to embed
        tsne_2d(rng.normal(size=(3, 4)), seed=0, n_jobs=1)


def test_fig51_embeds_the_representations_of_a_stratified_quarter_of_train(tmp_path, monkeypatch):
    """run_tsne embeds the rows of the class-stratified 25% subset (10 of each class's 40 images)
    -- those images' own representations, in the subset's order -- and saves that subset."""
    from types import SimpleNamespace

    import h5py

    from ssl_dynamics.inspect import representations
    from ssl_dynamics.inspect.embed import stratified_subset
    from ssl_dynamics.inspect.outputs import Outputs

    y = np.repeat(np.arange(3), 40)
    feats = np.stack([np.arange(120.0), -np.arange(120.0)], axis=1)  # row i says it is image i
    ds = SimpleNamespace(train_y=torch.as_tensor(y), classes=["a", "b", "c"], n_classes=3)
    monkeypatch.setattr(representations, "_one_model", lambda cache, s, epoch, seed: (feats, 5, 0, "asked for"))
    fed = []
    monkeypatch.setattr(representations, "tsne_2d",
                        lambda x, seed, method: fed.append(np.array(x)) or np.zeros((len(x), 2)))
    representations.run_tsne(SimpleNamespace(dataset=ds), Outputs(tmp_path), ["simclr"], tsne_seed=3)
    (x,) = fed
    ids = x[:, 0].astype(int)
    assert np.array_equal(x[:, 1], -x[:, 0])
    assert np.array_equal(np.bincount(y[ids], minlength=3), [10, 10, 10])
    assert np.array_equal(ids, stratified_subset(y, 0.25, 3))
    with h5py.File(tmp_path / "analysis.h5", "r") as f:
        assert np.array_equal(f["tsne/tsne_subset"][()], ids)


def _width4(seed: int = 0):
    from ssl_dynamics.models import CifarResNet18

    torch.manual_seed(seed)
    return CifarResNet18(4).eval()


def test_live_channels_probes_in_eval_mode_and_leaves_a_training_model_as_it_was():
    """Called on a model in training mode, live_channels decides "fires" as in eval mode (the
    same channels as on an eval copy) and leaves BatchNorm's running statistics and every
    module's train flag untouched."""
    import copy

    from ssl_dynamics.inspect.activations import live_channels

    model = _width4(3)
    with torch.no_grad():  # running statistics that differ from a batch's own
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0)
    order = list(range(8))
    expected = live_channels(copy.deepcopy(model).eval(), 2, order, 4, seed=1, max_redraws=3)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert live_channels(model, 2, order, 4, seed=1, max_redraws=3) == expected
    assert all(m.training for m in model.modules())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k



# ------------------------------------------------------------------------------ the CIFAR ResNet-18


def _slow_resnet18(net, x):
    """docs/science.md's network written out with torch.nn.functional and the module's weights:
    3x3 stride-1 stem conv + BN + ReLU, no max-pool; four stages of two BasicBlocks, strides
    1, 2, 2, 2, each relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)), the shortcut a 1x1
    conv + BN where the shape changes (the first block of stages 2-4); 4x4 average pool."""
    import torch.nn.functional as F

    def bn(m, t):  # eval mode: the running statistics
        shape = (1, -1, 1, 1)
        return ((t - m.running_mean.view(shape)) / torch.sqrt(m.running_var.view(shape) + m.eps)
                * m.weight.view(shape) + m.bias.view(shape))

    t = F.relu(bn(net.stem[1], F.conv2d(x, net.stem[0].weight, stride=1, padding=1)))
    for i, stride in enumerate((1, 2, 2, 2)):
        for j, b in enumerate(net.stages[i]):
            s = stride if j == 0 else 1
            out = F.relu(bn(b.bn1, F.conv2d(t, b.conv1.weight, stride=s, padding=1)))
            out = bn(b.bn2, F.conv2d(out, b.conv2.weight, stride=1, padding=1))
            if i > 0 and j == 0:
                short = bn(b.shortcut[1], F.conv2d(t, b.shortcut[0].weight, stride=s))
            else:
                short = t
            t = F.relu(out + short)
    assert t.shape[-2:] == (4, 4)
    return F.avg_pool2d(t, 4).flatten(1)


def test_the_cifar_resnet18_computes_the_network_of_the_spec():
    """The representation of CifarResNet18 (eval mode, BatchNorm statistics made non-trivial)
    equals the spec's network written out by hand, and so does forward_to's map after each
    block's ReLU (the same blocks: the output is the last one's)."""
    net = _width4(5)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.3)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.randn(m.num_features, generator=g))
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.5)
        x = torch.randn(3, 3, 32, 32, generator=g)
        fast = net(x)
        slow = _slow_resnet18(net, x)
    assert fast.shape == (3, 32)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------ phase-two statistics


def test_an_exact_half_with_100_trials_per_image_reaches_p0_half():
    """10 seeds x 10 replays: r_t = count / 100. These 11 counts sum to exactly half of
    11 x 100 trials, while the float mean of the 11 rates is 0.49999999999999994; p_hat is the
    exact 0.5 and reaches p0 = 0.5 (rates with denominators up to 2**26 are read exactly)."""
    from ssl_dynamics.inspect import stats as st

    counts = [41, 36, 67, 57, 25, 32, 72, 60, 50, 34, 76]
    assert sum(counts) * 2 == 100 * len(counts)
    assert np.mean(np.array(counts) / 100) < 0.5  # the plain float mean misses the tie
    c = np.zeros((10, 1, 10, len(counts)), np.uint8)
    for k, n in enumerate(counts):
        c[:, 0, :, k] = (np.arange(100) < n).reshape(10, 10)
    p_hat = st.epoch_means(st.r_t(c))
    assert p_hat[0] == 0.5
    assert st.first_epoch_reaching(p_hat, 0.5) == 0
    assert st.per_class_mean(st.r_t(c), np.zeros(len(counts), np.int64), 1)[0, 0] == 0.5


def test_fig45_keeps_tied_images_in_probe_order():
    """spread_rows sorts by r_t stably: tied images keep their probe order ([1, 3] then
    [0, 2] for r = 0.5, 0.2, 0.5, 0.2), so the chosen images are reproducible."""
    from ssl_dynamics.inspect import stats as st

    r = np.array([0.5, 0.2, 0.5, 0.2])
    order, rs, rts = st.spread_rows(r, np.arange(8.0).reshape(2, 4), step=1)
    assert order.tolist() == [1, 3, 0, 2]
    assert rs.tolist() == [0.2, 0.2, 0.5, 0.5]
    assert rts.tolist() == [[1.0, 3.0, 0.0, 2.0], [5.0, 7.0, 4.0, 6.0]]
    assert st.spread_rows(r, np.zeros((1, 4)), step=2)[0].tolist() == [1, 0]


# ------------------------------------------------------------------------------ Fig. 5.4 end to end


def test_fig54_picks_live_channels_from_the_starts_the_ascent_then_uses(tmp_path, monkeypatch):
    """A channel is "live" when its start (seeded by (channel seed, channel), redrawn up to
    max_redraws times) fires; the ascent must start from those same starts, with the step size
    and L2 weight asked for, or a channel found live may not fire in the ascent (an empty slot)
    and the images are not the ones the table's settings describe."""
    from ssl_dynamics.inspect import activation_figure
    from ssl_dynamics.inspect.outputs import Outputs
    from ssl_dynamics.models import Network

    calls = {"live": [], "ascent": []}
    real_live, real_max = activation_figure.live_channels, activation_figure.maximize_activations

    def live(*args, **kw):
        calls["live"].append(kw)
        return real_live(*args, **kw)

    def ascent(*args, **kw):
        calls["ascent"].append(kw)
        return real_max(*args, **kw)

    monkeypatch.setattr(activation_figure, "live_channels", live)
    monkeypatch.setattr(activation_figure, "maximize_activations", ascent)
    ws = fake_activation_workspace(tmp_path, monkeypatch, {"supervised": Network(_width4(), 10)})
    activation_figure.run_activations(ws, Outputs(tmp_path / "out"), ["supervised"], steps=1, n_channels=2,
                                      channel_seed=4, progress=False, lr=0.5, l2=0.03, max_redraws=6)
    assert len(calls["live"]) == len(calls["ascent"]) == 4  # one per block
    for lv, asc in zip(calls["live"], calls["ascent"]):
        assert (lv["seed"], lv["max_redraws"]) == (asc["seed"], asc["max_redraws"]) == (4, 6)
        assert (asc["lr"], asc["l2"], asc["steps"]) == (0.5, 0.03, 1)


def test_fig54_a_block_narrower_than_the_channels_asked_for_has_no_empty_slot(tmp_path, monkeypatch):
    """6 channels asked for; block 1 of a width-4 network has only 4, all firing: it shows all 4
    and no slot is empty (a slot exists only for a channel the block has); blocks 2-4 show 6."""
    from ssl_dynamics.inspect.activation_figure import run_activations
    from ssl_dynamics.inspect.outputs import Outputs
    from ssl_dynamics.models import Network

    model = _width4()
    for b in (1, 2, 3, 4):
        force_channels(model, b, alive=range(4 * 2 ** (b - 1)))
    ws = fake_activation_workspace(tmp_path, monkeypatch, {"supervised": Network(model, 10)})
    res = run_activations(ws, Outputs(tmp_path / "out"), ["supervised"], steps=0, n_channels=6,
                          channel_seed=0, progress=False, max_redraws=2)
    rows = {r["block"]: (r["channels"], r["no_live_channel"]) for r in res["tables"]["activations"]}
    assert rows == {1: (4, 0), 2: (6, 0), 3: (6, 0), 4: (6, 0)}
    assert not any("can fire" in n for n in res["notes"])


def test_fig54_draws_the_slots_left_empty_when_no_live_channel_is_left(tmp_path, monkeypatch):
    """3 channels asked for in block 2, only one of its 8 fires: its cell has 3 slots, one
    image and 2 dark-red empty slots, and says so under the cell."""
    from ssl_dynamics.inspect import activation_figure
    from ssl_dynamics.inspect.activation_figure import BORDER, DEAD_TILE
    from ssl_dynamics.inspect.activations import choose_channels
    from ssl_dynamics.inspect.outputs import Outputs
    from ssl_dynamics.models import Network

    order = choose_channels(8, 8, seed=0 + 2)  # block 2's order for channel seed 0
    model = force_channels(_width4(), 2, dead=[c for c in order if c != order[2]], alive=[order[2]])
    drawn = []
    real = activation_figure.draw_activations

    def keep(*args):
        fig = real(*args)
        drawn.append(fig)
        return fig

    monkeypatch.setattr(activation_figure, "draw_activations", keep)
    ws = fake_activation_workspace(tmp_path, monkeypatch, {"supervised": Network(model, 10)})
    activation_figure.run_activations(ws, Outputs(tmp_path / "out"), ["supervised"], steps=0, n_channels=3,
                                      channel_seed=0, progress=False, max_redraws=2)
    ax = drawn[0].axes[1]  # row 2: block 2
    assert ax.get_xlabel() == "2 slot(s) empty: no live channel left"
    grid = np.asarray(ax.images[0].get_array())
    s = 19 + BORDER  # 3 slots: a 2 x 2 grid of 19-pixel tiles
    assert grid.shape[:2] == (2 * s + BORDER, 2 * s + BORDER)
    for r, c in ((0, 1), (1, 0)):  # slots 1 and 2
        tile = grid[BORDER + r * s:BORDER + r * s + 19, BORDER + c * s:BORDER + c * s + 19]
        np.testing.assert_allclose(tile, np.broadcast_to(DEAD_TILE, (19, 19, 3)))


# ------------------------------------------------------------------------------ Fig. 5.2 (KL) and the model they read


def _slow_gaussian_kl(xa: np.ndarray, xb: np.ndarray) -> float:
    """KL(N_a || N_b) of eq. 5.1-5.2 from the two classes' samples, unbiased covariances."""
    ma, mb = xa.mean(axis=0), xb.mean(axis=0)
    sa, sb = np.cov(xa, rowvar=False, ddof=1), np.cov(xb, rowvar=False, ddof=1)
    inv_b = np.linalg.inv(sb)
    d = mb - ma
    return 0.5 * (np.trace(inv_b @ sa) + d @ inv_b @ d + np.log(np.linalg.det(sb) / np.linalg.det(sa)) - len(ma))


def test_kl_rows_say_kl_from_the_first_class_to_the_second(tmp_path, monkeypatch):
    """KL is not symmetric: the row (from a, to b) holds KL(N_a || N_b), checked against the
    formula on three classes of very different spreads."""
    from types import SimpleNamespace

    from ssl_dynamics.inspect import representations
    from ssl_dynamics.inspect.outputs import Outputs

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 40)
    x = rng.normal(size=(120, 2)) * np.repeat([[1.0, 1.0], [4.0, 0.5], [0.3, 2.0]], 40, axis=0)
    x += np.repeat([[0.0, 0.0], [1.0, 0.0], [0.0, -2.0]], 40, axis=0)
    ds = SimpleNamespace(train_y=torch.as_tensor(y), classes=["a", "b", "c"], n_classes=3)
    monkeypatch.setattr(representations, "_one_model", lambda cache, s, epoch, seed: (x, 7, 0, "asked for"))
    representations.run_kl(SimpleNamespace(dataset=ds), Outputs(tmp_path), ["simclr"])
    import json

    rows = json.loads((tmp_path / "tables" / "kl_pairs.json").read_text())["rows"]
    assert len(rows) == 6
    names = ["a", "b", "c"]
    for r in rows:
        a, b = names.index(r["from"]), names.index(r["to"])
        assert r["kl"] == pytest.approx(_slow_gaussian_kl(x[y == a], x[y == b]), rel=1e-6)
    ab = next(r["kl"] for r in rows if (r["from"], r["to"]) == ("a", "b"))
    ba = next(r["kl"] for r in rows if (r["from"], r["to"]) == ("b", "a"))
    assert abs(ab - ba) > 0.5  # the case tells the two directions apart


def test_the_representation_analyses_default_to_the_first_seed_with_the_epoch(monkeypatch):
    """Without --seed, t-SNE and KL read the first seed that has the chosen epoch (2 of [2, 5])."""
    from types import SimpleNamespace

    from ssl_dynamics.inspect import representations

    monkeypatch.setattr(representations, "resolve_epoch", lambda run, setup, epoch: (9, "last"))
    cache = SimpleNamespace(run=None, seeds_with=lambda s, e: [2, 5],
                            get=lambda s, sd, e: ((s, sd, e), None))
    assert representations._one_model(cache, "simclr", None, None) == (("simclr", 2, 9), 9, 2, "last")
    assert representations._one_model(cache, "simclr", None, 5)[2] == 5


# ------------------------------------------------------------------------------ the r_t store


def test_a_store_setup_without_a_recorded_dataset_is_not_taken_for_another_runs():
    """A setup evaluated before the dataset's sha256 was recorded has nothing to compare: it is
    read (beside a setup recorded with this run's dataset); a setup recorded with another
    dataset is refused, named by the start of its sha256."""
    from pathlib import Path
    from types import SimpleNamespace

    from ssl_dynamics.errors import UserError
    from ssl_dynamics.inspect.rtdata import _check_dataset

    def store(**recorded):
        return SimpleNamespace(setups=lambda: list(recorded),
                               attrs=lambda s: {} if recorded[s] is None else {"dataset_sha256": recorded[s]})

    ours, theirs = "a" * 64, "b" * 64
    _check_dataset(store(simclr=None, supervised=ours), Path("rt.zarr"), ours)
    _check_dataset(store(simclr=None), Path("rt.zarr"), ours)
    with pytest.raises(UserError, match=r"evaluated on another dataset \(sha256 bbbbbbbbbbbb\.\.\.\)"):
        _check_dataset(store(simclr=None, supervised=theirs), Path("rt.zarr"), ours)


def _small_store(path):
    from ssl_dynamics.inspect.store import RtStore

    store = RtStore(path)
    store.init_probes(np.array([7, 3, 9, 1]), np.array([0, 1, 0, 1]), "bank")
    store.ensure_setup("supervised", [4, 2], 3, 2, 4, 1, np.array([1, 0, 1, 0]),
                       {"setup_config": {"name": "supervised"}})
    return store


def test_the_store_state_changes_with_each_chunk_evaluated_or_forgotten(tmp_path):
    """store_state fingerprints which checkpoints are evaluated: a chunk written (here without
    a checkpoint record) or forgotten changes it, so `inspect all` never calls analyses of the
    old contents up to date."""
    from ssl_dynamics.inspect.rtdata import store_state

    path = tmp_path / "s.zarr"
    store = _small_store(path)
    before = store_state(path)
    store.write("supervised", 1, 2, np.ones((2, 4, 1)), np.full((2, 4, 1), 0.5))
    written = store_state(path)
    store.forget("supervised", 1, 2)
    forgotten = store_state(path)
    assert len({before, written}) == 2 and len({written, forgotten}) == 2


def test_a_failed_export_leaves_the_earlier_archive_whole(tmp_path, monkeypatch):
    """export_h5 writes the archive under a temporary name and renames it: an export that fails
    part-way leaves the archive an earlier export wrote byte for byte as it was."""
    from ssl_dynamics.inspect import rtdata

    store = _small_store(tmp_path / "s.zarr")
    store.write("supervised", 0, 1, np.ones((2, 4, 1)), np.full((2, 4, 1), 0.5))
    target = tmp_path / "rt.h5"
    rtdata.export_h5(store, target)
    first = target.read_bytes()

    def fails(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(rtdata, "_export_setup", fails)
    with pytest.raises(RuntimeError, match="disk full"):
        rtdata.export_h5(store, target)
    assert target.read_bytes() == first
    assert rtdata.load_rt(target)["supervised"].correct.shape == (2, 3, 2, 4)


def test_seeding_a_work_store_that_another_process_made_meanwhile_uses_it(tmp_path):
    """seed_work_store copies a finished store into the work folder; when the work store is
    there by the time it holds the lock (another process seeded it), it is used as it is:
    nothing rebuilt over it, nothing lost from it."""
    from ssl_dynamics.inspect.rtdata import load_rt, seed_work_store

    source = _small_store(tmp_path / "s.zarr")
    source.write("supervised", 0, 1, np.ones((2, 4, 1)), np.full((2, 4, 1), 0.5))
    target = tmp_path / "work" / "rt.zarr"
    target.parent.mkdir()
    seed_work_store(tmp_path / "s.zarr", "bank", target)
    made = (target.stat().st_ino, (target / "zarr.json").stat().st_mtime_ns)
    seed_work_store(tmp_path / "s.zarr", "bank", target)  # the second process
    assert (target.stat().st_ino, (target / "zarr.json").stat().st_mtime_ns) == made
    assert load_rt(target)["supervised"].valid.tolist() == [[False, True, False], [False, False, False]]


def test_absent_seeds_are_those_without_any_evaluated_checkpoint():
    """A seed with some epochs evaluated (seed 3: its first only) takes part; only a seed with
    none at all (seed 5) is absent from every mean."""
    from ssl_dynamics.inspect.rtdata import SetupRt, absent_seeds

    valid = np.array([[True, True], [True, False], [False, False]])
    z = np.zeros((3, 2, 1, 2), np.uint8)
    d = SetupRt("x", z, z.astype(np.float32), valid, np.array([1, 3, 5]), np.array([1, 2]),
                np.zeros(2, int), np.zeros(2, int), np.arange(2))
    assert absent_seeds(d) == [5]


# ------------------------------------------------------------------------------ `inspect all`: up to date


def test_a_step_is_up_to_date_only_with_its_stamp_files_and_groups_unchanged(tmp_path):
    """After a step succeeded, it is up to date while its stamp is the same and every file and
    analysis.h5 group it wrote still holds what it wrote; another stamp, a file changed, or the
    group rewritten with other values makes it compute again."""
    from ssl_dynamics.inspect.outputs import Outputs
    from ssl_dynamics.inspect.pipeline import StepRecord, _Session, run_tracked

    out = Outputs(tmp_path)
    sess = _Session(None, out, StepRecord(out), lambda *_: None, ())

    def step():
        out.write_table("class_rt", [{"setup": "simclr"}])
        out.write_arrays("classes", {"r": np.arange(3.0)})
        return {}

    run_tracked(sess, "classes", step, lambda: "stamp")
    record = sess.record
    assert record.current("classes", "stamp")
    assert not record.current("classes", "another stamp")
    table = tmp_path / "tables" / "class_rt.json"
    kept = table.read_bytes()
    table.write_bytes(kept + b" ")
    assert not record.current("classes", "stamp")
    table.write_bytes(kept)
    assert record.current("classes", "stamp")
    Outputs(tmp_path).write_arrays("classes", {"r": np.arange(3.0) + 1})
    assert not record.current("classes", "stamp")


# ------------------------------------------------------------------------------ per-example difficulty


def _examples_setup(name, correct, epochs):
    from ssl_dynamics.inspect.rtdata import SetupRt

    s, e, m, k = correct.shape
    labels = np.arange(k) % 3
    return SetupRt(setup=name, correct=correct.astype(np.uint8), p_true=correct * 0.6 + 0.2,
                   valid=np.ones((s, e), bool), seeds=np.arange(s), epochs=np.asarray(epochs),
                   labels=labels, targets=labels, probe_indices=np.arange(k) + 100)


def test_hardness_rank_is_each_images_place_from_hardest_and_a_setup_ending_at_start_epoch_is_ranked(tmp_path):
    """One seed, one replay, start epoch 2: over epochs 2-4 images 0-4 are right in 2, 0, 1, 3, 3
    of them, so their hardness ranks (0 = hardest) are 2, 0, 1, 3, 4 -- each image's place in
    the hardest-first order, not the order itself. A setup whose last evaluated epoch is the
    start epoch itself has measures and ranks too."""
    import pandas as pd

    from ssl_dynamics.inspect.examples import ExampleOptions, run_examples
    from ssl_dynamics.inspect.outputs import Outputs

    right_in = {0: 2, 1: 0, 2: 1, 3: 3, 4: 4}  # each image right in its last n epochs
    a = np.zeros((1, 5, 1, 5), np.uint8)
    for img, n in right_in.items():
        a[0, 5 - n:, 0, img] = 1  # right in the last n epochs
    b = np.zeros((1, 3, 1, 5), np.uint8)
    b[0, 2, 0, :2] = 1  # epoch 2: images 0 and 1 right
    data = {"simclr": _examples_setup("simclr", a, [0, 1, 2, 3, 4]),
            "supervised": _examples_setup("supervised", b, [0, 1, 2])}
    res = run_examples(data, Outputs(tmp_path), ExampleOptions(start_epoch=2, ref_epochs=(2,), progress=False))
    df = pd.read_parquet(tmp_path / "tables" / "examples.parquet")
    sim = df[df.setup == "simclr"].sort_values("probe")
    assert sim.correctness.tolist() == pytest.approx([2 / 3, 0.0, 1 / 3, 1.0, 1.0])
    assert sim.hardness_rank.tolist() == [2, 0, 1, 3, 4]
    sup = df[df.setup == "supervised"].sort_values("probe")
    assert sup.correctness.tolist() == [1.0, 1.0, 0.0, 0.0, 0.0]
    assert sorted(sup.hardness_rank.tolist()) == [0, 1, 2, 3, 4]
    assert set(sup.probe[sup.hardness_rank >= 3]) == {0, 1}
    assert not any("--start-epoch" in n for n in res["notes"])


def test_rank_agreement_counts_censored_images_only_among_those_compared():
    """censored_a/b count, of the images both setups have a first-learned epoch for (images 0
    and 3 here), those more than half of a setup's pairs never learned: an image compared on
    neither side (1: NaN in a, 2: NaN in b) is not counted, however censored."""
    from ssl_dynamics.inspect.examples import _agreement

    nan = np.nan
    columns = {"a": {"first_learned_median": np.array([1.0, nan, 3.0, 4.0]),
                     "never_learned_share": np.array([0.6, 0.9, 0.0, 0.0])},
               "b": {"first_learned_median": np.array([2.0, 3.0, nan, 1.0]),
                     "never_learned_share": np.array([0.0, 0.7, 0.8, 0.0])}}
    _, rows = _agreement({"a": None, "b": None}, columns, [])
    assert [(r["n_images"], r["censored_a"], r["censored_b"]) for r in rows] == [(2, 1, 0)]


def test_the_image_grids_of_a_random_label_setup_name_the_label_it_trained_on(tmp_path, monkeypatch):
    """Random labels: each caption gives the true class and the (permuted) label the setup
    trained on; a setup trained on the true labels gives the class alone."""
    import dataclasses

    from ssl_dynamics.inspect import examples
    from ssl_dynamics.inspect.outputs import Outputs

    captions = {}

    def grid(images, caps, setup, kind, by, out):
        captions[setup, kind] = caps
        return tmp_path / f"{setup}_{kind}.png"

    monkeypatch.setattr(examples.ef, "image_grid", grid)
    c = np.ones((1, 3, 1, 3), np.uint8)
    c[0, :, 0, 0] = 0  # image 0 never right: the hardest
    shuffled = dataclasses.replace(_examples_setup("random_labels", c, [0, 1, 2]), targets=np.array([2, 0, 1]))
    data = {"supervised": _examples_setup("supervised", c, [0, 1, 2]), "random_labels": shuffled}
    examples.run_examples(data, Outputs(tmp_path), examples.ExampleOptions(ref_epochs=(1,), n_grid=1, progress=False),
                          images=np.zeros((3, 3, 4, 4), np.uint8), class_names=["cat", "dog", "car"])
    assert captions["random_labels", "hardest"] == ["cat\ntrained: car\n0.00"]
    assert captions["supervised", "hardest"] == ["cat\n0.00"]


# ------------------------------------------------------------------------------ the store's layout and its repair


def test_an_uncommitted_setup_group_needs_the_upgrade_even_with_fresh_metadata(tmp_path):
    """A setup group without all of its committing attributes (seeds, epochs, shape) was cut
    short while being made: the store needs the repair even when every array, coordinate
    and the consolidated metadata look in order."""
    import json

    from ssl_dynamics.inspect import storedims

    path = tmp_path / "s.zarr"
    _small_store(path).consolidate()
    assert not storedims.needs_upgrade(path)
    meta_file = path / "supervised" / "zarr.json"
    meta = json.loads(meta_file.read_text())
    del meta["attributes"]["seeds"]
    meta_file.write_text(json.dumps(meta))
    storedims.consolidate(path)
    assert storedims.needs_upgrade(path)


def test_consolidated_metadata_naming_other_nodes_than_the_files_is_stale():
    """The consolidated copy is stale when it lists a node the store no longer has, or lacks
    one it has, even where the nodes both list agree."""
    from ssl_dynamics.inspect.storedims import _consolidated_stale

    node = {"shape": [2], "dimension_names": ["seed"], "attributes": {}}
    top = {"consolidated_metadata": {"metadata": {"g/seed": node, "g/epoch": node}}}
    assert not _consolidated_stale(top, {"g/seed": node, "g/epoch": node})
    assert _consolidated_stale(top, {"g/seed": node})  # g/epoch was removed


def test_repairing_a_seed_axis_refuses_an_array_damaged_on_another_axis(tmp_path):
    """fit_to_attrs resizes a seed-axis array left longer by a kill while the seed axis grew;
    one that disagrees on another axis (the probe axis here) is damage: a ValueError, not a
    resize that would hide it."""
    from ssl_dynamics.inspect import storedims

    store = _small_store(tmp_path / "s.zarr")
    group = store.group["supervised"]
    attrs = store.attrs("supervised")
    coords = storedims.coordinate_values(attrs, *store.probes())
    group["p_true"].resize((3, 3, 2, 4, 1))  # a third seed row a kill left: repaired
    storedims.fit_to_attrs(group, attrs, coords)
    assert list(group["p_true"].shape) == [2, 3, 2, 4, 1]
    group["p_true"].resize((2, 3, 2, 5, 1))
    with pytest.raises(ValueError, match=r"p_true has shape \[2, 3, 2, 5, 1\]"):
        storedims.fit_to_attrs(group, attrs, coords)


# ------------------------------------------------------------------------------ Tables 4.1/4.2: which epochs


def _rt_setup(correct, epochs):
    from ssl_dynamics.inspect.rtdata import SetupRt

    s, e, _, k = correct.shape
    return SetupRt("supervised", correct.astype(np.uint8), correct.astype(np.float32), np.ones((s, e), bool),
                   np.arange(s), np.array(epochs), np.arange(k) % 2, np.arange(k) % 2, np.arange(k))


def test_binomial_levels_are_searched_after_the_initialization_and_fig45_falls_back_to_the_last_epoch(tmp_path):
    """Epoch 0 (the initialization) is never the epoch of a p0 level (the thesis had no epoch-0
    statistics): with p_hat 0.5 at epochs 0 and 2 and 0.25 at epoch 1, p0 = 0.5 is reached at
    epoch 2. A setup that reaches no level has Fig. 4.5 drawn at its last evaluated epoch."""
    from ssl_dynamics.inspect.binomial import run_binomial
    from ssl_dynamics.inspect.outputs import Outputs

    c = np.zeros((2, 3, 2, 8), np.uint8)
    c[:, 0, :, :4] = 1  # epoch 0: half right
    c[:, 1, :, :2] = 1  # epoch 1: a quarter
    c[:, 2, :, 4:] = 1  # epoch 2: half again
    res = run_binomial({"supervised": _rt_setup(c, [0, 1, 2])}, Outputs(tmp_path / "a"), p0s=[0.5],
                       draws=1, null_sims=1)
    assert [r["epoch"] for r in res["tables"]["table4_1_chisquare"]] == [2]
    assert [r["epoch"] for r in res["tables"]["table4_2_mae"]] == [2]
    res = run_binomial({"supervised": _rt_setup(c, [0, 1, 2])}, Outputs(tmp_path / "b"), p0s=[0.9],
                       draws=1, null_sims=1)
    assert any("drawn at its last evaluated epoch 2" in n for n in res["notes"]), res["notes"]


def test_range_levels_lie_in_the_range_both_p_hat_curves_cover():
    """p0s="range": 25/50/75% of the way through [max of the lows, min of the highs] of the
    two curves (augmentation 0: 0.2-0.6, all: 0.3-0.8 -> 0.3-0.6); epochs outside the
    candidates take no part."""
    from ssl_dynamics.inspect.binomial import range_levels

    cand = np.array([False, True, True, True])
    p_tilde = np.array([0.0, 0.2, 0.4, 0.6])
    p_all = np.array([0.99, 0.3, 0.8, 0.5])
    assert range_levels(p_tilde, p_all, cand) == pytest.approx((0.375, 0.45, 0.525))


# ------------------------------------------------------------------------------ inspect rt's writer


def test_a_store_write_that_fails_in_the_last_evaluations_is_raised_by_finish_all():
    """With two workers the last evaluation still waits in the queue when finish_all is called:
    its write is submitted and waited for, so a failed write is raised, not lost."""
    from types import SimpleNamespace

    from ssl_dynamics.inspect.rt_threads import Running

    def write(*args):
        raise OSError("disk full")

    running = Running(2, lambda group, loaded: [(np.zeros((1, 2)), np.zeros((1, 2)))], SimpleNamespace(write=write),
                      SimpleNamespace(update=lambda n: None))
    try:
        running.start([SimpleNamespace(setup="s", s_idx=0, epoch=1, sha256=None)], [])
        assert len(running.queue) == 1
        with pytest.raises(OSError, match="disk full"):
            running.finish_all()
    finally:
        running.close()


# ------------------------------------------------------------------------------ the report's skipped box


def test_an_analysis_stays_skipped_until_every_file_of_its_outputs_is_new(tmp_path):
    """still_skipped drops an analysis only when every file of one of its output sets was
    written after skipped.json: a new figure beside an old table is not a success."""
    import os

    from ssl_dynamics.inspect.report import still_skipped

    (tmp_path / "figures").mkdir()
    (tmp_path / "tables").mkdir()
    png, table = tmp_path / "figures" / "fig5_4_activations.png", tmp_path / "tables" / "activations.json"
    png.write_bytes(b"png"), table.write_text("{}")
    since = 2_000_000_000_000_000_000
    os.utime(png, ns=(since + 10, since + 10))
    os.utime(table, ns=(since - 10, since - 10))
    skipped = [{"analysis": "activations", "reason": "x"}]
    assert still_skipped(tmp_path, skipped, since) == skipped
    os.utime(table, ns=(since + 5, since + 5))
    assert still_skipped(tmp_path, skipped, since) == []


# ------------------------------------------------------------------------------ devices and workers


def test_a_cuda_index_the_machine_does_not_have_is_refused(monkeypatch):
    """--device cuda:1 / --devices cuda:1 on a machine with one GPU, and cuda:0 on one with none,
    are refused by name (indices run 0..count-1)."""
    from ssl_dynamics.devices import resolve_device, resolve_devices
    from ssl_dynamics.errors import UserError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("cuda:0") == "cuda:0" and resolve_devices("cuda:0,cuda") == ["cuda:0", "cuda:0"]
    with pytest.raises(UserError, match="1 CUDA device"):
        resolve_device("cuda:1")
    with pytest.raises(UserError, match="1 CUDA device"):
        resolve_devices("cuda:0,cuda:1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(UserError, match="0 CUDA device"):
        resolve_devices("cuda:0")


def test_cpu_workers_keep_the_thread_count_omp_num_threads_asks_for(monkeypatch):
    """OMP_NUM_THREADS set: CPU workers keep torch's default (0), not a share of the cores."""
    from ssl_dynamics.train import workers

    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert workers.cpu_threads(["cpu", "cpu"]) == 0
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(workers.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    assert workers.cpu_threads(["cpu", "cpu"]) == 2


# ------------------------------------------------------------------------------ cluster submissions


def test_cluster_option_details(monkeypatch):
    """A time limit is rounded up to whole minutes (90 s -> 2); a CPU-only job asks SLURM for no
    GPU line at all; a local job whose controller was interrupted counts as cancelled (not
    resubmitted); /tmpdata is not /tmp; of a mount point listed twice, the later mount is the
    one in effect."""
    from pathlib import Path
    from types import SimpleNamespace

    from ssl_dynamics.cluster import executor, options
    from ssl_dynamics.cluster.options import ClusterOptions, check_shared, parse_time

    assert parse_time("90s") == 2 and parse_time("61s") == 2 and parse_time("60s") == 1
    assert "gpus_per_node" not in executor.slurm_parameters(ClusterOptions(gpus_per_job=0))
    assert executor.slurm_parameters(ClusterOptions(gpus_per_job=2))["gpus_per_node"] == 2
    gone = Path("/nonexistent/result.pkl")
    for state, cancelled in (("INTERRUPTED", True), ("CANCELLED by 0", True), ("FAILED", False)):
        job = SimpleNamespace(paths=SimpleNamespace(result_pickle=gone), state=state)
        assert executor._cancelled(job) is cancelled, state
    monkeypatch.setattr(options, "mount_type", lambda path: "ext4")
    check_shared("/tmpdata/run", "the run directory")  # a folder whose name starts with tmp
    with pytest.raises(Exception, match="under /tmp"):
        check_shared("/tmp/run", "the run directory")
    monkeypatch.undo()
    mounts = "/dev/a /data ext4 rw 0 0\nnfs:/x /data nfs4 rw 0 0\n"
    monkeypatch.setattr(options, "Path", lambda p: SimpleNamespace(read_text=lambda: mounts))
    assert options.mount_type("/data/run") == "nfs4"


def test_a_resubmitted_job_is_recorded_with_its_earlier_ids(tmp_path):
    """Each resubmission appends the dead job's id to the record, so that `max_resubmits`
    bounds how often a job that keeps dying is submitted again."""
    from types import SimpleNamespace

    from ssl_dynamics.cluster import executor
    from ssl_dynamics.cluster.options import ClusterOptions

    ids = iter(["11", "12"])
    ex = SimpleNamespace(submit=lambda call: SimpleNamespace(job_id=next(ids)))
    record = {"jobs": [{"job_id": "10", "earlier_ids": []}]}
    sub = executor.Submission("train", tmp_path, ClusterOptions(executor="local"), [lambda: None],
                              [{"runs": [["simclr", 0]]}], ex, [SimpleNamespace(job_id="10")], record)
    assert executor._resubmit(sub, 0, lambda *_: None) is None
    assert executor._resubmit(sub, 0, lambda *_: None) is None
    assert sub.record["jobs"][0] == {"job_id": "12", "earlier_ids": ["10", "11"]}


# ------------------------------------------------------------------------------ safetensors


def test_safetensors_with_unused_bytes_between_tensors_are_refused(tmp_path):
    """The tensors must tile the data section: a gap of 4 bytes between two tensors (offsets
    [0, 4] and [8, 12] of 12 bytes) is a corrupt file, not two tensors and some padding."""
    import json
    import struct

    from ssl_dynamics.artifacts.tensorfile import tensors_of
    from ssl_dynamics.errors import UserError

    header = json.dumps({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                         "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}}).encode()
    header += b" " * (-len(header) % 8)
    raw = struct.pack("<Q", len(header)) + header + struct.pack("<3f", 1.0, 2.0, 3.0)
    with pytest.raises(UserError, match="tensor b does not start where the previous one ends"):
        tensors_of(torch.frombuffer(bytearray(raw), dtype=torch.uint8), tmp_path / "x.safetensors")


def test_a_reused_buffer_is_large_enough_for_the_file():
    """Buffers hands out a free buffer only when it holds the whole file."""
    from ssl_dynamics.artifacts.tensorfile import Buffers

    buffers = Buffers()
    small = buffers.take(4)
    buffers.give(small)
    assert buffers.take(100).numel() >= 100


def test_a_job_that_keeps_dying_is_resubmitted_max_resubmits_times_then_reported(tmp_path, monkeypatch):
    """A job that ends without a result is submitted again at most `max_resubmits` times
    (2 here: three submissions in all), then reported once as having died that many times."""
    from types import SimpleNamespace

    from ssl_dynamics.cluster import executor
    from ssl_dynamics.cluster.options import ClusterOptions

    monkeypatch.setattr(executor, "POLL_S", {"local": 0.0, "slurm": 0.0})
    ids = iter(range(11, 20))

    def dying(job_id):  # ended, no result, not cancelled
        return SimpleNamespace(job_id=str(job_id), done=lambda: True, state="FAILED",
                               paths=SimpleNamespace(result_pickle=tmp_path / "none.pkl"))

    submitted = []
    ex = SimpleNamespace(submit=lambda call: submitted.append(1) or dying(next(ids)))
    record = {"folder": str(tmp_path), "jobs": [{"job_id": "10", "earlier_ids": []}]}
    sub = executor.Submission("train", tmp_path, ClusterOptions(executor="local", max_resubmits=2),
                              [lambda: None], [{"runs": [["simclr", 0]]}], ex, [dying(10)], record)
    failures = executor.wait(sub, echo=lambda *_: None)
    assert len(submitted) == 2 and sub.record["jobs"][0]["earlier_ids"] == ["10", "11"]
    assert len(failures) == 1 and "job 12 (" in failures[0] and "died without a result 3 times" in failures[0]


def test_a_corrupt_json_file_is_named_with_the_line_and_column_of_the_fault(tmp_path):
    """One readable line: json's own message, then where (no "at at line")."""
    from ssl_dynamics import artifacts as art
    from ssl_dynamics.errors import UserError

    path = tmp_path / "run.json"
    path.write_text('{"a": "x')
    with pytest.raises(UserError) as e:
        art.read_json(path)
    assert str(e.value) == f"corrupt JSON file {path}: Unterminated string starting at: line 1 column 7"


@pytest.mark.parametrize("raised, last", [("user", "error: the store is damaged"),
                                          ("interrupt", "interrupted: rerun to resume")])
def test_an_error_midway_prints_on_its_own_line_after_the_bars(raised, last, monkeypatch, capsys):
    """A command that fails (or is interrupted) while a progress bar is open: the bar is
    closed as it stood first, so the message is a line of its own and the last one."""
    import sys

    import click

    from ssl_dynamics.cli_util import run_cli
    from ssl_dynamics.errors import UserError
    from ssl_dynamics.progress import bar

    @click.group()
    def group():
        pass

    @group.command("go")
    def go():
        b = bar(4, "netCDF export", "setup")
        b.update(1)
        raise UserError("the store is damaged") if raised == "user" else KeyboardInterrupt

    monkeypatch.setattr(sys, "argv", ["prog", "go"])
    with pytest.raises(SystemExit) as e:
        run_cli(group, "rerun to resume")
    assert e.value.code == (2 if raised == "user" else 130)
    err = capsys.readouterr().err
    assert err.endswith(f"\n{last}\n") and "netCDF export" in err and err.count(last) == 1, repr(err)
