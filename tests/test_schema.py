"""random_labels trains on ToTensor alone (augment "none", schema 2), and runs stored under
schema 1, whose "none" normalized, keep their meaning ("normalize")."""
import json
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ssl_dynamics import augment as aug
from ssl_dynamics.config import (SCHEMA_VERSION, check_schema, override, preset, setup_from_dict,
                                 thesis_setups, upgrade_setup_dict)
from ssl_dynamics.errors import UserError
from ssl_dynamics.inspect.features import eval_transform
from ssl_dynamics.inspect.rt_plan import check_meta
from ssl_dynamics.objectives import objective_for

IMAGES = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def test_random_labels_sees_totensor_only():
    sc = thesis_setups()["random_labels"]
    assert sc.augment == "none"
    views = objective_for(sc).views(IMAGES, aug.make_generator(0, 1, 0, "views"))
    assert torch.equal(views, IMAGES.float() / 255)  # ToTensor: k / 255, nothing else
    assert torch.equal(eval_transform("none")(IMAGES), IMAGES.float() / 255)


def test_normalize_is_schema_1_none():
    mean = torch.tensor(aug.CIFAR_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(aug.CIFAR_STD).view(1, 3, 1, 1)
    p = aug.sample_params("normalize", len(IMAGES), aug.make_generator(0), 32)
    got = aug.apply_params("normalize", IMAGES, p)
    assert torch.allclose(got, (IMAGES.float() / 255 - mean) / std, atol=1e-6)
    assert torch.equal(eval_transform("normalize")(IMAGES), got)
    # the other setups are unchanged: supervised still normalizes, SimCLR never did
    assert float(aug.apply_params("supervised", IMAGES, aug.sample_params("supervised", 6, aug.make_generator(1), 32)).min()) < 0


@pytest.mark.parametrize("schema, stored, now", [(1, "none", "normalize"), ("1", "none", "normalize"),
                                                 (2, "none", "none"), (1, "supervised", "supervised"),
                                                 (None, "none", "none")])
def test_upgrade_setup_dict(schema, stored, now):
    assert upgrade_setup_dict({"augment": stored}, schema)["augment"] == now


def test_setup_json_of_schema_1_reads_as_normalize():
    d = {"schema_version": 1, **thesis_setups()["random_labels"].to_dict()}
    assert setup_from_dict(d).augment == "normalize"
    d["schema_version"] = SCHEMA_VERSION
    assert setup_from_dict(d).augment == "none"
    missing = thesis_setups()["random_labels"].to_dict()  # no schema_version at all: schema 1
    assert setup_from_dict(missing).augment == "normalize"


def test_checkpoint_of_a_schema_1_run_matches_its_upgraded_config(tmp_path):
    old = {**thesis_setups()["random_labels"].to_dict(), "augment": "none"}
    cfg = preset("thesis")
    cfg.setups["random_labels"] = setup_from_dict({"schema_version": 1, **old})
    run = SimpleNamespace(cfg=cfg, meta={"schema_version": 1}, dataset_sha256="d",
                          paths=SimpleNamespace(setup_json=lambda s: tmp_path / f"{s}.json"))
    meta = {"dataset_sha256": "d", "setup_config": old, "backbone": cfg.backbone, "width": cfg.width}
    check_meta(run, tmp_path / "epoch-0001.safetensors", meta, "random_labels")  # no refusal
    run.meta = {"schema_version": 2}  # the same checkpoint in a schema-2 run is another config
    with pytest.raises(UserError, match="different config"):
        check_meta(run, tmp_path / "epoch-0001.safetensors", meta, "random_labels")


def test_schema_1_run_continues_but_refuses_todays_random_labels(tmp_path):
    """A schema-1 run directory: its supervised setup continues; asking it for today's
    random_labels (ToTensor alone) after it trained the normalized one is refused."""
    from ssl_dynamics.data import load_dataset
    from ssl_dynamics.train.prepare import check_run, prepare_run

    cfg = override(preset("smoke"), ["epochs=1"])
    ds = load_dataset(cfg.dataset, cfg.data_root, cfg.train_subset, cfg.subset_seed, download=False)

    paths = prepare_run(tmp_path / "run", cfg, ["supervised", "random_labels"], ds, echo=lambda *_: None)
    for name in ("supervised", "random_labels"):
        d = {"schema_version": 1, **cfg.setups[name].to_dict()}
        paths.setup_json(name).parent.mkdir(parents=True, exist_ok=True)
        paths.setup_json(name).write_text(json.dumps(d))
    assert check_run(paths, cfg, ["supervised"], ds) == []  # same config: nothing to replace
    # random_labels, once trained under schema 1, is another config today
    seed_dir = paths.seed_dir("random_labels", 0)
    seed_dir.mkdir(parents=True)
    paths.manifest("random_labels", 0).write_text(json.dumps({"checkpoints": {"0": "x", "1": "y"}}))
    with pytest.raises(UserError, match="augment"):
        check_run(paths, cfg, ["random_labels"], ds)


def test_bank_groups_of_schema_1_read_as_normalize(tmp_path):
    """A schema-1 bank's "none" group holds normalized views: it serves today's "normalize"."""
    import h5py

    from ssl_dynamics.inspect.bank import _group_key, _schema

    with h5py.File(tmp_path / "bank.h5", "w") as f:
        for name in ("old", "new"):
            g = f.create_group(name)
            g.attrs["kind"] = "none"
            g.create_dataset("views", shape=(1, 4, 1, 3, 2, 2), dtype="f4")
        f.attrs["schema_version"] = 1
        assert _schema(f) == 1
        assert _group_key("old", f["old"], _schema(f)) == ("normalize", 1)
        assert _group_key("new", f["new"], 2) == ("none", 1)
        assert _group_key("supervised", f["old"], 1)[0] == "normalize"  # the attribute wins over the name


@pytest.mark.parametrize("stored, read", [(None, 1), (1, 1), (2, 2), ("2", 2), (np.int64(2), 2)])
def test_check_schema_reads_what_the_toolkit_stores(stored, read):
    """run.json and setup.json store an int, checkpoint metadata its digits, HDF5 a numpy int."""
    assert check_schema(stored, "x") == read and type(check_schema(stored, "x")) is int


@pytest.mark.parametrize("stored, says", [(SCHEMA_VERSION + 1, "by a newer version of the toolkit"),
                                          (str(SCHEMA_VERSION + 1), "by a newer version of the toolkit"),
                                          ("x", "'x' is not a positive integer"), (0, "0 is not"),
                                          (True, "True is not"), (2.0, "2.0 is not"), ("²", "'²' is not"),
                                          ("-1", "'-1' is not")])
def test_check_schema_refuses_a_newer_or_a_malformed_schema(stored, says):
    with pytest.raises(UserError, match=re.escape(says)):
        check_schema(stored, "bank b.h5")


NEWER = SCHEMA_VERSION + 1


@pytest.fixture
def evaluated(tiny_rt, tmp_path):
    from _util import private_copy

    return private_copy(tiny_rt, tmp_path)


def _cli(args, monkeypatch, capsys) -> tuple[int, str]:
    from _util import main_result
    from ssl_dynamics.inspect import cli as inspect_cli

    code, out, err = main_result(inspect_cli.main, args, monkeypatch, capsys, "inspect")
    return code, out + err


def test_a_bank_store_or_archive_of_a_newer_toolkit_is_refused_not_misread(evaluated, monkeypatch, capsys):
    """A newer layout may mean other things by the same arrays: reading it is refused with
    one line saying to upgrade, and nothing is written into it."""
    import h5py
    import zarr

    from ssl_dynamics.inspect.rtdata import export_h5
    from ssl_dynamics.inspect.store import RtStore

    inspect = evaluated / "inspect"
    export_h5(RtStore(inspect / "rt.zarr", writable=False), evaluated / "rt.h5")
    with h5py.File(evaluated / "rt.h5", "a") as f:
        f.attrs["schema_version"] = NEWER
    code, text = _cli(["dynamics", evaluated, "--store", evaluated / "rt.h5"], monkeypatch, capsys)
    assert code == 2 and f"r_t archive {evaluated / 'rt.h5'} was written under schema {NEWER}" in text, text
    assert "upgrade ssl_dynamics" in text and "Traceback" not in text
    with h5py.File(evaluated / "rt.h5", "a") as f:  # a setup a newer toolkit added to an older archive
        f.attrs["schema_version"] = SCHEMA_VERSION
        f["simclr"].attrs["schema_version"] = NEWER
    code, text = _cli(["dynamics", evaluated, "--store", evaluated / "rt.h5"], monkeypatch, capsys)
    assert code == 2 and f"r_t archive {evaluated / 'rt.h5'}/simclr was written under schema {NEWER}" in text
    with h5py.File(evaluated / "rt.h5", "a") as f:
        f["simclr"].attrs["schema_version"] = np.int64(0)  # the message shows 0, not numpy's repr
    code, text = _cli(["dynamics", evaluated, "--store", evaluated / "rt.h5"], monkeypatch, capsys)
    assert code == 2 and "simclr: schema_version 0 is not a positive integer" in text, text

    zarr.open_group(str(inspect / "rt.zarr"), mode="a").attrs["schema_version"] = NEWER
    before = sorted(p.name for p in (inspect / "rt.zarr").rglob("*"))
    for args in (["classes", evaluated], ["rt", evaluated, "--setup", "simclr"]):
        code, text = _cli(args, monkeypatch, capsys)
        assert code == 2 and f"r_t store {inspect / 'rt.zarr'} was written under schema {NEWER}" in text, text
    assert sorted(p.name for p in (inspect / "rt.zarr").rglob("*")) == before
    zarr.open_group(str(inspect / "rt.zarr"), mode="a").attrs["schema_version"] = SCHEMA_VERSION
    zarr.open_group(str(inspect / "rt.zarr" / "simclr"), mode="a").attrs["schema_version"] = NEWER
    for args in (["classes", evaluated], ["rt", evaluated, "--setup", "simclr"]):
        code, text = _cli(args, monkeypatch, capsys)
        assert code == 2 and f"r_t store {inspect / 'rt.zarr'}/simclr was written under schema {NEWER}" in text
    zarr.open_group(str(inspect / "rt.zarr" / "simclr"), mode="a").attrs["schema_version"] = SCHEMA_VERSION
    assert _cli(["classes", evaluated], monkeypatch, capsys)[0] == 0

    with h5py.File(inspect / "bank.h5", "a") as f:
        f.attrs["schema_version"] = NEWER
    for args in (["rt", evaluated, "--store", evaluated / "other.zarr"], ["examples", evaluated]):
        code, text = _cli(args, monkeypatch, capsys)
        assert code == 2 and f"bank {inspect / 'bank.h5'} was written under schema {NEWER}" in text, text
    assert not (evaluated / "other.zarr").exists()


def test_a_checkpoint_of_a_newer_toolkit_is_refused_at_its_header(tiny_run, tmp_path):
    from ssl_dynamics import artifacts as art
    from ssl_dynamics.config import canonical_json

    path = art.RunPaths(tiny_run).checkpoint("supervised", 0, 1)
    state, meta = art.load_checkpoint(path)
    for version, says in ((str(NEWER), f"written under schema {NEWER}, by a newer version"),
                          ("two", "schema_version 'two' is not a positive integer")):
        copy = tmp_path / f"{version}.safetensors"
        copy.write_bytes(art.safetensors_bytes(state, {"format": art.CHECKPOINT_FORMAT, "schema_version": version,
                                                      "meta": canonical_json(meta)}))
        for read in (art.header_meta, art.load_checkpoint):
            with pytest.raises(UserError, match=says):
                read(copy)
    assert art.header_meta(path)[1] == SCHEMA_VERSION
