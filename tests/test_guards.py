"""Guards and details a mutation pass found untested: the durability of atomic writes, the
checkpoint format's own checks, the deterministic safetensors bytes, the r_t store's
refusals, the packed optimizer's lockstep check, the netCDF coordinates of the HDF5
exports, SimCLR augmentation in chunks, Fig. B.1's second views and the beta-binomial
maximum between grid points."""
from __future__ import annotations

import os
import stat

import h5py
import numpy as np
import pytest
import torch

from ssl_dynamics import artifacts as art
from ssl_dynamics.errors import UserError

# ------------------------------------------------------------------------------ atomic writes


def test_an_atomic_write_syncs_the_file_then_renames_then_syncs_the_folder(tmp_path, monkeypatch):
    """Without the first fsync a crash can leave the new name on an empty file; without the
    last, the rename itself may not survive."""
    from ssl_dynamics.artifacts import atomic

    calls = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        calls.append("fsync folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file")
        real_fsync(fd)

    def replace(a, b):
        calls.append("replace")
        real_replace(a, b)

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    monkeypatch.setattr(atomic.os, "replace", replace)
    art.write_bytes_atomic(tmp_path / "f", b"x")
    assert calls == ["fsync file", "replace", "fsync folder"]
    assert (tmp_path / "f").read_bytes() == b"x"


def test_h5_atomic_without_update_starts_a_new_file(tmp_path):
    path = tmp_path / "a.h5"
    with art.h5_atomic(path) as f:
        f["a"] = 1
    with art.h5_atomic(path, update=True) as f:
        f["b"] = 2
    with h5py.File(path, "r") as f:
        assert set(f) == {"a", "b"}
    with art.h5_atomic(path) as f:
        f["c"] = 3
    with h5py.File(path, "r") as f:
        assert set(f) == {"c"}


# ------------------------------------------------------------------------------ checkpoints


def _net():
    from ssl_dynamics.models import build_network

    torch.manual_seed(0)
    return build_network("resnet18_cifar", 10, 4)


META = {"backbone": "resnet18_cifar", "width": 4, "head_dim": 10}


def _manifest(path, sha):
    """The manifest `load_network` checks the checkpoint's sha256 against."""
    art.write_json_atomic(path.parent / "manifest.json", {"checkpoints": {"1": sha}})


def test_a_bf16_checkpoint_loads_as_a_float32_network(tmp_path):
    path = tmp_path / "epoch_0001.safetensors"
    net = _net()
    art.save_checkpoint(path, net, META, weight_dtype=torch.bfloat16)
    state, _ = art.load_weights(path, verify=False)
    assert all(v.dtype == torch.float32 for v in state.values() if v.is_floating_point())
    loaded, _ = art.load_network(path, verify=False)
    assert next(loaded.parameters()).dtype == torch.float32
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        want = net.eval().to(torch.bfloat16).float()(x)["out"]  # the same weights, rounded to bf16
        assert torch.allclose(loaded(x)["out"], want, atol=1e-5)


def test_a_tensor_of_the_wrong_shape_is_refused_by_name(tmp_path):
    shapes = art.network_shapes("resnet18_cifar", 10, 4)
    have = {**shapes, "head.bias": (1,)}
    with pytest.raises(UserError, match=r"head\.bias has shape \(1,\), the network needs \(10,\)$"):
        art.checkpoint.check_shapes(have, shapes, tmp_path / "c")
    path = tmp_path / "c.safetensors"  # the same through a file's header
    state = {k: v for k, v in _net().state_dict().items()}
    state["head.bias"] = state["head.bias"][:1].clone()
    art.write_bytes_atomic(path, art.safetensors_bytes(
        state, {"format": art.CHECKPOINT_FORMAT, "schema_version": "2", "meta": "{}"}))
    with pytest.raises(UserError, match=r"head\.bias has shape \(1,\)"):
        art.check_header(path, shapes)


def test_a_file_of_another_format_is_refused_as_such(tmp_path):
    data = art.safetensors_bytes(_net().state_dict(), {"format": "other/1", "meta": "{}"})
    with pytest.raises(UserError, match=f"not a {art.CHECKPOINT_FORMAT} file"):
        art.parse_checkpoint(torch.frombuffer(bytearray(data), dtype=torch.uint8), tmp_path / "c")


def test_a_resume_file_with_a_negative_epoch_is_not_a_resume_point(tmp_path):
    path = tmp_path / "resume.pt"
    art.save_resume(path, {"epoch": -1, "optimizer": {}})
    assert art.resume_epoch(path) is None and art.load_resume(path) is None
    art.save_resume(path, {"epoch": 0, "optimizer": {"state": {}, "param_groups": []}})
    assert art.resume_epoch(path) == 0


def test_safetensors_bytes_are_aligned_and_independent_of_key_order(tmp_path):
    from ssl_dynamics.artifacts.tensorfile import read_file, tensors_of

    a, b = torch.arange(6.0), torch.arange(3, dtype=torch.int64)
    padded = 0
    for value in ("v", "vv", "vvv", "vvvv", "vvvvv", "vvvvvv", "vvvvvvv", "vvvvvvvv"):
        data = art.safetensors_bytes({"b": b, "ab": a}, {"k": value})
        n = int.from_bytes(data[:8], "little")
        assert (8 + n) % 8 == 0, value  # tensors start 8-byte aligned
        padded += data[8 + n - 1:8 + n] == b" "
    assert padded == 7  # every header length but one needed padding
    data = art.safetensors_bytes({"b": b, "ab": a}, {"k": "v"})
    assert data == art.safetensors_bytes({"ab": a, "b": b}, {"k": "v"})  # equal states, equal bytes
    path = tmp_path / "t.safetensors"
    path.write_bytes(data)
    raw = read_file(path)
    state, meta = tensors_of(raw, path)
    assert torch.equal(state["ab"], a) and torch.equal(state["b"], b) and meta == {"k": "v"}
    base = raw.data_ptr()  # aligned: views into the file's bytes, no copies
    assert all(base <= t.data_ptr() < base + raw.numel() for t in state.values())


# ------------------------------------------------------------------------------ the r_t store


def _store(path, seeds=(4, 2)):
    from ssl_dynamics.inspect.store import RtStore

    store = RtStore(path)
    store.init_probes(np.array([7, 3, 9, 1]), np.array([0, 1, 0, 1]), "bank")
    store.ensure_setup("supervised", list(seeds), 3, 2, 4, 1, np.array([1, 0, 1, 0]),
                       {"setup_config": {"name": "supervised"}})
    return store


def test_a_store_refuses_seeds_the_run_no_longer_lists(tmp_path):
    store = _store(tmp_path / "s.zarr")
    with pytest.raises(UserError, match=r"has seeds \[2\] that the run does not list"):
        store.ensure_setup("supervised", [4], 3, 2, 4, 1, np.array([1, 0, 1, 0]),
                           {"setup_config": {"name": "supervised"}})


def test_growing_the_seeds_updates_the_recorded_shape(tmp_path):
    store = _store(tmp_path / "s.zarr")
    store.ensure_setup("supervised", [4, 2, 7], 3, 2, 4, 1, np.array([1, 0, 1, 0]),
                       {"setup_config": {"name": "supervised"}})
    attrs = store.attrs("supervised")
    assert attrs["seeds"] == [4, 2, 7] and attrs["shape"][0] == 3
    assert list(store.group["supervised/correct"].shape) == attrs["shape"]


def test_a_bound_store_refuses_another_bank_even_before_it_has_setups(tmp_path):
    from ssl_dynamics.inspect.store import RtStore

    store = RtStore(tmp_path / "s.zarr")
    store.init_probes(np.array([7, 3]), np.array([0, 1]), "bankA")
    store.init_probes(np.array([7, 3]), np.array([0, 1]), "bankA")  # the same bank: fine
    with pytest.raises(UserError, match="made from a different bank"):
        store.init_probes(np.array([5, 6]), np.array([1, 1]), "bankB")


def test_restoring_a_checkpoint_whose_p_true_is_all_nan_keeps_it_evaluated(tmp_path):
    """A model whose outputs were all NaN is a result (the analyses refuse it by name), not
    a lost chunk to evaluate again: its p_true chunk is written even though it equals the
    fill value."""
    from ssl_dynamics.inspect.store import RtStore

    src = _store(tmp_path / "a.zarr")
    shape = (2, 3, 2, 4, 1)
    arrays = {"correct": np.ones(shape, np.uint8), "p_true": np.full(shape, 0.5, np.float32),
              "done": np.ones(shape[:2], np.uint8), "targets": np.array([1, 0, 1, 0])}
    arrays["p_true"][0, 1] = np.nan
    dst = RtStore(tmp_path / "b.zarr")
    dst.init_probes(*src.probes(), "bank")
    dst.restore_setup("supervised", src.attrs("supervised"), arrays)
    reader = RtStore(tmp_path / "b.zarr", writable=False)
    assert reader.done("supervised").all()
    assert np.isnan(reader.read("supervised")["p_true"][0, 1]).all()


# ------------------------------------------------------------------------------ HDF5 coordinates


def test_a_coordinate_of_the_wrong_length_is_not_attached(tmp_path):
    from ssl_dynamics.inspect import h5dims

    with h5py.File(tmp_path / "c.h5", "w") as f:
        h5dims.add_coordinate(f, "probe", np.arange(4))
        assert f["probe"].is_scale
        ds = f.create_dataset("labels", data=np.zeros(3))
        with pytest.raises(ValueError, match="axis 0 has length 3, coordinate 'probe' has 4"):
            h5dims.attach(ds, f, ("probe",))


# ------------------------------------------------------------------------------ packed optimizers


def test_optimizer_states_of_different_steps_are_not_packed():
    from ssl_dynamics.packed import GroupedNetwork, load_optimizer_states

    nets = [_net() for _ in range(2)]
    states = []
    for steps, net in zip((1, 2), nets):
        opt = torch.optim.Adam(net.parameters())
        for _ in range(steps):
            net(torch.rand(2, 3, 32, 32))["out"].sum().backward()
            opt.step()
        states.append(opt.state_dict())
    grouped = GroupedNetwork(nets[0], 2)
    opt = torch.optim.Adam(grouped.parameters())
    with pytest.raises(ValueError, match="different steps"):
        load_optimizer_states(grouped, opt, states)
    fresh = torch.optim.Adam(nets[0].parameters()).state_dict()  # no step at all
    with pytest.raises(ValueError, match="different steps"):
        load_optimizer_states(grouped, opt, [states[0], fresh])


# ------------------------------------------------------------------------------ augmentation


def test_simclr_views_in_cpu_chunks_use_each_images_own_parameters(monkeypatch):
    """Batches larger than SIMCLR_CHUNK run in chunks on the CPU; every chunk must use its own
    images' parameters (a SimCLR batch of 256 images is 512 views, the bank 2,048)."""
    import ssl_dynamics.augment as A

    monkeypatch.setattr(A, "SIMCLR_CHUNK", 16)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (40, 3, 32, 32), generator=g, dtype=torch.uint8)
    views, p = A.augment("simclr", x, g)
    for i in (0, 15, 16, 31, 39):  # one image at a time: no chunking, its own parameters
        one = A.apply_params("simclr", x[i:i + 1], A.index_params(p, slice(i, i + 1)))
        assert torch.allclose(views[i:i + 1], one, atol=1e-6), i


# ------------------------------------------------------------------------------ Fig. B.1


def test_first_second_stores_the_second_views_numbers():
    from ssl_dynamics.inspect import stats as st
    from ssl_dynamics.inspect.first_second import first_second
    from ssl_dynamics.inspect.rtdata import SetupRt

    rng = np.random.default_rng(0)
    s, e, m, k = 3, 4, 2, 12
    first = (rng.random((s, e, m, k)) < 0.4).astype(np.uint8)
    second = (rng.random((s, e, m, k)) < 0.7).astype(np.uint8)
    valid = np.ones((s, e), bool)
    valid[1, 2] = False
    d = SetupRt("simclr", first, first.astype(np.float32), valid, np.arange(s), np.arange(e),
                np.arange(k) % 3, np.arange(k) % 3, np.arange(k), second, second.astype(np.float32))
    arrays = {}
    rows, curves = first_second({"simclr": d}, ["simclr"], {"simclr": st.r_t(first, valid)}, arrays)
    np.testing.assert_allclose(arrays["simclr/first_second/r_t_second"], st.r_t(second, valid), rtol=1e-6)
    np.testing.assert_allclose(arrays["simclr/first_second/r_tilde0_second"],
                               st.r_tilde(second, 0, valid), rtol=1e-6)
    for epoch, r1, r2, t1, t2 in curves["simclr"]:
        ok = valid[:, epoch]  # the slow way: seeds evaluated at that epoch, augmentation 0
        assert np.allclose(t2, second[ok, epoch, 0].mean(axis=0))
        assert np.allclose(t1, first[ok, epoch, 0].mean(axis=0))
        assert np.allclose(r2, second[ok, epoch].mean(axis=(0, 1)))


# ------------------------------------------------------------------------------ beta-binomial


def test_the_beta_binomial_maximum_is_found_between_grid_points():
    """rho_hat maximizes the profile likelihood locally, on both sides (the search bracket
    spans the grid points on either side of the best one)."""
    from ssl_dynamics.inspect import overdispersion as od

    n = 8
    for seed in range(10):
        g = np.random.default_rng(seed)
        counts = g.binomial(n, g.beta(2, 3, size=300))
        fit = od.betabinomial_fit(counts, n)
        freq = np.bincount(counts, minlength=n + 1).astype(np.float64)
        gg, hh = freq[::-1].cumsum()[::-1][1:], freq.cumsum()[:-1][::-1]
        prof = [od._bb_profile(r, gg, hh, float(counts.size))[0]
                for r in (fit["rho"] * (1 - 1e-3), fit["rho"], fit["rho"] * (1 + 1e-3))]
        assert prof[0] <= prof[1] + 1e-9 and prof[2] <= prof[1] + 1e-9, seed


# ------------------------------------------------------------------------------ per-example inputs


def test_per_example_measures_refuse_repeated_epochs():
    from ssl_dynamics.inspect import example_measures as em

    c = np.ones((1, 3, 1, 2), np.uint8)
    with pytest.raises(ValueError, match="strictly increasing"):
        em.example_summary(c, c.astype(np.float32), np.ones((1, 3), bool), np.array([0, 1, 1]))


def test_a_negative_epoch_is_refused_not_silently_skipped(tiny_rt, tmp_path):
    from _util import private_copy, rt

    run = private_copy(tiny_rt, tmp_path)
    with pytest.raises(UserError, match=r"epoch\(s\) -1 not in this run"):
        rt(run, epochs=[-1])


def test_a_store_made_before_bank_settings_were_recorded_accepts_the_same_bank(tiny_rt, tmp_path):
    """Such a store is judged on what it shows: a deterministic setup (random_labels: no
    augmentation) holds one replay, not M, and that is no sign of another bank."""
    import warnings

    import zarr
    from _util import private_copy

    from conftest import TINY_BANK
    from ssl_dynamics.inspect import bank as bank_mod
    from ssl_dynamics.inspect.rt_plan import check_new_bank

    run = private_copy(tiny_rt, tmp_path)
    store = run / "inspect" / "rt.zarr"
    root = zarr.open_group(str(store), mode="r+")
    del root.attrs["bank_spec"]
    assert root["random_labels/correct"].shape[2] == 1 and root["supervised/correct"].shape[2] == 3
    with warnings.catch_warnings():  # zarr: consolidated metadata is not in the v3 spec yet
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(str(store))
    ws_run = art.Run.open(run)
    check_new_bank(ws_run, store, tmp_path / "new.h5", bank_mod.BankSpec(**TINY_BANK))
    with pytest.raises(UserError, match="made from another bank"):
        check_new_bank(ws_run, store, tmp_path / "new.h5", bank_mod.BankSpec(**{**TINY_BANK, "n_replays": 4}))
