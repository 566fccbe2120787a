"""More details that break silently when they are wrong: the disk estimate (Adam's moments,
a bf16 run's resume state, the bank's views), a bank asked for more probes than the training
set has, runs made under older rules (an oversized train_subset, a relative data location),
what a manifest records of an extension and of a redone epoch, settings replaced by another
process, refusals that name the right cause, --shard bounds, and a work store made meanwhile.
Each test fails when its detail is changed."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from ssl_dynamics.errors import UserError

# ------------------------------------------------------------------------------ bank


def test_a_bank_asked_for_more_probes_than_images_records_the_capped_count(tmp_path):
    """--probes 16 on 10 training images builds a bank of all 10 and records n_probe 10, so
    that the same --probes 16 later is accepted (16 caps to 10 again), and --probes 8 is not."""
    from ssl_dynamics.inspect.bank import BankSpec, build_bank, check_existing, read_spec

    x = torch.randint(0, 256, (10, 3, 8, 8), dtype=torch.uint8)
    y = torch.arange(10) % 3
    path = tmp_path / "bank.h5"
    bank = build_bank(path, x, y, [("none", 1)], "sha", BankSpec(n_probe=16, n_replays=2, seed=0, simclr_batch=4))
    assert bank.spec.n_probe == 10 and sorted(bank.probe_indices) == list(range(10))
    spec, sha, keys = read_spec(path)
    assert spec == BankSpec(10, 2, 0, 4) and sha == "sha" and keys == [("none", 1)]
    asked = {"n_probe": 16, "n_replays": 2, "seed": 0, "simclr_batch": 4}
    assert check_existing(path, asked, [("none", 1)], "sha", 10).n_probe == 10
    with pytest.raises(UserError, match="--probes 8, the bank has 10"):
        check_existing(path, {**asked, "n_probe": 8}, [("none", 1)], "sha", 10)

# ------------------------------------------------------------------------------ prepare


def test_a_run_made_with_a_train_subset_larger_than_its_dataset_is_still_accepted(tmp_path):
    """Runs made before the check record e.g. train_subset 5000 on 256 images (they trained
    on all 256): rerunning them with those settings goes on; a new run is refused."""
    from ssl_dynamics import artifacts as art
    from ssl_dynamics.config import preset
    from ssl_dynamics.data import load_dataset
    from ssl_dynamics.train.prepare import check_run, prepare_run

    ds = load_dataset("synthetic")  # 256 training images
    cfg = replace(preset("smoke"), seeds=(0,))  # train_subset 0: all of them
    paths = prepare_run(tmp_path / "run", cfg, list(cfg.setups), ds, lambda *_: None)
    run_json = art.read_json(paths.run_json)
    run_json["config"]["train_subset"] = 5000  # as an older version wrote it
    art.write_json_atomic(paths.run_json, run_json)
    old = replace(cfg, train_subset=5000)
    assert len(load_dataset("synthetic", train_subset=5000).train_y) == 256
    assert check_run(paths, old, list(old.setups), ds) == []
    with pytest.raises(UserError, match="train_subset 5000 is larger than the dataset's 256"):
        check_run(art.RunPaths(tmp_path / "new"), old, list(old.setups), ds)


@pytest.mark.parametrize("setup", ["supervised", "simclr"])  # SGD and Adam
def test_the_disk_estimate_of_resume_pt_bounds_the_files_training_wrote(setup, tiny_run, tmp_path):
    """resume.pt holds the optimizer state (SGD one momentum tensor per parameter, Adam two
    and a step) and, beside rounded (bf16) checkpoints, the exact fp32 weights: the estimate
    is at least the file `train run` wrote (fp32), and the file of a bf16 run (the same
    state plus the exact weights, as `loop.commit_epoch` adds them), and not far above."""
    from ssl_dynamics import artifacts as art
    from ssl_dynamics.train.prepare import METADATA_SLACK, checkpoint_bytes

    run = art.Run.open(tiny_run)
    sc = run.cfg.setups[setup]
    path = run.paths.resume(setup, 0)
    written = path.stat().st_size
    assert written <= checkpoint_bytes(run.cfg, sc)[1] <= written + 3 * METADATA_SLACK
    state = art.load_resume(path)
    assert state is not None and "model" not in state  # fp32 checkpoints: the weights are exact
    state["model"] = art.load_checkpoint(run.paths.checkpoint(setup, 0, 2))[0]  # fp32 = exact
    art.save_resume(tmp_path / "resume.pt", state)
    written = (tmp_path / "resume.pt").stat().st_size
    assert written <= checkpoint_bytes(run.cfg, sc, "bf16")[1] <= written + 3 * METADATA_SLACK


def test_settings_replaced_before_training_keep_each_seeds_lock_file(tmp_path):
    """Replacing untrained settings empties each seed folder but keeps its lock file: a lock
    taken on a deleted file would no longer exclude a process that opens the path anew."""
    from ssl_dynamics import artifacts as art
    from ssl_dynamics.train.prepare import _forget_untrained

    paths = art.RunPaths(tmp_path / "run")
    for seed in (0, 1):
        paths.seed_dir("supervised", seed).mkdir(parents=True)
        paths.seed_lock("supervised", seed).touch()
        paths.checkpoint("supervised", seed, 0).write_bytes(b"initial weights")
        (paths.seed_dir("supervised", seed) / "partial").mkdir()
    paths.setup_json("supervised").write_text("{}")
    said = []
    _forget_untrained(paths, ["supervised"], said.append)
    assert said == ["supervised: nothing was trained with its old settings; starting it with the new ones"]
    for seed in (0, 1):
        assert [p.name for p in paths.seed_dir("supervised", seed).iterdir()] == [".train.lock"]
    assert not paths.setup_json("supervised").exists()

# ------------------------------------------------------------------------------ manifests


def test_only_an_epoch_beyond_the_planned_ones_is_recorded_as_an_extension():
    """Epoch 2 of 2 completes a plain run (no extended_to: `train status` would print
    "extended to 2"); epoch 3 extends it; epoch 2 redone afterwards drops the extension."""
    from ssl_dynamics.config import preset
    from ssl_dynamics.train.loop import record_epoch

    sc = replace(preset("smoke").setups["supervised"], epochs=2)
    manifest = {"checkpoints": {"0": "a", "1": "b"}}
    record_epoch(manifest, sc, 2, "c")
    assert manifest["complete"] is True and "extended_to" not in manifest
    record_epoch(manifest, sc, 3, "d")
    assert manifest["extended_to"] == 3 and list(manifest["checkpoints"]) == ["0", "1", "2", "3"]
    record_epoch(manifest, sc, 2, "e")
    assert "extended_to" not in manifest and manifest["checkpoints"] == {"0": "a", "1": "b", "2": "e"}


def test_only_an_extension_beyond_the_planned_epochs_is_aimed_at():
    """`train run` trains to the planned epochs (until == epochs): no extend_target is
    recorded; `train extend --to 5` records 5, and a later --to 4 keeps the farther 5."""
    from ssl_dynamics.config import preset
    from ssl_dynamics.train.loop import SeedState, aim

    sc = replace(preset("smoke").setups["supervised"], epochs=2)
    state = SeedState(sc, 0, torch.nn.Linear(1, 1), None, {}, 0)
    aim(state, None)
    aim(state, 2)
    assert state.manifest == {}
    aim(state, 5)
    aim(state, 4)
    assert state.manifest == {"extend_target": 5}

# ------------------------------------------------------------------------------ grid checks


def test_head_dim_below_the_classes_is_refused_only_for_classifying_setups(tmp_path):
    """A classifier needs one output per class; SimCLR's head is a projection of any size:
    simclr.head_dim=4 on the 10 synthetic classes trains, supervised.head_dim=4 is refused."""
    from ssl_dynamics.config import override, preset
    from ssl_dynamics.train.grid import check_grid
    from ssl_dynamics.train.loop import TrainOptions

    cfg = override(preset("smoke"), ["train_subset=48", "simclr.head_dim=4", "supervised.head_dim=4"])
    said = []
    dataset, jobs = check_grid(tmp_path / "a", cfg, ["simclr"], TrainOptions(device="cpu"), False, False, said.append)
    assert dataset.n_classes == 10 and [j.setup for j in jobs] == ["simclr"] * len(cfg.seeds)
    with pytest.raises(UserError, match=r"setup supervised: head_dim 4 is smaller than the dataset's 10 classes"):
        check_grid(tmp_path / "b", cfg, ["supervised"], TrainOptions(device="cpu"), False, False, said.append)

# ------------------------------------------------------------------------------ inspect rt


def test_copy_state_refuses_a_state_with_other_keys():
    """A checkpoint state with an extra or a missing key is another network: refused as
    such (a ValueError), never loaded in part."""
    from ssl_dynamics.inspect.rt import copy_state

    net = torch.nn.Linear(2, 2)
    state = {"weight": torch.ones(2, 2), "bias": torch.full((2,), 3.0)}
    copy_state(net, state)
    assert torch.equal(net.weight, torch.ones(2, 2)) and torch.equal(net.bias, torch.full((2,), 3.0))
    with pytest.raises(ValueError, match="keys differ"):
        copy_state(net, {**state, "extra": torch.zeros(1)})
    with pytest.raises(ValueError, match="keys differ"):
        copy_state(net, {"weight": torch.zeros(2, 2)})
    assert torch.equal(net.bias, torch.full((2,), 3.0))


def test_a_worker_refuses_a_prepared_run_whose_settings_changed_since(tmp_path):
    """A device worker or cluster job opens the run its command prepared. When run.json now
    holds other settings (nothing trained yet, so `check_run` would let them be replaced),
    the worker is refused: it must not train a run prepared for another config."""
    from ssl_dynamics.config import override, preset
    from ssl_dynamics.data import load_dataset
    from ssl_dynamics.train.grid import open_prepared
    from ssl_dynamics.train.prepare import prepare_run

    cfg = replace(override(preset("smoke"), ["train_subset=48"]), seeds=(0,))
    prepare_run(tmp_path / "run", cfg, list(cfg.setups), load_dataset("synthetic", train_subset=48), lambda *_: None)
    paths, dataset = open_prepared(tmp_path / "run", cfg, list(cfg.setups))
    assert len(dataset.train_y) == 48 and paths.run_json.exists()
    other = replace(cfg, label_seed=cfg.label_seed + 1)
    with pytest.raises(UserError, match="was changed since this work was planned"):
        open_prepared(tmp_path / "run", other, list(other.setups))


def test_a_setup_is_not_trained_after_another_process_replaced_the_runs_settings(tmp_path):
    """check_unchanged compares run.json too: another `train run` that replaced the untrained
    run's label_seed leaves every setup.json as it was, yet this process's config is stale."""
    from ssl_dynamics.data import load_dataset
    from ssl_dynamics.train.prepare import check_unchanged, prepare_run

    quiet = lambda *_: None  # noqa: E731
    ds = load_dataset("synthetic", train_subset=48)
    cfg = replace(override_smoke(), seeds=(0,))
    paths = prepare_run(tmp_path / "run", cfg, list(cfg.setups), ds, quiet)
    check_unchanged(paths, cfg, "supervised")
    other = replace(cfg, label_seed=cfg.label_seed + 1)
    prepare_run(tmp_path / "run", other, list(other.setups), ds, quiet)  # nothing trained: replaced
    check_unchanged(paths, other, "supervised")
    with pytest.raises(UserError, match="the settings of supervised were replaced by another process"):
        check_unchanged(paths, cfg, "supervised")


def override_smoke():
    from ssl_dynamics.config import override, preset

    return override(preset("smoke"), ["train_subset=48"])


def test_a_shard_index_must_be_below_the_shard_count():
    """--shard i/n numbers shards 0..n-1: 3/3 would be a fourth shard of three (refused)."""
    from ssl_dynamics.inspect.rt import parse_shard

    assert parse_shard(None) == (0, 1)
    assert parse_shard("0/3") == (0, 3) and parse_shard("2/3") == (2, 3)
    for bad in ("3/3", "1/1", "-1/3", "0/0"):
        with pytest.raises(UserError, match="need 0 <= i < n"):
            parse_shard(bad)


def test_a_work_store_made_meanwhile_is_read_not_the_archive_it_started_from(tiny_rt, tmp_path):
    """A new --work folder's rt.zarr starts from the run's store (archive_store); once that
    work store exists (made by another process meanwhile) it is the one to plan from: the
    archive may lack, or hold other, evaluations than it."""
    from _util import private_copy, quiet
    from ssl_dynamics.inspect import bank as bank_mod
    from ssl_dynamics.inspect.rt import archive_store
    from ssl_dynamics.inspect.rtdata import seed_work_store, work_path
    from ssl_dynamics.inspect.workspace import open_workspace

    run = private_copy(tiny_rt, tmp_path)
    own = open_workspace(run, echo=quiet)
    ws = open_workspace(run, tmp_path / "work", echo=quiet)
    src = archive_store(ws, ws.store, own.bank)
    assert src is not None and src.resolve() == own.store.resolve()
    seed_work_store(src, bank_mod.load_bank(own.bank).fingerprint, work_path(ws.store))
    assert archive_store(ws, ws.store, own.bank) is None


def test_extend_announces_the_setups_dtype_for_a_seed_not_begun(tiny_run, tmp_path, monkeypatch):
    """A seed without a manifest yet takes the setup's recorded checkpoint dtype when it is
    opened (`loop.open_seed`); the announcement says so instead of naming fp32 for it."""
    import shutil
    import sys

    from _util import private_copy
    from ssl_dynamics import artifacts as art
    from ssl_dynamics.train import cli as train_cli
    from ssl_dynamics.train import extend

    paths = art.RunPaths(private_copy(tiny_run, tmp_path))
    m = art.read_json(paths.manifest("supervised", 0))
    m["trained_with"]["checkpoint_dtype"] = "bf16"
    art.write_json_atomic(paths.manifest("supervised", 0), m)
    shutil.rmtree(paths.seed_dir("supervised", 1))  # seed 1 not begun
    said = []
    monkeypatch.setattr(extend, "extend_grid", lambda *a, announce=None, **k: said.append(announce) or [])
    monkeypatch.setattr(sys, "argv", ["prog", "extend", str(paths.root), "--setup", "supervised", "--to", "3",
                                      "--device", "cpu", "--no-progress"])
    try:
        train_cli.main()
    except SystemExit as e:
        assert e.code in (0, None)
    assert len(said) == 1 and said[0].endswith("each seed keeps its checkpoint dtype: bf16)"), said


def test_the_bank_size_counts_every_view_of_every_replay():
    """float32 views [M, K, V, 3, H, W]: simclr (2 views, M replays) and none (1 view, one
    replay: deterministic). 3x32x32 floats = 12288 bytes a view."""
    from ssl_dynamics.inspect.bank import BankSpec, bank_bytes

    spec = BankSpec(n_probe=10, n_replays=3, seed=0, simclr_batch=5)
    assert bank_bytes(spec, [("simclr", 2)], (3, 32, 32)) == 3 * 10 * 2 * 12288  # 737280
    assert bank_bytes(spec, [("none", 1)], (3, 32, 32)) == 10 * 12288  # 122880
    assert bank_bytes(spec, [("simclr", 2), ("none", 1)], (3, 32, 32)) == 860160


def test_a_seed_another_worker_finished_meanwhile_is_not_waited_for(tmp_path, monkeypatch):
    """A seed locked elsewhere at first is tried again without waiting; when its lock is free
    by then, this worker takes it and says nothing of another worker (nor waits blocking)."""
    from ssl_dynamics.config import override, preset
    from ssl_dynamics.train import grid
    from ssl_dynamics.train.loop import TrainOptions

    calls = []

    def locked(self, queue, size, blocking):
        calls.append(blocking)
        jobs = queue[:size]
        del queue[:size]
        return jobs if len(calls) == 1 else []  # held elsewhere first, free on the retry

    monkeypatch.setattr(grid._Runner, "locked", locked)
    cfg = replace(override(preset("smoke"), ["epochs=1", "train_subset=48"]), seeds=(0,))
    said = []
    grid.train_grid(tmp_path / "run", cfg, ["supervised"], TrainOptions(device="cpu"), progress=False,
                    echo=said.append)
    assert calls == [False, False]
    assert not any("another worker" in s for s in said), said


def test_a_trained_run_given_another_kind_of_dataset_is_told_it_was_made_from_other_data(tiny_run, tmp_path):
    """Both the dataset (synthetic -> imagefolder) and its contents differ: that is still
    other data (give the run's own), not a different config."""
    from PIL import Image

    from ssl_dynamics import artifacts as art
    from ssl_dynamics.data import load_dataset
    from ssl_dynamics.train.prepare import check_run

    for split in ("train", "test"):
        for c in range(10):
            (tmp_path / "images" / split / f"c{c}").mkdir(parents=True)
            for i in range(5):  # 50 training images: the run's train_subset 48 is a subset
                Image.fromarray(np.full((32, 32, 3), c * 20 + i, np.uint8)).save(
                    tmp_path / "images" / split / f"c{c}" / f"{i}.png")
    cfg, _ = art.load_run_config(tiny_run)
    other = replace(cfg, dataset=f"imagefolder:{tmp_path / 'images'}")
    ds = load_dataset(other.dataset, train_subset=other.train_subset, subset_seed=other.subset_seed)
    with pytest.raises(UserError, match=r"was made from other data \(dataset"):
        check_run(art.RunPaths(tiny_run), other, list(other.setups), ds)


def test_the_note_on_the_rising_learning_rate_starts_past_the_cosine_period(tmp_path):
    """The reference cosine is 0 at its period and rises after it: extending to exactly the
    period gets no note, one epoch past it does (both refused afterwards for seed 99,
    before anything is trained)."""
    from ssl_dynamics.config import override, preset
    from ssl_dynamics.data import load_dataset
    from ssl_dynamics.train.extend import extend_grid
    from ssl_dynamics.train.loop import TrainOptions
    from ssl_dynamics.train.prepare import prepare_run

    cfg = replace(override(preset("smoke"), ["train_subset=48", "random_labels.cosine_period_epochs=4"]), seeds=(0,))
    prepare_run(tmp_path / "run", cfg, list(cfg.setups), load_dataset("synthetic", train_subset=48), lambda *_: None)
    for until, notes in ((4, 0), (5, 1)):
        said = []
        with pytest.raises(UserError, match=r"seeds \[99\] are not in"):
            extend_grid(tmp_path / "run", ["random_labels"], until, TrainOptions(device="cpu"), seeds=(99,),
                        echo=said.append, progress=False)
        assert sum("rises again after it" in s for s in said) == notes, (until, said)


def test_a_recorded_relative_data_location_is_kept_only_where_it_names_the_same_place(tmp_path, monkeypatch):
    """run.json keeps a relative data_root as recorded when the rerun's absolute path is the
    same folder; a recorded path naming another folder is not kept in place of the new one."""
    import os

    from ssl_dynamics.train.prepare import _same_places_kept

    monkeypatch.chdir(tmp_path)
    here = os.path.normpath(tmp_path / "data")
    config = {"data_root": here, "dataset": "synthetic", "epochs": 2}
    assert _same_places_kept({"data_root": "data", "dataset": "synthetic"}, config) == \
        {"data_root": "data", "dataset": "synthetic", "epochs": 2}
    assert _same_places_kept({"data_root": "./sub/../data"}, config)["data_root"] == "./sub/../data"
    assert _same_places_kept({"data_root": "elsewhere", "dataset": "synthetic"}, config) == config
    assert _same_places_kept(None, config) == config


def test_resuming_enters_a_redone_epochs_new_checkpoint_in_the_manifest(tiny_run, tmp_path):
    """Killed after resume.pt but before the manifest while redoing the manifest's last epoch:
    resume.pt names the new checkpoint's sha256, the manifest the old one. Opening the seed
    enters the new sha256 (else the checkpoint would later read as corrupt)."""
    from _util import private_copy
    from ssl_dynamics import artifacts as art
    from ssl_dynamics.train.loop import TrainOptions, open_seed

    paths = art.RunPaths(private_copy(tiny_run, tmp_path))
    cfg, _ = art.load_run_config(paths.root)
    m = art.read_json(paths.manifest("supervised", 0))
    real = m["checkpoints"]["2"]
    assert real == art.sha256_file(paths.checkpoint("supervised", 0, 2))
    m["checkpoints"]["2"] = "0" * 64  # the bytes epoch 2 had before it was redone
    art.write_json_atomic(paths.manifest("supervised", 0), m)
    dataset_sha = art.read_json(paths.run_json)["dataset"]["sha256"]
    state = open_seed(paths, cfg, cfg.setups["supervised"], 0, dataset_sha, TrainOptions(device="cpu"))
    assert state.epoch == 2
    assert art.read_json(paths.manifest("supervised", 0))["checkpoints"]["2"] == real


def test_sgd_without_momentum_keeps_no_optimizer_state_in_its_estimate():
    """SGD with momentum 0 stores no buffer per parameter: its resume.pt is estimated at the
    header slack alone, not at a momentum tensor per parameter."""
    from ssl_dynamics.config import preset
    from ssl_dynamics.train.prepare import METADATA_SLACK, checkpoint_bytes

    cfg = preset("smoke")
    sc = cfg.setups["supervised"]
    assert sc.optimizer == "sgd" and checkpoint_bytes(cfg, sc)[1] > 2 * METADATA_SLACK
    assert checkpoint_bytes(cfg, replace(sc, momentum=0.0))[1] == METADATA_SLACK
