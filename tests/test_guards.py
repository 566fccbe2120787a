"""Guards and details a mutation pass found untested: the durability of atomic writes, the
checkpoint format's own checks, the deterministic safetensors bytes, the r_t store's
refusals, the packed optimizer's lockstep check, the netCDF coordinates of the HDF5
exports, SimCLR augmentation in chunks, Fig. B.1's second views and the beta-binomial
maximum between grid points; then (a second pass) the input checks of the KL, the linear
probe and the binomial tests, schedules and receptive windows, submission records, config
validation, table writing, per-class and heterogeneity rows, and work folders."""
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


# ------------------------------------------------------------------ KL, linear probe, statistics


def test_class_gaussians_refuse_what_would_bend_the_kl():
    """Labels out of range (dropped or wrapping), a class of one image (a NaN covariance),
    NaN features, labels of the wrong shape: each a ValueError, never a quiet result."""
    from ssl_dynamics.inspect.kl import class_gaussians, gaussian_kl, kl_matrix

    x = np.random.default_rng(0).normal(size=(6, 2))
    for labels, n, message in (([0, 0, 1, 1, 2, 2], 2, r"labels must lie in \[0, 2\)"),
                               ([-1, 0, 0, 1, 1, 1], 2, r"labels must lie in \[0, 2\)"),
                               ([0, 0, 1, 1, 1, 2], 3, "class 2 has 1 sample"),
                               (np.zeros((6, 1), int), 1, "labels must be 1-D")):
        with pytest.raises(ValueError, match=message):
            class_gaussians(x, np.asarray(labels), n)
    bad = x.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        class_gaussians(bad, np.array([0, 0, 0, 1, 1, 1]), 2)
    with pytest.raises(ValueError):  # 2 means, 3 covariances
        kl_matrix(np.zeros((2, 2)), np.stack([np.eye(2)] * 3))
    with pytest.raises(ValueError):  # one class: its mean is checked all the same
        kl_matrix(np.array([[np.nan, 0.0]]), np.eye(2)[None])
    rng = np.random.default_rng(1)
    for _ in range(20):  # KL(P || P) is 0, never a rounding error below it
        a = rng.normal(size=(4, 4))
        cov, mu = a @ a.T + 0.1 * np.eye(4), rng.normal(size=4)
        assert gaussian_kl(mu, cov, mu, cov) >= 0.0


def test_the_linear_probe_refuses_inputs_it_cannot_learn_from():
    from ssl_dynamics.inspect.probe import train_linear_probe

    x, y = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32), np.array([0, 1] * 4)
    ok = dict(train_x=x, train_y=y, test_x=x, test_y=y, n_classes=2)
    nan = x.copy()
    nan[0, 0] = np.nan
    for change, message in (({"train_y": np.array([-1, 1] * 4)}, r"train_y must lie in \[0, 2\)"),
                            ({"train_x": nan}, "train_x contains NaN or inf"),
                            ({"test_x": x[:0], "test_y": y[:0]}, "test set is empty"),
                            ({"train_x": x > 0}, "must be real numbers"),
                            ({"n_classes": 1}, "n_classes must be at least 2"),
                            ({"epochs": 0}, "epochs and batch_size must be positive"),
                            ({"lr": 0.0}, "lr must be positive"), ({"lr": float("nan")}, "lr must be positive")):
        with pytest.raises(ValueError, match=message):
            train_linear_probe(**{**ok, **change})


def test_binomial_tests_at_their_edges():
    """Too few bins for the faithful chi-square, a zero pooling threshold, and a G test with
    empty bins, hand-worked: 40 images each correct for exactly 1 of n = 2 seeds against
    Binomial(2, 1/2), expected (10, 20, 10); empty observed bins add nothing to G."""
    from ssl_dynamics.inspect.binomial_stats import chisquare_faithful, g_test_pooled, pool_tail_bins

    with pytest.raises(ValueError, match="at least 3"):  # n = 1: two bins, dof 0
        chisquare_faithful(np.array([0, 1, 1, 0]), n=1, p=0.5)
    with pytest.raises(ValueError):
        pool_tail_bins(np.array([1.0, 2.0, 1.0]), min_expected=0)
    counts = np.ones(40, int)  # every image correct for exactly 1 of 2 seeds
    g, _, _, _ = g_test_pooled(counts, 2, 0.5, min_expected=1)
    # observed (0, 40, 0) against expected (10, 20, 10): G = 2 * 40 * ln(40 / 20); empty bins add 0
    assert g == pytest.approx(80 * np.log(2))


def test_log_spread_keeps_every_epoch_when_there_are_no_more_than_asked():
    from ssl_dynamics.inspect.dynamics import log_spread

    assert log_spread(range(8), 8) == tuple(range(8))
    assert log_spread(range(9), 8) != tuple(range(8))  # more than asked: a spread, first and last in
    assert log_spread(range(9), 8)[0] == 0 and log_spread(range(9), 8)[-1] == 8


def test_learning_rate_constant_and_an_epoch_without_batches():
    from dataclasses import replace

    from ssl_dynamics.config import preset
    from ssl_dynamics.train.schedules import learning_rate

    setups = preset("thesis").setups
    sup, simclr = setups["supervised"], setups["simclr"]
    assert learning_rate(replace(sup, schedule="constant"), 37, 195) == sup.lr
    # a dataset smaller than one batch with drop_last: zero batches, a period of one step
    assert learning_rate(simclr, 10, 0) == learning_rate(simclr, 10, 1)


def test_the_true_receptive_window_of_a_given_position():
    from ssl_dynamics.inspect.receptive import BLOCK_STRIDES, TRUE_RECEPTIVE_FIELDS, true_window

    half = (TRUE_RECEPTIVE_FIELDS[1] - 1) // 2
    assert true_window(1, 0) == (-half, half)  # position 0 is a position, not "the centre"
    assert true_window(1, 2) == (2 * BLOCK_STRIDES[1] - half, 2 * BLOCK_STRIDES[1] + half)
    with pytest.raises(ValueError):
        true_window(5, 0)


# ------------------------------------------------------------------ records, config, outputs


def test_submission_records_are_checked_field_by_field():
    from ssl_dynamics.cluster.records import valid_record

    def record(**work):
        return {"folder": "f", "jobs": [{"job_id": "1_0", "work": work}]}

    assert valid_record(record(shard="0/2")) and valid_record(record(runs=[["simclr", 3]]))
    assert not valid_record({"folder": "f", "jobs": [{"job_id": True, "work": {}}]})  # bool is no id
    assert not valid_record(record(runs=[["simclr", True]]))
    assert not valid_record(record(shard="2"))


def test_sacct_array_lines_give_each_task_its_state(monkeypatch):
    """`123_[0-2%4]` is a pending array (with its parallelism limit); its tasks take that
    state, unless a line named the task itself first."""
    from ssl_dynamics.cluster import records

    monkeypatch.setattr(records, "_ask", lambda cmd: "123_0|RUNNING\n123_[0-2%4]|PENDING\n124_[0-3,7]|PENDING\n")
    known = records._sacct(["123_0", "123_1"])
    assert known["123_0"] == "RUNNING" and known["123_1"] == known["123_2"] == "PENDING"
    assert sorted(k for k in known if k.startswith("124_")) == [f"124_{t}" for t in (0, 1, 2, 3, 7)]


def test_active_work_reads_only_records_of_its_kind(tmp_path, monkeypatch):
    from ssl_dynamics.cluster import records

    jobs = tmp_path / "jobs"
    folder = jobs / "20260101-000000-rt"
    folder.mkdir(parents=True)
    records.write_record(folder, {"kind": "rt", "folder": str(folder), "executor": "slurm",
                                  "jobs": [{"job_id": "55_0", "work": {"shard": "0/1"}}]})
    monkeypatch.setattr(records, "job_states", lambda rec: {"55_0": "RUNNING"})
    assert [jid for jid, _ in records.active_work(jobs, "rt")] == ["55_0"]
    assert records.active_work(jobs, "train") == []


def test_config_values_a_later_step_would_reject_are_refused_now():
    from dataclasses import replace

    from ssl_dynamics.config import override, parse_seeds, preset, setup_from_dict, validate

    smoke = preset("smoke")
    for assignments, message in ((["momentum=1"], "momentum must be below 1"),
                                 (["dataset=foo"], "unknown dataset 'foo'")):
        with pytest.raises(UserError, match=message):
            override(smoke, assignments)
    with pytest.raises(UserError, match="drop_last and random_labels must be true or false"):
        setup_from_dict({**smoke.setups["supervised"].to_dict(), "drop_last": 1})
    with pytest.raises(UserError, match="is named 'x' in its own config"):
        validate(replace(smoke, setups={"simclr": replace(smoke.setups["simclr"], name="x")}))
    with pytest.raises(UserError, match="seeds must be a non-empty list"):
        validate(replace(smoke, seeds=(-1,)))
    for text, message in (("0,2-1", "malformed seed range"), ("0-99999,100000", "names more than 100000"),
                          ("0-100000", "has 100001 seeds")):
        with pytest.raises(UserError, match=message):
            parse_seeds(text)
    assert parse_seeds("0-99999")[-1] == 99999


def test_tables_keep_their_column_order_and_write_infinity_as_text(tmp_path):
    import json

    from ssl_dynamics.inspect.outputs import Outputs

    out = Outputs(tmp_path, echo=lambda *_: None)
    path = out.write_table("t", [{"b": 1, "a": float("inf")}, {"b": float("nan"), "a": -float("inf")}])
    assert path.read_text().splitlines() == ["b,a", "1,inf", ",-inf"]
    table = json.loads((tmp_path / "tables" / "t.json").read_text())
    assert table["columns"] == ["b", "a"] and table["rows"] == [{"b": 1, "a": "inf"}, {"b": None, "a": "-inf"}]


def test_what_tidy_sweeps_and_what_is_stale(tmp_path):
    from ssl_dynamics.inspect import outputs as outputs_mod

    out = outputs_mod.Outputs(tmp_path, echo=lambda *_: None)
    assert out.sweeps(tmp_path / "analysis.h5") and out.sweeps(tmp_path / "tables" / "x.csv")
    assert not out.sweeps(tmp_path / "bank.h5") and not out.sweeps(tmp_path / "rt.zarr")
    # dynamics' latest session is A (it wrote aligned_epochs, its first output): B's figure is
    # left from another run of it; a figure with no record of its own is not called stale
    (tmp_path / outputs_mod.RECORD_NAME).write_text(
        '{"tables/aligned_epochs": "A", "figures/fig4_2_aligned": "B"}')
    assert outputs_mod.stale_outputs(tmp_path, ["fig4_1_sorted_rt", "fig4_2_aligned", "aligned_epochs"]) == \
        {"figures/fig4_2_aligned"}


# ------------------------------------------------------------------ per-class dynamics, heterogeneity


def _setup_rt(name, correct, epochs, labels, probe_indices=None):
    """A SetupRt from correct [S, E, M, K]."""
    from ssl_dynamics.inspect.rtdata import SetupRt

    s, e, _, k = correct.shape
    labels = np.asarray(labels)
    return SetupRt(setup=name, correct=correct.astype(np.uint8), p_true=correct.astype(np.float32),
                   valid=np.ones((s, e), bool), seeds=np.arange(s), epochs=np.asarray(epochs),
                   labels=labels, targets=labels,
                   probe_indices=np.arange(k) if probe_indices is None else np.asarray(probe_indices))


def test_class_rows_hand_worked(tmp_path):
    """One seed, one view, 5 images of class a and 5 of b, none of c. Class a: 5, 4, 2 of 5
    correct at epochs 0, 1, 2 (means 1.0, 0.8, 0.4): it reaches 0.5 at epoch 1 (epoch 0 does
    not count) and ends at 0.4, below its maximum; class b: 0, 1, 3 of 5 (0.6 at epoch 2)."""
    from ssl_dynamics.inspect.classes import run_classes
    from ssl_dynamics.inspect.outputs import Outputs

    correct = np.zeros((1, 3, 1, 10))
    for e, (a, b) in enumerate(((5, 0), (4, 1), (2, 3))):
        correct[0, e, 0, :a] = 1
        correct[0, e, 0, 5:5 + b] = 1
    data = {"s": _setup_rt("s", correct, [0, 1, 2], [0] * 5 + [1] * 5)}
    out = Outputs(tmp_path, echo=lambda *_: None)
    res = run_classes(data, out, ["a", "b", "c"])
    rows = {r["class"]: r for r in res["tables"]["class_rt"]}
    assert (rows["a"]["epoch_reaching_0.5"], rows["a"]["mean_rt_last"], rows["a"]["n_images"]) == (1, 0.4, 5)
    assert (rows["b"]["epoch_reaching_0.5"], rows["b"]["mean_rt_last"]) == (2, pytest.approx(0.6))
    assert rows["c"]["n_images"] == 0 and rows["c"]["epoch_reaching_0.5"] is None
    assert "s: no probe images of class c" in res["notes"]
    assert not any("class names" in n for n in run_classes(data, out, ["a", "b"])["notes"])
    assert "only 1 class names for 2 classes; the rest are numbered" in run_classes(data, out, ["a"])["notes"]
    for labels, message in (([-1] + [0] * 9, "negative class label"), ([], "no classes")):
        bad = correct[..., :len(labels)]
        with pytest.raises(UserError, match=message):
            run_classes({"s": _setup_rt("s", bad, [0, 1, 2], labels)}, out, None)


def test_heterogeneity_rows_carry_the_reference_setups_epoch_numbers(tmp_path):
    """Setups on other epoch grids: each row's ref_epoch is the reference's epoch number,
    not the number of the same index in another setup; other probe images are refused."""
    from ssl_dynamics.inspect.heterogeneity import run_heterogeneity
    from ssl_dynamics.inspect.outputs import Outputs

    rng = np.random.default_rng(0)
    hard = rng.random(60)
    grids = {"simclr": [0, 1, 2, 4], "supervised": [0, 2, 4, 8]}
    data = {name: _setup_rt(name, (rng.random((6, 4, 1, 60)) < np.clip(
        np.linspace(0.1, 0.9, 4)[None, :, None, None] + 0.3 * (hard - 0.5), 0, 1)), epochs, hard > 2)
            for name, epochs in grids.items()}
    out = Outputs(tmp_path, echo=lambda *_: None)
    res = run_heterogeneity(data, out, "simclr", (1, 4))
    assert {r["ref_epoch"] for r in res["tables"]["heterogeneity"]} == {1, 4}
    assert {r["ref_epoch"] for r in res["tables"]["hardness_agreement"]} <= {1, 4}
    moved = dict(data, supervised=_setup_rt("supervised", data["supervised"].correct, grids["supervised"],
                                            data["supervised"].labels, np.arange(60) + 1))
    with pytest.raises(UserError, match="supervised was evaluated on other probe images"):
        run_heterogeneity(moved, out, "simclr", (1, 4))


# ------------------------------------------------------------------ work folders


def test_a_work_folder_reads_its_zarr_store_first_and_knows_its_runs_random_labels(tiny_rt, tmp_path):
    """With rt.zarr and rt.h5 both in the work folder, the Zarr store is the one read and
    filled; a work.json whose run had another label permutation is another run's folder."""
    import json

    from _util import private_copy
    from ssl_dynamics.inspect.workspace import IDENTITY_FILE, open_workspace

    run = private_copy(tiny_rt, tmp_path)
    ws = open_workspace(run, echo=lambda *_: None)
    (ws.dir / "rt.h5").write_bytes(b"")  # (an archive beside it)
    assert ws.default_store().name == "rt.zarr" and ws.store_for_reading().name == "rt.zarr"
    work = tmp_path / "w"
    open_workspace(run, work, echo=lambda *_: None).bind()
    doc = json.loads((work / IDENTITY_FILE).read_text())
    assert len(doc["run"]["random_labels_sha256"]) == 64  # recorded: it is part of the run's identity
    doc["run"]["random_labels_sha256"] = "0" * 64
    (work / IDENTITY_FILE).write_text(json.dumps(doc))
    with pytest.raises(UserError, match="holds the phase-two outputs of another run"):
        open_workspace(run, work, echo=lambda *_: None)
