"""Phase two, evaluation half: the bank, the r_t store, sharding, resume and refusals."""
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from ssl_dynamics import artifacts as art
from ssl_dynamics.augment import apply_params, make_generator, sample_params
from ssl_dynamics.config import thesis_setups
from ssl_dynamics.errors import UserError
from ssl_dynamics.inspect import bank as bank_mod
from ssl_dynamics.inspect.evaluate import evaluate
from ssl_dynamics.inspect.rt import parse_shard
from _util import private_copy, rt
from ssl_dynamics.inspect.rtdata import load_rt
from ssl_dynamics.losses import pair_logits, partner_index
from ssl_dynamics.models import build_network
from ssl_dynamics.objectives import objective_for

BANK = dict(n_probe=24, n_replays=3, simclr_batch=8)  # 3 SimCLR batches of 8 images
QUIET = dict(progress=False, echo=lambda *_: None)


@pytest.fixture(scope="module")
def trained(tiny_run):
    """A finished tiny phase-one run: 4 setups x 2 seeds x 2 epochs on 48 synthetic images."""
    return tiny_run


@pytest.fixture
def run(trained, tmp_path):
    """A private copy of the trained run (tests may damage it)."""
    return private_copy(trained, tmp_path)


def test_rt_end_to_end_shapes_ranges_and_resume(run):
    res = rt(run, device="cpu", **BANK, **QUIET)
    assert res["evaluated"] == 4 * 2 * 3  # setups x seeds x epochs 0..2
    # where the evaluating thread waited: for the loader, for the store's writer
    assert set(res["waited_s"]) == {"checkpoints", "writes"}
    assert 0 <= sum(res["waited_s"].values()) <= res["seconds"]
    data = load_rt(run / "inspect" / "rt.zarr")
    assert set(data) == {"simclr", "supervised", "random_labels", "random_labels_aug"}
    for name, d in data.items():
        m = 1 if name == "random_labels" else 3  # 'none' is a point mass: one replay
        assert d.correct.shape == (2, 3, m, 24) and d.p_true.shape == (2, 3, m, 24)
        assert d.valid.all() and set(np.unique(d.correct)) <= {0, 1}
        assert np.all((d.p_true >= 0) & (d.p_true <= 1))
        assert (d.correct_second is not None) == (name == "simclr")
    perm = np.load(art.RunPaths(run).random_labels)
    assert np.array_equal(data["random_labels"].targets, perm[data["random_labels"].probe_indices])
    assert np.array_equal(data["supervised"].targets, data["supervised"].labels)
    again = rt(run, device="cpu", **QUIET)  # bank settings come from the bank
    assert again["evaluated"] == 0


def test_shards_fill_the_same_store_as_one_process(run, tmp_path):
    one = tmp_path / "one.zarr"
    rt(run, one, device="cpu", **BANK, **QUIET)
    shared = tmp_path / "shared.zarr"
    n = [rt(run, shared, shard=f"{i}/3", device="cpu", **QUIET)["evaluated"] for i in range(3)]
    assert sum(n) == 24 and all(k > 0 for k in n)
    a, b = load_rt(one), load_rt(shared)
    for s in a:
        assert np.array_equal(a[s].correct, b[s].correct) and np.allclose(a[s].p_true, b[s].p_true)
        assert b[s].valid.all()


def test_parallel_shard_processes(run, tmp_path):
    """Two real processes on one Zarr store at once (creation races included)."""
    rt(run, tmp_path / "warm.zarr", setups=["random_labels"], device="cpu", **BANK, **QUIET)
    store = tmp_path / "par.zarr"
    cmd = [sys.executable, "-c", "from ssl_dynamics.inspect.cli import main; main()", "rt", str(run),
           "--store", str(store), "--device", "cpu", "--no-progress"]
    procs = [subprocess.Popen(cmd + ["--shard", f"{i}/2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for i in range(2)]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()
    assert all(d.valid.all() for d in load_rt(store).values())


def test_h5_store_matches_zarr(run, tmp_path):
    rt(run, tmp_path / "a.zarr", device="cpu", **BANK, **QUIET)
    rt(run, tmp_path / "b.h5", device="cpu", **QUIET)
    a, b = load_rt(tmp_path / "a.zarr"), load_rt(tmp_path / "b.h5")
    for s in a:
        assert np.array_equal(a[s].correct, b[s].correct)
        assert np.array_equal(a[s].epochs, b[s].epochs) and np.array_equal(a[s].seeds, b[s].seeds)
    with pytest.raises(UserError, match="--shard needs a .zarr"):
        rt(run, tmp_path / "c.h5", shard="0/2", device="cpu", **QUIET)


def test_bank_is_deterministic_and_replays_the_stored_params(run, tmp_path):
    x = torch.randint(0, 256, (30, 3, 32, 32), dtype=torch.uint8)
    y = torch.arange(30) % 10
    keys = [("simclr", 2), ("supervised", 1), ("none", 1)]
    spec = bank_mod.BankSpec(12, 2, 5, 4)
    a = bank_mod.build_bank(tmp_path / "a.h5", x, y, keys, "sha", spec)
    b = bank_mod.build_bank(tmp_path / "b.h5", x, y, keys, "sha", spec)
    assert a.fingerprint == b.fingerprint and np.array_equal(a.probe_indices, b.probe_indices)
    assert len(set(a.probe_indices.tolist())) == 12
    assert a.views[("simclr", 2)].shape == (2, 12, 2, 3, 32, 32) and a.views[("none", 1)].shape[0] == 1
    # replay j of kind k is the phase-one augmentation code with generator (seed, "bank", k, j)
    imgs = x[torch.from_numpy(a.probe_indices)].repeat_interleave(2, 0)
    p = sample_params("simclr", len(imgs), make_generator(5, "bank", "simclr", 1), 32)
    assert np.allclose(apply_params("simclr", imgs, p).numpy().reshape(12, 2, 3, 32, 32), a.views[("simclr", 2)][1])
    c = bank_mod.build_bank(tmp_path / "c.h5", x, y, [("simclr", 2)], "sha", bank_mod.BankSpec(12, 2, 6, 4))
    assert c.fingerprint != a.fingerprint


def test_evaluate_matches_slow_loops():
    torch.manual_seed(0)
    setups = thesis_setups()
    net = build_network("resnet18_cifar", 10, width=4).eval()
    views = torch.rand(2, 5, 1, 3, 32, 32)
    targets = torch.randint(0, 10, (5,))
    correct, p_true = evaluate(net, objective_for(setups["supervised"]), views, targets, 256)
    for j in range(2):
        for k in range(5):
            logits = net(views[j, k])["out"][0]
            assert correct[j, k, 0] == (logits.argmax() == targets[k]).item()
            assert p_true[j, k, 0] == pytest.approx(torch.softmax(logits, 0)[targets[k]].item(), abs=1e-5)
    sim = build_network("resnet18_cifar", 128, width=4).eval()
    views = torch.rand(2, 6, 2, 3, 32, 32)
    correct, p_true = evaluate(sim, objective_for(setups["simclr"]), views, targets, 4)
    tau = setups["simclr"].temperature
    assert tau == 0.07  # the thesis's SimCLR temperature (config.thesis_setups)
    for j in range(2):
        for b0, b1 in ((0, 4), (4, 6)):  # fixed batches of B = 4 images (last one short)
            z = sim(views[j, b0:b1].reshape(-1, 3, 32, 32))["out"]
            logits = pair_logits(z, 0.07)
            want = logits.argmax(1) == partner_index(len(z))
            assert np.array_equal(correct[j, b0:b1].reshape(-1), want.numpy())
            # p_true: softmax over the other 2B - 1 views of cos-sim / tau, at the partner
            # (views 2i and 2i + 1 are one image's pair), by explicit loops in float64
            zz = z.detach().double()
            p_slow = []
            for i in range(len(zz)):
                sims = {k: float(zz[i] @ zz[k] / (zz[i].norm() * zz[k].norm()))
                        for k in range(len(zz)) if k != i}
                top = max(sims.values())
                weights = {k: math.exp((v - top) / tau) for k, v in sims.items()}
                p_slow.append(weights[i + 1 if i % 2 == 0 else i - 1] / sum(weights.values()))
            got = p_true[j, b0:b1].reshape(-1)
            assert np.allclose(got, p_slow, rtol=1e-4, atol=1e-6)


def test_missing_checkpoints_are_named_then_skipped(run):
    paths = art.RunPaths(run)
    paths.checkpoint("supervised", 1, 2).unlink()
    with pytest.raises(UserError, match="supervised seed 1 epochs 2 .*--allow-missing"):
        rt(run, device="cpu", **BANK, **QUIET)
    rt(run, device="cpu", allow_missing=True, **BANK, **QUIET)
    d = load_rt(run / "inspect" / "rt.zarr")["supervised"]
    assert d.valid.sum(axis=0).tolist() == [2, 2, 1]


def test_checkpoints_without_their_manifest_are_named_as_such(run):
    paths = art.RunPaths(run)
    paths.manifest("supervised", 1).unlink()  # its files are there, but uncommitted
    with pytest.raises(UserError, match=r"supervised seed 1 epochs 0-2; supervised seed 1: checkpoints "
                                        r"without manifest.json, which commits them .*--allow-missing"):
        rt(run, setups=["supervised"], device="cpu", **BANK, **QUIET)
    paths.checkpoint("supervised", 0, 2).unlink()  # a file gone is missing, not unlisted
    with pytest.raises(UserError, match=r"supervised seed 0 epochs 2; supervised seed 1 epochs 0-2; supervised "
                                        r"seed 1: checkpoints without"):
        rt(run, setups=["supervised"], device="cpu", **BANK, **QUIET)


def test_corrupt_checkpoint_named(run):
    p = art.RunPaths(run).checkpoint("simclr", 0, 1)
    p.write_bytes(p.read_bytes()[:64])
    with pytest.raises(UserError, match="corrupt checkpoint .*simclr/seed-00/epoch-0001"):
        rt(run, device="cpu", **BANK, **QUIET)
    # a truncated header is found before anything is evaluated: nothing was written
    assert not (run / "inspect" / "rt.zarr").exists()


def test_flipped_tensor_bytes_are_refused_and_earlier_work_kept(run):
    p = art.RunPaths(run).checkpoint("simclr", 0, 1)
    data = bytearray(p.read_bytes())
    data[-5] ^= 0xFF  # a weight, not the header: only the sha256 can tell
    p.write_bytes(bytes(data))
    with pytest.raises(UserError, match="epoch-0001.safetensors: its sha256 differs"):
        rt(run, setups=["simclr"], device="cpu", **BANK, **QUIET)
    d = load_rt(run / "inspect" / "rt.zarr")["simclr"]
    assert d.valid[0, 0] and not d.valid[0, 1]  # evaluated before the bad one, not the bad one
    # --no-verify evaluates it (the file is still a well-formed checkpoint)
    assert rt(run, setups=["simclr"], verify=False, **QUIET)["evaluated"] > 0


def test_truncated_weights_are_refused_before_any_work_with_or_without_verify(run):
    """The header is intact, but the file is shorter than it implies (a copy cut short):
    refused while planning, before the bank or the store is written, without a --no-verify
    hint (no option reads it); the loader's own check (`tensors_of`) stays for a file cut
    short after planning."""
    p = art.RunPaths(run).checkpoint("simclr", 0, 1)
    whole = p.read_bytes()
    p.write_bytes(whole[:-100])
    for verify in (True, False):
        with pytest.raises(UserError, match="corrupt checkpoint .*simclr/seed-00/epoch-0001.safetensors: "
                                            f"it is {len(whole) - 100} bytes where its header implies "
                                            f"{len(whole)} .cut short or appended to.; restore it from a "
                                            "copy, or delete the seed's folder and train it again$"):
            rt(run, setups=["simclr"], device="cpu", verify=verify, **BANK, **QUIET)
        assert not (run / "inspect" / "rt.zarr").exists() and not (run / "inspect" / "bank.h5").exists()


def test_buffers_come_back_only_after_their_weights_were_copied(run, monkeypatch):
    """The loader's buffers are reused: one given back too early would hand the network
    another file's bytes. Poisoned (NaN) the moment they come back, they must change nothing."""
    rt(run, setups=["supervised"], **BANK, **QUIET)
    want = load_rt(run / "inspect" / "rt.zarr")["supervised"]

    class Poisoning(art.Buffers):
        def give(self, view, event=None):
            buf = self._taken.get(view.untyped_storage().data_ptr())
            if buf is not None:
                buf.fill_(255)  # every float read from it is NaN
            super().give(view, event)

    monkeypatch.setattr(art, "Buffers", Poisoning)
    rt(run, run / "inspect" / "again.zarr", setups=["supervised"], **QUIET)
    got = load_rt(run / "inspect" / "again.zarr")["supervised"]
    assert np.array_equal(got.correct, want.correct)
    assert np.array_equal(got.p_true, want.p_true)


def test_a_failed_store_write_stops_the_run_and_keeps_what_was_written(run, monkeypatch):
    from ssl_dynamics.inspect.store import RtStore

    real, calls = RtStore.write, []

    def failing(self, setup, s, e, correct, p_true, *sha256):
        calls.append((s, e))
        if len(calls) == 3:
            raise OSError("disk gone")
        real(self, setup, s, e, correct, p_true, *sha256)

    monkeypatch.setattr(RtStore, "write", failing)
    with pytest.raises(OSError, match="disk gone"):
        rt(run, setups=["supervised"], **BANK, **QUIET)
    done = load_rt(run / "inspect" / "rt.zarr")["supervised"].valid
    written = [c for i, c in enumerate(calls) if i != 2]
    assert sorted(map(tuple, np.argwhere(done).tolist())) == sorted(written)
    monkeypatch.setattr(RtStore, "write", real)
    assert rt(run, setups=["supervised"], **QUIET)["evaluated"] == 6 - len(written)  # the rest


def test_foreign_checkpoint_refused(run):
    paths = art.RunPaths(run)
    state, meta = art.load_checkpoint(paths.checkpoint("supervised", 0, 1))
    net = build_network("resnet18_cifar", 10, width=4)
    net.load_state_dict(state)
    meta["setup_config"]["lr"] = 123.0
    art.save_checkpoint(paths.checkpoint("supervised", 0, 1), net, meta)
    # the header's metadata is read before anything is evaluated, with or without --no-verify
    for verify in (True, False):
        with pytest.raises(UserError, match="different config"):
            rt(run, setups=["supervised"], verify=verify, **BANK, **QUIET)
    meta["setup_config"]["lr"] = art.read_json(paths.setup_json("supervised"))["lr"]
    meta["dataset_sha256"] = "0" * 64
    art.save_checkpoint(paths.checkpoint("supervised", 0, 1), net, meta)
    with pytest.raises(UserError, match="different dataset"):
        rt(run, setups=["supervised"], **BANK, **QUIET)
    # right metadata, but not the file the manifest recorded: the sha256 check refuses it
    state["head.bias"] = state["head.bias"] + 1
    net.load_state_dict(state)
    meta["dataset_sha256"] = art.read_json(paths.run_json)["dataset"]["sha256"]
    art.save_checkpoint(paths.checkpoint("supervised", 0, 1), net, meta)
    with pytest.raises(UserError, match="epoch-0001.safetensors: its sha256 differs"):
        rt(run, setups=["supervised"], **BANK, **QUIET)


def test_refusals(run, tmp_path):
    with pytest.raises(UserError, match="not a run directory"):
        rt(tmp_path / "nowhere", **QUIET)
    with pytest.raises(UserError, match=r"epoch\(s\) 7 not in this run's planned epochs .*simclr: 0-2.*; "
                                        r"`inspect rt` evaluates those only \(epochs `train extend` added"):
        rt(run, epochs=[1, 7], device="cpu", **BANK, **QUIET)
    with pytest.raises(UserError, match="not in this run"):
        rt(run, setups=["byol"], **QUIET)
    rt(run, setups=["random_labels"], device="cpu", **BANK, **QUIET)
    with pytest.raises(UserError, match="built with other settings"):
        rt(run, setups=["random_labels"], n_probe=12, **QUIET)
    # a new bank (other seed) against the old store: refused, store untouched
    (run / "inspect" / "bank.h5").rename(tmp_path / "old-bank.h5")
    with pytest.raises(UserError, match="another bank"):
        rt(run, setups=["random_labels"], device="cpu", bank_seed=9, **{**BANK}, **QUIET)
    assert not (run / "inspect" / "bank.h5").exists()  # refused before the new bank was built
    # replays per image or the SimCLR batch alone differing: refused before building too
    for other in ({"n_replays": BANK["n_replays"] + 1}, {"simclr_batch": 3}):
        with pytest.raises(UserError, match="another bank"):
            rt(run, setups=["random_labels"], device="cpu", **{**BANK, **other}, **QUIET)
        assert not (run / "inspect" / "bank.h5").exists()
    # a store made before the bank's settings were recorded: judged by what it shows
    import zarr

    root = zarr.open_group(run / "inspect" / "rt.zarr", mode="r+")
    assert root.attrs["bank_spec"] == {"n_probe": 24, "n_replays": 3, "seed": 0, "simclr_batch": 8}
    del root.attrs["bank_spec"]
    for other in ({"bank_seed": 9}, {"simclr_batch": 3}):
        with pytest.raises(UserError, match="another bank"):
            rt(run, setups=["random_labels"], device="cpu", **{**BANK, **other}, **QUIET)
        assert not (run / "inspect" / "bank.h5").exists()
    with pytest.raises(UserError):
        parse_shard("3/2")


def test_cli_rt_errors_are_one_line(run, tmp_path):
    cmd = [sys.executable, "-c", "from ssl_dynamics.inspect.cli import main; main()"]
    r = subprocess.run(cmd + ["rt", str(tmp_path / "nope")], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "not a run directory" in r.stderr
    r = subprocess.run(cmd + ["rt", str(run), "--epochs", "x"], capture_output=True, text=True)
    assert r.returncode == 2 and "comma-separated integers" in r.stderr
