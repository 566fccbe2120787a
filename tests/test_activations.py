"""Activation maximization (docs/science.md, Fig. 5.4): receptive fields, eq. 5.4, the optimizer."""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ssl_dynamics.inspect.activations import (
    BLOCK_STRIDES,
    BLOCKS,
    RECEPTIVE_FIELDS,
    TRUE_RECEPTIVE_FIELDS,
    central_activations,
    central_position,
    choose_channels,
    derive_receptive_field,
    live_channels,
    maximize_activations,
    sigmoid_normalize,
    true_window,
)
from ssl_dynamics.models import CifarResNet18, Network

from _util import fake_activation_workspace, force_channels

WIDTH = 4


def _model(seed: int = 0) -> CifarResNet18:
    torch.manual_seed(seed)
    return CifarResNet18(WIDTH).eval()


# ---------------------------------------------------------------- receptive fields


def test_constants_match_spec_and_architecture():
    assert RECEPTIVE_FIELDS == {1: 11, 2: 19, 3: 27, 4: 35}  # the thesis's patch sizes
    assert BLOCK_STRIDES == {1: 1, 2: 2, 3: 4, 4: 8}
    for b in BLOCKS:
        r, j = derive_receptive_field(
            b, CifarResNet18.STAGE_STRIDES, CifarResNet18.BLOCKS_PER_STAGE
        )
        assert (r, j) == (TRUE_RECEPTIVE_FIELDS[b], BLOCK_STRIDES[b])
    assert [central_position(b) for b in BLOCKS] == [5, 4, 3, 2]
    with pytest.raises(ValueError):
        central_position(5)


@pytest.mark.parametrize("block", BLOCKS)
def test_receptive_field_by_gradient(block):
    """Random CifarResNet18(width=4) in eval mode on a 160x160 input (large enough to hold the
    true receptive field of block 4, 109 px, away from the border). The gradient of one
    channel's activation at the central feature position p = 160 / (2 * stride) w.r.t. the
    input is exactly zero outside the window centred on input pixel p * stride with side
    TRUE_RECEPTIVE_FIELDS[block], and the bounding box of the nonzero-gradient pixels is
    exactly that window (extent = 11, 25, 53, 109 in both rows and columns)."""
    model = _model()
    n, stride = 160, BLOCK_STRIDES[block]
    p = n // (2 * stride)
    x = torch.rand(1, 3, n, n, generator=torch.Generator().manual_seed(1), requires_grad=True)
    out = model.forward_to(x, block)
    channel = int(torch.nonzero(out[0, :, p, p] > 0)[0])  # positive: gradient passes the ReLU
    (grad,) = torch.autograd.grad(out[0, channel, p, p], x)
    nonzero = grad[0].abs().sum(0) != 0
    lo, hi = true_window(block, p)
    assert (lo, hi) == (p * stride - (TRUE_RECEPTIVE_FIELDS[block] - 1) // 2,
                        p * stride + (TRUE_RECEPTIVE_FIELDS[block] - 1) // 2)
    outside = torch.ones_like(nonzero)
    outside[lo : hi + 1, lo : hi + 1] = False
    assert not nonzero[outside].any()
    assert (grad[0][:, outside] == 0).all()
    rows = torch.nonzero(nonzero.any(1)).flatten()
    cols = torch.nonzero(nonzero.any(0)).flatten()
    assert (rows.min().item(), rows.max().item()) == (lo, hi)
    assert (cols.min().item(), cols.max().item()) == (lo, hi)
    assert hi - lo + 1 == TRUE_RECEPTIVE_FIELDS[block]


@pytest.mark.parametrize("block", BLOCKS)
def test_patch_lies_inside_true_receptive_field(block):
    """The thesis's patch (side RECEPTIVE_FIELDS[block]) is covered by the true receptive field
    of the central position (exactly the whole patch for block 1), so the nonzero gradient of
    the central activation reaches every row and column of the patch. (Single pixels can
    still get a zero gradient where every path to them crosses an inactive ReLU, e.g. the
    corners of the 11x11 patch, which are reached by one spatial path only.)"""
    size = RECEPTIVE_FIELDS[block]
    lo, hi = true_window(block)
    assert lo <= 0 and hi >= size - 1
    model = _model()
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(2),
                   requires_grad=True)
    p = central_position(block)
    out = model.forward_to(x, block)
    assert p < out.shape[-1]
    channel = int(torch.nonzero(out[0, :, p, p] > 0)[0])
    (grad,) = torch.autograd.grad(out[0, channel, p, p], x)
    nonzero = grad[0].abs().sum(0) != 0
    assert nonzero.any(0).all() and nonzero.any(1).all()


# ---------------------------------------------------------------- eq. 5.4


def _slow_normalize(values: list[float]) -> list[float]:
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return [1 / (1 + math.exp(-(v - mean) / std)) for v in values]


def test_sigmoid_normalize_hand_computed():
    x = torch.tensor([0.0, 1.0, 2.0, 3.0]).reshape(1, 2, 2)
    # mean 1.5, unbiased std sqrt(5/3) = 1.2910: z = -1.1619, -0.3873, 0.3873, 1.1619
    expected = torch.tensor([0.238323, 0.404368, 0.595632, 0.761677]).reshape(1, 2, 2)
    torch.testing.assert_close(sigmoid_normalize(x), expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(
        sigmoid_normalize(x).flatten(), torch.tensor(_slow_normalize([0.0, 1.0, 2.0, 3.0])),
        atol=1e-6, rtol=0,
    )


def test_sigmoid_normalize_per_image_against_slow_formula():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 3, 5, 5, generator=g, dtype=torch.float64) * torch.tensor(
        [1.0, 10.0, 0.01], dtype=torch.float64
    ).reshape(3, 1, 1, 1) + 4
    y = sigmoid_normalize(x)
    assert y.shape == x.shape
    assert ((y > 0) & (y < 1)).all()
    for i in range(3):
        slow = torch.tensor(_slow_normalize(x[i].flatten().tolist()), dtype=torch.float64)
        torch.testing.assert_close(y[i].flatten(), slow)
    # One image alone gives the same as inside the batch (normalization is per image).
    torch.testing.assert_close(sigmoid_normalize(x[1]), y[1])


def test_sigmoid_normalize_constant_and_nan_images():
    x = torch.stack([torch.full((3, 4, 4), 0.3), torch.rand(3, 4, 4),
                     torch.full((3, 4, 4), float("nan"))])
    y = sigmoid_normalize(x)
    assert (y[0] == 0.5).all()
    assert ((y[1] > 0) & (y[1] < 1)).all()
    assert torch.isnan(y[2]).all()
    assert (sigmoid_normalize(torch.ones(1, 1, 1)) == 0.5).all()
    one_pixel = sigmoid_normalize(torch.tensor([2.0, float("nan")]).reshape(2, 1, 1, 1))
    assert one_pixel[0].item() == 0.5 and torch.isnan(one_pixel[1]).all()  # a dead one-pixel image too
    with pytest.raises(ValueError):
        sigmoid_normalize(torch.zeros(4))


# ---------------------------------------------------------------- optimization


def test_batched_equals_each_channel_alone():
    model = _model()
    block, channels = 2, [5, 0, 3]
    together = maximize_activations(model, block, channels, steps=5, seed=7, max_redraws=20)
    assert together["images"].shape == (3, 3, 19, 19)
    assert together["ok"].all()
    for i, c in enumerate(channels):
        alone = maximize_activations(model, block, [c], steps=5, seed=7, max_redraws=20)
        assert alone["redraws"][0] == together["redraws"][i]
        torch.testing.assert_close(alone["images"][0], together["images"][i],
                                   atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(alone["objective"][:, 0], together["objective"][:, i],
                                   atol=1e-4, rtol=1e-4)
    # Same seed, same result; the start does not depend on the channel order.
    again = maximize_activations(model, block, channels[::-1], steps=5, seed=7, max_redraws=20)
    torch.testing.assert_close(again["images"].flip(0), together["images"], atol=1e-4,
                               rtol=1e-4)
    other = maximize_activations(model, block, channels, steps=5, seed=8, max_redraws=20)
    assert not torch.allclose(other["images"], together["images"])


def test_zero_steps_returns_uniform_start_and_network_is_restored():
    model = _model()
    model.train()
    net = Network(model, 10)  # a Network is accepted too
    params = {k: v.clone() for k, v in net.state_dict().items()}
    res = maximize_activations(net, 1, [0, 1], steps=0, seed=3, max_redraws=20)
    assert res["images"].min() >= 0 and res["images"].max() < 1
    assert res["objective"].shape == (1, 2)
    assert model.training and all(m.training for m in model.modules())
    assert all(p.grad is None for p in net.parameters())
    for k, v in net.state_dict().items():
        assert torch.equal(v, params[k]), k  # running stats untouched: eval mode was used


def test_objective_increases():
    model = _model()
    block = 3
    res = maximize_activations(model, block, [0, 1, 2, 3], steps=30, seed=0, max_redraws=50)
    ok = res["ok"]
    assert ok.any()
    obj = res["objective"][:, ok]
    assert obj.shape == (31, int(ok.sum()))
    assert (obj[-1] > obj[0]).all()
    assert (obj[1:] >= obj[:-1] - 1e-4).float().mean() > 0.9  # (almost) monotone ascent
    # The reported objective is the central activation minus 0.01 * ||x||^2 of the images.
    imgs = res["images"][ok]
    acts = central_activations(model, block, imgs, [c for c, k in zip([0, 1, 2, 3], ok) if k])
    torch.testing.assert_close(res["activation"][ok], acts.detach(), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(
        obj[-1], acts.detach() - 0.01 * imgs.pow(2).sum(dim=(1, 2, 3)), atol=1e-4, rtol=1e-4
    )


@pytest.mark.parametrize("lr", [0.3, 2.5])
def test_one_step_is_lr_times_the_gradient(lr):
    model = _model()
    block, channels, p = 2, [0, 3], 4  # block 2: 19-pixel patches, central position 4 (by hand)
    start = maximize_activations(model, block, channels, steps=0, seed=5, max_redraws=20)
    assert start["ok"].all()
    one = maximize_activations(model, block, channels, steps=1, lr=lr, seed=5, max_redraws=20)
    # f_c(x) = A(x)[c, p, p] - 0.01 * ||x||^2, differentiated here image by image
    x0 = start["images"]
    grads = []
    for i, c in enumerate(channels):
        x = x0[i:i + 1].clone().requires_grad_(True)
        f = model.forward_to(x, block)[0, c, p, p] - 0.01 * (x * x).sum()
        (g,) = torch.autograd.grad(f, x)
        grads.append(g[0])
    grad = torch.stack(grads)
    assert grad.abs().max() > 1e-3  # a step that moves the image
    torch.testing.assert_close(one["images"], x0 + lr * grad, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(one["images"], x0 + 0.5 * lr * grad, atol=1e-5, rtol=1e-5)


def test_dead_channel_is_reported():
    model = _model()
    block, dead = 2, 1
    bn = model.stages[block - 1][-1].bn2  # last BN before the block's final ReLU
    with torch.no_grad():
        bn.weight[dead] = 0.0
        bn.bias[dead] = -1e6  # output = relu(-1e6 + shortcut) = 0 for any patch in [0, 1)
    res = maximize_activations(model, block, [0, dead, 2], steps=3, seed=0, max_redraws=4)
    assert res["ok"].tolist() == [True, False, True]
    assert res["redraws"][1] == 4
    assert torch.isnan(res["images"][1]).all()
    assert torch.isnan(res["activation"][1]) and torch.isnan(res["objective"][:, 1]).all()
    assert torch.isfinite(res["images"][[0, 2]]).all()
    assert (res["activation"][[0, 2]] > 0).all()
    only_dead = maximize_activations(model, block, [dead], steps=3, seed=0, max_redraws=0)
    assert only_dead["ok"].tolist() == [False] and only_dead["redraws"].tolist() == [0]


def test_bad_arguments():
    model = _model()
    with pytest.raises(ValueError):
        maximize_activations(model, 1, [WIDTH], steps=1, seed=0)  # block 1 has WIDTH channels
    with pytest.raises(ValueError):
        maximize_activations(model, 0, [0], steps=1, seed=0)
    with pytest.raises(ValueError):
        maximize_activations(torch.nn.Linear(2, 2), 1, [0], steps=1, seed=0)
    empty = maximize_activations(model, 4, [], steps=1, seed=0)
    assert empty["images"].shape == (0, 3, 35, 35)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    model = _model()
    cpu = maximize_activations(model, 2, [0, 1], steps=5, seed=0, max_redraws=20)
    gpu = maximize_activations(model.cuda(), 2, [0, 1], steps=5, seed=0, max_redraws=20)
    assert gpu["images"].device.type == "cpu"
    torch.testing.assert_close(gpu["images"], cpu["images"], atol=1e-3, rtol=1e-3)


# ---------------------------------------------------------------- channel choice


def test_choose_channels():
    a = choose_channels(128, 36, seed=0)
    assert a == choose_channels(128, 36, seed=0)
    assert len(a) == 36 and len(set(a)) == 36 and all(0 <= c < 128 for c in a)
    assert a != choose_channels(128, 36, seed=1)
    assert a[:10] == choose_channels(128, 10, seed=0)
    assert sorted(choose_channels(8, 36, seed=0)) == list(range(8))
    assert choose_channels(0, 36, seed=0) == []


# ---------------------------------------------------------------- which checkpoint Fig. 5.4 draws


def test_seed_without_checkpoint_is_an_error_not_another_seed(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from ssl_dynamics import artifacts as art
    from ssl_dynamics.errors import UserError
    from ssl_dynamics.inspect import activation_figure

    paths = art.RunPaths(tmp_path)
    for sd in (0, 2):  # seeds 0 and 2 have epoch 3; seed 1 does not
        paths.seed_dir("supervised", sd).mkdir(parents=True)
        paths.checkpoint("supervised", sd, 3).touch()
    ws = SimpleNamespace(run=SimpleNamespace(cfg=SimpleNamespace(seeds=[0, 1, 2], backbone="resnet18_cifar"),
                                             paths=paths))
    monkeypatch.setattr(activation_figure, "resolve_epoch", lambda run, setup, epoch: (3, "asked for"))
    loaded = {}

    def load_network(path, verify):  # a stand-in network that remembers which file it came from
        loaded[path] = net = Network(_model(), 10)
        return net, None

    monkeypatch.setattr(art, "load_network", load_network)
    with pytest.raises(UserError, match=r"^supervised seed 1 has no checkpoint at epoch 3 \(seeds: \[0, 2\]\)$"):
        activation_figure._checkpoint(ws, "supervised", 3, 1)
    path, e, sd, _ = activation_figure._checkpoint(ws, "supervised", 3, 2)
    assert (path, e, sd) == (paths.checkpoint("supervised", 2, 3), 3, 2)
    assert not loaded  # resolving does not load
    assert activation_figure._load(ws, path, verify=False) is loaded[path]
    assert activation_figure._checkpoint(ws, "supervised", 3, None)[2] == 0  # default: first seed
    # a timm backbone has no CIFAR blocks: one line, not an AttributeError from deep inside
    from ssl_dynamics.models import build_network
    ws.run.cfg.backbone = "timm:resnet10t"
    monkeypatch.setattr(art, "load_network", lambda path, verify: (build_network("timm:resnet10t", 10), None))
    with pytest.raises(UserError, match=r"needs the backbone resnet18_cifar .* this run trained timm:resnet10t$"):
        activation_figure._load(ws, path, verify=False)
    with pytest.raises(UserError, match=r"needs the backbone resnet18_cifar .* this run trained timm:resnet10t$"):
        activation_figure.run_activations(ws, None, ["supervised"], 3, steps=0, progress=False)


# ---------------------------------------------------------------- Fig. 5.4 end to end (tiny networks)


def _run(ws, out_dir, setups, **kw):
    from ssl_dynamics.inspect.activation_figure import run_activations
    from ssl_dynamics.inspect.outputs import Outputs

    kw = {"steps": 2, "n_channels": 3, "channel_seed": 0, "progress": False, "max_redraws": 10, **kw}
    return run_activations(ws, Outputs(out_dir), setups, **kw)


def test_table_counts_replaced_channels_and_records_the_settings(tmp_path, monkeypatch):
    """Block 2 (8 channels), 3 asked for, in the seeded order o. `supervised`: o[0] dead, the
    rest fire: o[3] replaces it (replaced 1, no empty slot). `simclr`: only o[2] fires: no
    channel is left to replace o[0] and o[1] (replaced 0, 2 empty slots); the old count said 2
    ("dead among the first 3") there."""
    import json

    import h5py

    order = choose_channels(8, 8, seed=0 + 2)  # run_activations' order of block 2: channel_seed + block
    one_dead = force_channels(_model(), 2, dead=[order[0]], alive=order[1:])
    one_live = force_channels(_model(), 2, dead=[c for c in order if c != order[2]], alive=[order[2]])
    ws = fake_activation_workspace(tmp_path, monkeypatch, {"supervised": Network(one_dead, 10),
                                                 "simclr": Network(one_live, 10)})
    res = _run(ws, tmp_path / "out", ["supervised", "simclr"], lr=0.5, l2=0.02, max_redraws=7, channel_seed=0)
    rows = {(r["setup"], r["block"]): r for r in res["tables"]["activations"]}
    assert (rows["supervised", 2]["channels"], rows["supervised", 2]["replaced"],
            rows["supervised", 2]["no_live_channel"]) == (3, 1, 0)
    assert (rows["simclr", 2]["channels"], rows["simclr", 2]["replaced"],
            rows["simclr", 2]["no_live_channel"]) == (1, 0, 2)
    with h5py.File(tmp_path / "out" / "analysis.h5", "r") as f:
        g = f["activations"]
        assert g["supervised_block2_channels"][()].tolist() == order[1:4]
        assert g["simclr_block2_channels"][()].tolist() == [order[2]]
        # every setting the images depend on is recorded beside them
        assert {k: g.attrs[k] for k in ("steps", "lr", "l2", "max_redraws", "channel_seed")} == \
            {"steps": 2, "lr": 0.5, "l2": 0.02, "max_redraws": 7, "channel_seed": 0}
    note = json.loads((tmp_path / "out" / "tables" / "activations.json").read_text())["note"]
    for part in ("2 steps of size 0.5", "L2 0.02", "up to 7 times", "channel seed 0"):
        assert part in note, note


def test_zero_steps_says_the_images_are_not_optimized(tmp_path, monkeypatch):
    ws = fake_activation_workspace(tmp_path, monkeypatch, {"supervised": Network(_model(), 10)})
    said = [n for n in _run(ws, tmp_path / "out", ["supervised"], steps=0)["notes"] if "--steps 0" in n]
    assert said == ["fig5_4: --steps 0: the images are the random starting points, not optimized "
                    "(the thesis ran 1,000 steps)"]
    assert not any("--steps" in n for n in _run(ws, tmp_path / "out2", ["supervised"], steps=1)["notes"])


def test_progress_bar_ends_full_when_a_block_has_no_live_channel(tmp_path, monkeypatch):
    """A block whose channels never fire runs no ascent step; the bar still counts its steps,
    so it ends at its total instead of short of it."""
    from ssl_dynamics.inspect import activation_figure

    bars = []

    def recording_bar(total, *args, **kwargs):
        bars.append(SimpleNamespace(total=total, n=0, closed_at=None))
        b = bars[-1]
        b.update = lambda k=1: setattr(b, "n", b.n + k)
        b.close = lambda: setattr(b, "closed_at", b.n)
        return b

    monkeypatch.setattr(activation_figure, "bar", recording_bar)
    everything_dead = force_channels(_model(), 2, dead=range(8))
    ws = fake_activation_workspace(tmp_path, monkeypatch, {"supervised": Network(everything_dead, 10)})
    res = _run(ws, tmp_path / "out", ["supervised"], steps=3)
    rows = {r["block"]: r for r in res["tables"]["activations"]}
    assert rows[2]["channels"] == 0 and any(rows[b]["channels"] > 0 for b in rows)
    assert len(bars) == 1 and bars[0].closed_at == bars[0].total == 3 * len(rows)


def test_same_seed_same_output_and_the_spec_defaults(tmp_path, monkeypatch):
    import inspect

    import h5py

    from ssl_dynamics.inspect.activation_figure import run_activations

    ws = fake_activation_workspace(tmp_path, monkeypatch, {"supervised": Network(_model(), 10)})
    tables = [_run(ws, tmp_path / d, ["supervised"], channel_seed=4)["tables"] for d in ("a", "b")]
    assert tables[0] == tables[1]
    with h5py.File(tmp_path / "a" / "analysis.h5", "r") as a, h5py.File(tmp_path / "b" / "analysis.h5", "r") as b:
        assert sorted(a["activations"]) == sorted(b["activations"])
        for name in a["activations"]:
            assert np.array_equal(a["activations"][name][()], b["activations"][name][()], equal_nan=True), name
    other = _run(ws, tmp_path / "c", ["supervised"], channel_seed=5)["tables"]
    assert other != tables[0]
    # docs/science.md: step 1, 1000 iterations, 0.01 * ||x||^2, the default everywhere
    for fn in (maximize_activations, run_activations):
        params = inspect.signature(fn).parameters
        assert (params["steps"].default, params["lr"].default, params["l2"].default) == (1000, 1.0, 0.01)


def test_a_bad_setup_is_refused_before_any_ascent(tmp_path, monkeypatch):
    from ssl_dynamics.errors import UserError
    from ssl_dynamics.inspect import activation_figure

    ws = fake_activation_workspace(tmp_path, monkeypatch, {"supervised": Network(_model(), 10)})

    def no_work(*args, **kwargs):
        raise AssertionError("ascent or load before every setup was checked")

    for name in ("maximize_activations", "live_channels", "_load"):
        monkeypatch.setattr(activation_figure, name, no_work)
    # "simclr" has no checkpoint at all, and seed 1 of "supervised" none either
    with pytest.raises(UserError, match="simclr has no checkpoint at epoch 3"):
        _run(ws, tmp_path / "out", ["supervised", "simclr"])
    with pytest.raises(UserError, match="supervised seed 1 has no checkpoint"):
        _run(ws, tmp_path / "out", ["supervised"], seed=1)
    assert not (tmp_path / "out").exists()


def test_live_channels_skip_dead_ones():
    order = [6, 1, 4, 0, 7, 2, 5, 3]
    model = force_channels(_model(), 2, dead=[6, 4, 2], alive=[1, 0, 7, 5, 3])
    assert live_channels(model, 2, order, 3, seed=0, max_redraws=3) == [1, 0, 7]
    assert live_channels(model, 2, order, 5, seed=0, max_redraws=3) == [1, 0, 7, 5, 3]
    assert live_channels(model, 2, order, 8, seed=0, max_redraws=3) == [1, 0, 7, 5, 3]  # spares run out
    everything_dead = force_channels(_model(), 2, dead=range(8))
    assert live_channels(everything_dead, 2, order, 3, seed=0, max_redraws=2) == []


def test_figure_normalizes_each_pseudo_image_on_its_own():
    """Two channels of very different scales: each tile is sigmoid_normalize of its own image
    (normalizing over the batch would leave the small one a flat 0.5)."""
    import matplotlib.pyplot as plt

    from ssl_dynamics.inspect.activation_figure import BORDER, draw_activations

    g = torch.Generator().manual_seed(0)
    cells = {}
    for block in BLOCKS:
        s = RECEPTIVE_FIELDS[block]
        images = torch.randn(2, 3, s, s, generator=g) * torch.tensor([1e-3, 1e3]).reshape(2, 1, 1, 1)
        cells[("supervised", block)] = (dict(images=images, ok=torch.tensor([True, True])), 0, 3, 0)
    fig = draw_activations(cells, ["supervised"], 2)
    for i, block in enumerate(BLOCKS):
        s = RECEPTIVE_FIELDS[block]
        drawn = np.asarray(fig.axes[i].images[0].get_array())
        for k in range(2):
            tile = drawn[BORDER:BORDER + s, BORDER + k * (s + BORDER):BORDER + k * (s + BORDER) + s]
            expected = sigmoid_normalize(cells[("supervised", block)][0]["images"][k]).numpy()
            np.testing.assert_allclose(tile, expected.transpose(1, 2, 0), atol=1e-6)
        assert drawn[BORDER:BORDER + s, BORDER:BORDER + s].std() > 0.1  # not a flat 0.5
    plt.close(fig)


def test_figure_of_a_block_without_live_channels():
    import warnings

    import matplotlib.pyplot as plt

    from ssl_dynamics.inspect.activation_figure import draw_activations

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sigmoid_normalize(torch.zeros(0, 3, 5, 5)).shape == (0, 3, 5, 5)
        assert sigmoid_normalize(torch.zeros(2, 3, 0, 0)).shape == (2, 3, 0, 0)
        empty = maximize_activations(force_channels(_model(), 2, dead=range(8)), 2, [], steps=1, seed=0)
        cells = {("supervised", b): (empty if b == 2 else maximize_activations(_model(), b, [0], steps=1, seed=0),
                                     3 if b == 2 else 0, 3, 0) for b in BLOCKS}
        plt.close(draw_activations(cells, ["supervised"], 3))


# ---------------------------------------------------------------- devices and exact fp32


def test_same_device_normalizes_the_cuda_index():
    from ssl_dynamics.inspect.activations import _same_device

    cpu, cuda, cuda0, cuda1 = (torch.device(d) for d in ("cpu", "cuda", "cuda:0", "cuda:1"))
    current = torch.cuda.current_device() if torch.cuda.is_available() else 0
    assert _same_device(cuda, torch.device("cuda", current)) and _same_device("cuda", f"cuda:{current}")
    assert _same_device(cuda0, cuda0) and _same_device(cpu, "cpu")
    assert not _same_device(cpu, cuda0) and not _same_device(cuda0, cuda1)
    assert _same_device(cuda, cuda1) == (current == 1)


def test_model_is_not_copied_for_the_same_device_spelled_differently(monkeypatch):
    """"cpu:0" and "cpu" (like "cuda" and "cuda:0" on a GPU, what resolve_device returns) are one
    device: before, every call deep-copied the model."""
    import copy

    from ssl_dynamics.inspect import activations

    model = _model()
    assert activations._prepare(model, 2, [0], 1, 1, "cpu:0")[0] is model
    copies = []
    monkeypatch.setattr(copy, "deepcopy", lambda *a, **k: copies.append(1))
    maximize_activations(model, 2, [0], steps=1, seed=0, device=torch.device("cpu", 0))
    live_channels(model, 2, [0, 1], 1, seed=0, device="cpu:0")
    assert not copies


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_model_on_the_gpu_is_not_copied_for_device_cuda():
    from ssl_dynamics.inspect.activations import _prepare

    model = _model().cuda()
    assert _prepare(model, 2, [0], 1, 1, "cuda")[0] is model


def test_exact_context_sets_and_restores_the_flags():
    from ssl_dynamics.inspect.activations import _exact

    before = (torch.backends.cudnn.allow_tf32, torch.backends.cudnn.deterministic)
    try:
        torch.backends.cudnn.allow_tf32, torch.backends.cudnn.deterministic = True, False
        with _exact("cuda"):  # only python-level flags: works without a GPU
            assert not torch.backends.cudnn.allow_tf32 and torch.backends.cudnn.deterministic
        assert torch.backends.cudnn.allow_tf32 and not torch.backends.cudnn.deterministic
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cudnn.deterministic = before


def test_redraws_and_ascent_run_inside_the_exact_context(monkeypatch):
    from contextlib import contextmanager

    from ssl_dynamics.inspect import activations

    entered, calls = [], []

    @contextmanager
    def fake_exact_fp32(device, bf16):
        entered.append((device, bf16))
        yield

    real = activations.central_activations

    def checked(*args, **kwargs):
        calls.append(torch.backends.cudnn.deterministic and bool(entered))
        return real(*args, **kwargs)

    model = _model()
    plain_start, ok, _ = activations.starting_points(model, 2, [0, 3], 5, 20, torch.device("cpu"))
    plain = activations.gradient_ascent(model, 2, [0, 3], plain_start, 3, 1.0, 0.01)
    before = torch.backends.cudnn.deterministic
    monkeypatch.setattr(activations, "exact_fp32", fake_exact_fp32)
    monkeypatch.setattr(activations, "central_activations", checked)
    res = maximize_activations(model, 2, [0, 3], steps=3, seed=5, max_redraws=20)
    assert calls and all(calls) and entered == [("cpu", False)]
    assert torch.backends.cudnn.deterministic == before
    # on the CPU the context changes nothing: the same numbers as without it
    assert ok.all() and res["ok"].all()
    assert torch.equal(res["images"], plain[0]) and torch.equal(res["objective"], plain[2])
    entered.clear(), calls.clear()
    live_channels(model, 2, [0, 3], 2, seed=5, max_redraws=20)
    assert calls and all(calls) and entered == [("cpu", False)]


def _starting_points_one_redraw_per_pass(net, block, channels, seed, max_redraws):
    """The obvious way: one forward pass per redraw, each pending channel redrawn in turn."""
    from ssl_dynamics.inspect.activations import _channel_generator

    size = RECEPTIVE_FIELDS[block]
    gens = [_channel_generator(seed, c) for c in channels]
    start = torch.stack([torch.rand(3, size, size, generator=g) for g in gens])
    ok = torch.zeros(len(channels), dtype=torch.bool)
    redraws = torch.zeros(len(channels), dtype=torch.long)
    pending = list(range(len(channels)))
    for attempt in range(max_redraws + 1):
        if attempt:
            for i in pending:
                start[i] = torch.rand(3, size, size, generator=gens[i])
                redraws[i] += 1
        with torch.no_grad():
            act = central_activations(net, block, start[pending], [channels[i] for i in pending])
        for i, a in zip(list(pending), act.tolist()):
            ok[i] = a > 0
        pending = [i for i in pending if not ok[i]]
        if not pending:
            break
    return start, ok, redraws


@pytest.mark.parametrize("max_redraws", [0, 5, 16, 40])
def test_batched_redraws_give_the_starts_of_one_redraw_per_pass(max_redraws):
    """Channels that fire at once, after a few redraws, and never (a bias pushed down so
    that a channel fires rarely or not at all): the same starts, flags and redraw counts."""
    from ssl_dynamics.inspect import activations

    model = _model(1)
    block, channels = 2, list(range(8))
    bn = model.stages[1][-1].bn2  # the block's last BatchNorm: its shift decides who fires
    with torch.no_grad():
        bn.bias[:8] = torch.tensor([5.0, 0.0, -0.3, -0.6, -1.0, -2.0, -50.0, -50.0])
    fast = activations.starting_points(model, block, channels, 3, max_redraws, torch.device("cpu"))
    slow = _starting_points_one_redraw_per_pass(model, block, channels, 3, max_redraws)
    for a, b in zip(fast, slow):
        assert torch.equal(a, b)
    if max_redraws == 40:  # the case covers every branch: at once, later, never
        redraws, ok = slow[2], slow[1]
        assert ok[0] and redraws[0] == 0 and not ok[6] and redraws[6] == 40
        assert any(ok[i] and redraws[i] > 0 for i in range(8))


def test_a_chosen_channel_that_does_not_fire_in_the_ascent_is_an_empty_slot(tmp_path, monkeypatch):
    """live_channels and the ascent decide "fires" in forward passes of other batch sizes; a
    channel within round-off of 0 may pass the first and fail the second. Its slot is counted
    as empty, not as a channel shown."""
    from ssl_dynamics.inspect import activation_figure

    real = activation_figure.maximize_activations

    def first_fails(*args, **kw):
        res = real(*args, **kw)
        if len(res["ok"]):
            res["ok"][0] = False
            res["activation"][0] = float("nan")
        return res

    monkeypatch.setattr(activation_figure, "maximize_activations", first_fails)
    ws = fake_activation_workspace(tmp_path, monkeypatch, {"supervised": Network(_model(), 10)})
    res = _run(ws, tmp_path / "out", ["supervised"])
    for row in res["tables"]["activations"]:
        assert (row["channels"], row["no_live_channel"]) == (2, 1), row
    assert any("only 2 channels can fire" in n for n in res["notes"])
