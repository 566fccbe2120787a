"""Several seeds per device (`train run --pack P`): the grouped network, the per-seed data
and views, agreement with separate training, resume after a kill, and the refusals."""
import copy
import json
import os
import subprocess
import sys
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from _util import TRAIN_RUN, checkpoint_drift, kill_train_run_at
from ssl_dynamics import artifacts as art
from ssl_dynamics.augment import make_generator
from ssl_dynamics.config import override, preset, thesis_setups
from ssl_dynamics.models import Network, build_network
from ssl_dynamics.objectives import objective_for
from ssl_dynamics.packed import (GroupedNetwork, grouped, load_optimizer_states, optimizer_state_of,
                                 pack_views)
from ssl_dynamics.train.grid import train_grid
from ssl_dynamics.train.loop import TrainOptions, TrainRequest
from ssl_dynamics.train.pack import epoch_order, pack_batch

CPU = TrainOptions(device="cpu", deterministic=True)
PACKED = TrainOptions(device="cpu", deterministic=True, channels_last=True, pack=3)
CL = TrainOptions(device="cpu", deterministic=True, channels_last=True)


def tiny(epochs=2, seeds=(0, 1, 2), lr=None, width=4):
    extra = ([f"lr={lr}"] if lr else []) + [f"width={width}"]
    cfg = override(preset("smoke"), [f"epochs={epochs}", "batch_size=16", "train_subset=48", *extra])
    return replace(cfg, seeds=tuple(seeds))


def quiet(*_a, **_k):
    return None


def nets(n, width=4, head_dim=10):
    out = []
    for p in range(n):
        torch.manual_seed(p)
        out.append(build_network("resnet18_cifar", head_dim, width))
    return out


def manifests(root, setup, seeds):
    return {s: art.read_json(art.RunPaths(root).manifest(setup, s))["checkpoints"] for s in seeds}


# --------------------------------------------------------------------------- the grouped network

def test_one_network_grouped_is_bit_identical_to_the_plain_one():
    net = nets(1)[0].train()
    one = grouped([net])
    assert [k for k, _ in one.named_parameters()] == [k for k, _ in net.named_parameters()]
    opt_a = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    opt_b = torch.optim.SGD(one.parameters(), lr=0.1, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    for _ in range(2):
        x, y = torch.randn(8, 3, 32, 32, generator=g), torch.randint(0, 10, (8,), generator=g)
        for model, opt, inp in ((net, opt_a, x), (one, opt_b, pack_views(x[None]))):
            out = model(inp)["out"]
            opt.zero_grad()
            F.cross_entropy(out.reshape(8, -1), y).backward()
            opt.step()
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), one.state_dict_of(0).values()))


def test_per_seed_states_round_trip_through_the_grouped_network():
    ms = nets(3)
    gm = grouped(ms)
    opt = torch.optim.Adam(gm.parameters(), lr=1e-3, weight_decay=1e-4)
    x, y = torch.randn(3, 4, 3, 32, 32), torch.randint(0, 10, (3, 4))
    out = gm(pack_views(x))["out"]
    sum(F.cross_entropy(out[p], y[p]) for p in range(3)).backward()
    opt.step()
    states = [gm.state_dict_of(p) for p in range(3)]
    opt_states = [optimizer_state_of(gm, opt, p) for p in range(3)]
    for p in range(3):  # a plain network and a plain Adam take them as their own
        m = copy.deepcopy(ms[p])
        assert list(states[p]) == list(m.state_dict())
        m.load_state_dict(states[p])
        torch.optim.Adam(m.parameters(), lr=1e-3).load_state_dict(opt_states[p])
    again = GroupedNetwork(ms[0], 3)
    again.load_state_dicts(states)
    opt2 = torch.optim.Adam(again.parameters(), lr=1e-3, weight_decay=1e-4)
    load_optimizer_states(again, opt2, opt_states)
    assert all(torch.equal(a, b) for a, b in zip(gm.state_dict().values(), again.state_dict().values()))
    s1, s2 = opt.state_dict()["state"], opt2.state_dict()["state"]
    assert all(torch.equal(s1[i][k], s2[i][k]) for i in s1 for k in s1[i])


# --------------------------------------------------------------------------- data order and views

@pytest.mark.parametrize("setup", ["simclr", "supervised", "random_labels"])
def test_packed_batches_are_each_seeds_own(setup):
    """Batch b of epoch e holds, for every seed, exactly what that seed alone draws
    (the expressions of loop.run_epoch)."""
    objective = objective_for(replace(thesis_setups()[setup], batch_size=8))
    x = torch.randint(0, 256, (40, 3, 32, 32), dtype=torch.uint8)
    seeds, epoch, bs = [0, 3, 7], 2, 8
    orders = [epoch_order(s, epoch, len(x), "cpu") for s in seeds]
    for b in range(len(x) // bs):
        views, idx = pack_batch(objective, x, orders, seeds, epoch, b, bs)
        for p, seed in enumerate(seeds):
            alone = torch.randperm(len(x), generator=make_generator(seed, epoch, "shuffle"))[b * bs:(b + 1) * bs]
            assert torch.equal(idx[p], alone)
            assert torch.equal(views[p], objective.views(x[alone], make_generator(seed, epoch, b, "views")))


def test_packed_run_feeds_every_seed_what_a_separate_run_feeds_it(tmp_path, monkeypatch):
    """The inputs reaching the networks in a packed run and in separate runs, batch by batch."""
    seen = {"plain": [], "packed": []}
    plain_forward, grouped_forward = Network.forward, GroupedNetwork.forward

    def record_plain(self, x):
        seen["plain"].append(x.detach().clone())
        return plain_forward(self, x)

    def record_grouped(self, x):
        seen["packed"].append(x.detach().clone())
        return grouped_forward(self, x)

    monkeypatch.setattr(Network, "forward", record_plain)
    monkeypatch.setattr(GroupedNetwork, "forward", record_grouped)
    cfg = tiny(epochs=1)
    train_grid(tmp_path / "a", cfg, ["simclr"], CPU, progress=False, echo=quiet)
    train_grid(tmp_path / "b", cfg, ["simclr"], PACKED, progress=False, echo=quiet)
    nb = 3  # 48 images, batches of 16
    assert len(seen["plain"]) == 3 * nb and len(seen["packed"]) == nb
    for p in range(3):
        for b in range(nb):
            assert torch.equal(seen["packed"][b][:, 3 * p:3 * p + 3], seen["plain"][p * nb + b])


# --------------------------------------------------------------------------- agreement

def test_pack_of_one_gives_todays_checkpoints(tmp_path):
    cfg = tiny(epochs=1, seeds=(0,))
    train_grid(tmp_path / "a", cfg, ["supervised", "simclr"], CPU, progress=False, echo=quiet)
    opts = TrainRequest(device="cpu", deterministic=True, pack="1").resolve()
    assert opts == CPU
    train_grid(tmp_path / "b", cfg, ["supervised", "simclr"], opts, progress=False, echo=quiet)
    for setup in ("supervised", "simclr"):
        assert manifests(tmp_path / "a", setup, [0]) == manifests(tmp_path / "b", setup, [0])


# Largest weight difference after 2 epochs (lr 3e-4, channels_last both ways), measured on a
# 2-core EPYC with torch 2.14 (benchmarks/pack_agreement.py, docs/science.md): Adam 1.7e-4,
# SGD 6.6e-6; the bounds leave 10x for other CPUs' rounding.
PACK_TOLERANCE = {"simclr": 2e-3, "random_labels": 1e-4}


def test_packed_weights_agree_with_separate_training(tmp_path):
    cfg = tiny(epochs=2, seeds=(0, 1), lr=3e-4)
    setups = list(PACK_TOLERANCE)
    train_grid(tmp_path / "sep", cfg, setups, CL, progress=False, echo=quiet)
    train_grid(tmp_path / "pack", cfg, setups, replace(PACKED, pack=2), progress=False, echo=quiet)
    for setup, tol in PACK_TOLERANCE.items():
        for seed in (0, 1):
            diff = checkpoint_drift(tmp_path / "sep", tmp_path / "pack", setup, seed, 2)
            assert 0 < diff < tol, (setup, seed, diff)


def full_and_cut(tmp_path, cfg):
    """The supervised seeds of `cfg` as one uninterrupted pack of 3 ("full"), and as a pack
    stopped after epoch 1, seed 0 taken alone (with its throw-away partner) to epoch 2, then
    the rest brought level and finished ("cut": packs of 3, 1, 2 and 3)."""
    train_grid(tmp_path / "full", cfg, ["supervised"], PACKED, progress=False, echo=quiet)
    cut = tmp_path / "cut"
    train_grid(cut, cfg, ["supervised"], PACKED, progress=False, echo=quiet, until={"supervised": 1})
    train_grid(cut, replace(cfg, seeds=(0,)), ["supervised"], PACKED, progress=False, echo=quiet,
               until={"supervised": 2})
    train_grid(cut, cfg, ["supervised"], PACKED, progress=False, echo=quiet)
    return tmp_path / "full", cut


def test_pack_size_does_not_change_a_seeds_bits(tmp_path):
    """Seeds trained as packs of 3, 2 and 1 (with its throw-away partner), and seeds left
    behind and brought level, equal an uninterrupted pack of 3 (CPU, channels_last; width 8:
    at width 4 an odd pack's 12-channel stem takes another vector kernel)."""
    cfg = tiny(epochs=3, width=8)
    full, cut = full_and_cut(tmp_path, cfg)
    assert manifests(full, "supervised", cfg.seeds) == manifests(cut, "supervised", cfg.seeds)


def test_where_the_kernels_depend_on_the_pack_size_a_resumed_seed_agrees_up_to_rounding(tmp_path):
    """Width 4: seed 2 trained in a pack of 2 and then of 3 takes another stem kernel than in
    a pack of 3 throughout; it agrees up to rounding (measured 5.4e-5 after epoch 3, bound
    10x), the seeds that kept their kernels bit for bit."""
    cfg = tiny(epochs=3, width=4)
    full, cut = full_and_cut(tmp_path, cfg)
    before, resumed = manifests(full, "supervised", cfg.seeds), manifests(cut, "supervised", cfg.seeds)
    assert before[0] == resumed[0] and before[1] == resumed[1]
    for e in (2, 3):
        diff = checkpoint_drift(full, cut, "supervised", 2, e)
        assert 0 < diff < 5e-4, (e, diff)
    lines = [json.loads(ln) for ln in (art.RunPaths(cut).seed_dir("supervised", 0) / "metrics.jsonl").open()]
    assert [(ln["pack"], ln["slots"]) for ln in lines] == [(3, 3), (1, 2), (3, 3)]  # alone with its partner


def test_a_diverging_seed_leaves_its_pack_and_the_grid_goes_on(tmp_path, monkeypatch):
    """Seed 1's stem made infinite after its epoch 0: its loss is NaN in epoch 1. It is
    recorded and left behind; seeds 0 and 2 end with the bits of an undisturbed pack (the
    seeds never mix), the next setup is trained, and the error names seed 1 at the end."""
    from ssl_dynamics.train import pack as pack_module
    from ssl_dynamics.train.grid import only
    from ssl_dynamics.train.loop import Diverged

    cfg = tiny(epochs=2, width=8)
    train_grid(tmp_path / "full", cfg, ["supervised"], PACKED, progress=False, echo=quiet)
    real = pack_module.open_seed

    def poisoned(paths, run, setup, seed, *args):
        state = real(paths, run, setup, seed, *args)
        if (setup.name, seed) == ("supervised", 1):
            with torch.no_grad():
                next(state.model.parameters()).fill_(float("inf"))
        return state

    monkeypatch.setattr(pack_module, "open_seed", poisoned)
    with pytest.raises(Diverged, match="supervised seed 1: loss became nan at epoch 1"):
        train_grid(tmp_path / "cut", cfg, ["supervised", "random_labels"], PACKED, progress=False,
                   echo=quiet)
    status = {(s.setup, s.seed): s for s in
              art.grid_status(tmp_path / "cut", only(cfg, ["supervised", "random_labels"]))}
    lost = status.pop(("supervised", 1))
    assert (lost.state, lost.last_epoch, lost.diverged_at) == ("partial", 0, 1)
    assert all(s.state == "complete" and s.diverged_at is None for s in status.values())
    assert manifests(tmp_path / "full", "supervised", (0, 2)) == manifests(tmp_path / "cut", "supervised", (0, 2))
    # a rerun retries it; once an epoch past the divergence commits, the record goes
    monkeypatch.setattr(pack_module, "open_seed", real)
    train_grid(tmp_path / "cut", cfg, ["supervised"], PACKED, progress=False, echo=quiet)
    m = art.read_json(art.RunPaths(tmp_path / "cut").manifest("supervised", 1))
    assert m["complete"] and "diverged" not in m


def test_packed_and_separate_runs_resume_each_other(tmp_path):
    cfg = tiny(epochs=2, seeds=(0, 1))
    two = replace(PACKED, pack=2)
    for name, first, then in (("a", two, CPU), ("b", CPU, two)):
        train_grid(tmp_path / name, cfg, ["simclr"], first, progress=False, echo=quiet, until={"simclr": 1})
        train_grid(tmp_path / name, cfg, ["simclr"], then, progress=False, echo=quiet)
        paths = art.RunPaths(tmp_path / name)
        for seed in (0, 1):
            m = art.read_json(paths.manifest("simclr", seed))
            assert m["complete"] and sorted(m["checkpoints"]) == ["0", "1", "2"]
            assert all(art.sha256_file(paths.checkpoint("simclr", seed, int(e))) == h
                       for e, h in m["checkpoints"].items())
            assert [json.loads(x)["epoch"] for x in paths.metrics("simclr", seed).read_text().splitlines()] == [1, 2]


# --------------------------------------------------------------------------- kill -9

def test_killed_packed_run_resumes_every_seed_exactly(tmp_path):
    """SIGKILL a real packed `train run` mid-grid, rerun it: every seed complete, its manifest
    matching its files, and every checkpoint equal to an uninterrupted packed run's."""
    args = ["--preset", "smoke", "--setup", "supervised", "--seeds", "0-2", "--epochs", "5",
            "--set", "train_subset=48", "--set", "batch_size=16", "--set", "width=8", "--device", "cpu",
            "--pack", "3",
            "--deterministic", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    assert kill_train_run_at(args, tmp_path / "cut", art.RunPaths(tmp_path / "cut").checkpoint("supervised", 1, 2),
                             env) == -9  # SIGKILL landed before the run ended
    cut = art.RunPaths(tmp_path / "cut")
    assert not all(art.read_json(cut.manifest("supervised", s))["complete"] for s in range(3))
    subprocess.run(TRAIN_RUN + args + ["--out", str(tmp_path / "cut")], check=True, capture_output=True, env=env)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the processes ran
    try:
        cfg = tiny(epochs=5, width=8)
        train_grid(tmp_path / "full", cfg, ["supervised"], PACKED, progress=False, echo=quiet)
    finally:
        torch.set_num_threads(threads)
    for seed in range(3):
        m = art.read_json(cut.manifest("supervised", seed))
        assert m["complete"] and sorted(map(int, m["checkpoints"])) == list(range(6))
        for e, sha in m["checkpoints"].items():
            assert art.sha256_file(cut.checkpoint("supervised", seed, int(e))) == sha
        assert not list(cut.seed_dir("supervised", seed).glob(".*.tmp"))
    assert manifests(tmp_path / "full", "supervised", range(3)) == manifests(cut.root, "supervised", range(3))


# --------------------------------------------------------------------------- refusals

@pytest.mark.parametrize("extra, message", [
    (["--pack", "0"], "--pack 0: use auto or a positive number"),
    (["--pack", "two"], "--pack 'two'"),
    (["--pack", "2", "--set", "backbone=timm:resnet18"], "needs the CIFAR ResNet-18 backbone"),
])
def test_bad_pack_is_one_line_exit_2(tmp_path, monkeypatch, capsys, extra, message):
    from ssl_dynamics.train.cli import main

    monkeypatch.setattr(sys, "argv", ["train", "run", "--preset", "smoke", "--out", str(tmp_path / "run"), *extra])
    with pytest.raises(SystemExit) as e:
        main()
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and message in err
    assert not (tmp_path / "run").exists()


def test_auto_pack_is_one_on_the_cpu_and_for_timm():
    assert TrainRequest(device="cpu").resolve().pack == 1
    assert TrainRequest(device="cpu").resolve().channels_last is False  # today's CPU default
    assert TrainRequest(device="cpu", pack="4").resolve().channels_last is True
    assert TrainRequest(device="cpu", pack="4").resolve(backbone="timm:resnet18").pack == 4


def test_weights_that_overflow_after_a_finite_loss_are_not_committed(tmp_path, monkeypatch):
    """The epoch's mean loss is finite but its last step left a non-finite weight: the
    epoch is not committed (phase two would refuse the checkpoint) and the seed is reported
    as diverged, alone in its pack and at pack 1 alike."""
    from ssl_dynamics.train import loop
    from ssl_dynamics.train import pack as pack_module
    from ssl_dynamics.train.loop import Diverged

    def last_step_overflows(real, model_of):
        def run(*args, **kw):
            metrics = real(*args, **kw)
            target = model_of(args[0])
            if target is not None:
                with torch.no_grad():
                    next(target.parameters())[0].fill_(float("nan"))
            return metrics
        return run

    cfg = tiny(epochs=1, width=8, seeds=(0, 1))
    # packed: seed 1's weights go bad once its pack's epoch is unpacked
    real_unpack = pack_module.unpack

    def unpack_then_spoil(pack):
        real_unpack(pack)
        for state in pack.slots[:pack.real]:
            if state.seed == 1:
                with torch.no_grad():
                    next(state.model.parameters())[0].fill_(float("nan"))

    monkeypatch.setattr(pack_module, "unpack", unpack_then_spoil)
    with pytest.raises(Diverged, match="supervised seed 1: weights became non-finite at epoch 1"):
        train_grid(tmp_path / "packed", cfg, ["supervised"], PACKED, progress=False, echo=quiet)
    status = {s.seed: s for s in art.grid_status(tmp_path / "packed", cfg) if s.setup == "supervised"}
    assert (status[1].last_epoch, status[1].diverged_at) == (0, 1) and status[0].state == "complete"
    # one seed at a time
    monkeypatch.setattr(loop, "run_epoch", last_step_overflows(loop.run_epoch, lambda state: state.model))
    one = tiny(epochs=1, width=8, seeds=(0,))
    with pytest.raises(Diverged, match="supervised seed 0: weights became non-finite at epoch 1"):
        train_grid(tmp_path / "one", one, ["supervised"], CPU, progress=False, echo=quiet)
    assert art.seed_status(art.RunPaths(tmp_path / "one"), "supervised", 0, 1).last_epoch == 0
