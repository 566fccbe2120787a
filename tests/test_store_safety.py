"""What the r_t store must survive: a kill while its structure is made or grown, damaged
metadata (one line, never a traceback), a store written under schema 1, and a checkpoint
replaced (retrained) after it was evaluated. Kills are simulated by raising, at the exact
point, an exception that nothing in the toolkit catches."""
import json
import shutil
import sys
import warnings

import numpy as np
import pytest
import xarray as xr
import zarr

from _util import private_copy, rt
from ssl_dynamics import artifacts as art
from ssl_dynamics.artifacts.checkpoint import CHECKPOINT_FORMAT
from ssl_dynamics.config import SCHEMA_VERSION, canonical_json
from ssl_dynamics.errors import UserError
from ssl_dynamics.inspect import cli as inspect_cli
from ssl_dynamics.inspect import storedims
from ssl_dynamics.inspect.rtdata import load_rt
from ssl_dynamics.inspect.store import RtStore, always_written, sha_hex

TINY_BANK = dict(n_probe=24, n_replays=3, simclr_batch=8)  # the bank of tiny_rt


class Killed(BaseException):
    """A kill -9 at this point: nothing after it runs, no handler sees it."""


@pytest.fixture
def run(tiny_rt, tmp_path):
    """A private copy of the evaluated tiny run (4 setups x 2 seeds x epochs 0-2)."""
    return private_copy(tiny_rt, tmp_path)


def kill_after_array(monkeypatch, name: str, inside: str = "") -> None:
    """Raise Killed right after the store creates array `name` (in a group path containing
    `inside`): what a kill -9 at that point leaves on disk."""
    real = zarr.Group.create_array

    def create_array(self, key, *args, **kwargs):
        out = real(self, key, *args, **kwargs)
        if key == name and inside in str(self.path):
            raise Killed(key)
        return out

    monkeypatch.setattr(zarr.Group, "create_array", create_array)


def open_all(path) -> None:
    """Every setup of a Zarr store opens in xarray, without a warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for setup in RtStore(path, writable=False).setups():
            with xr.open_zarr(path, group=setup) as ds:
                assert ds.sizes["seed"] == len(ds.attrs["seeds"]) == ds.seed.size


def small_store(path, seeds=(4, 2)) -> RtStore:
    store = RtStore(path)
    store.init_probes(np.array([7, 3, 9, 1]), np.array([0, 1, 0, 1]), "bank")
    store.ensure_setup("supervised", list(seeds), 3, 2, 4, 1, np.array([1, 0, 1, 0]),
                       {"setup_config": {"name": "supervised"}})
    return store


# --------------------------------------------------------------------------- A. kills while making

def test_kill_while_binding_the_bank_is_made_again(run, tmp_path, monkeypatch):
    store = tmp_path / "k.zarr"
    kill_after_array(monkeypatch, "labels")
    with pytest.raises(Killed):
        rt(run, store, setups=["supervised"], epochs=[0])
    monkeypatch.undo()
    assert "bank_fingerprint" not in zarr.open_group(str(store), mode="r").attrs  # cut short
    with pytest.raises(UserError):  # read only, an unbound store holds nothing (one line)
        load_rt(store)
    assert rt(run, store, setups=["supervised"], epochs=[0])["evaluated"] == 2  # not "another bank"
    assert load_rt(store)["supervised"].valid[:, 0].all()
    open_all(store)


def test_kill_while_making_a_setup_is_made_again(run, tmp_path, monkeypatch):
    store = tmp_path / "k.zarr"
    rt(run, store, setups=["random_labels"], epochs=[0])
    kill_after_array(monkeypatch, "p_true", inside="supervised")
    with pytest.raises(Killed):
        rt(run, store, setups=["supervised"], epochs=[0])
    monkeypatch.undo()
    assert (store / "supervised").is_dir()  # the unfinished group is on disk
    assert list(load_rt(store)) == ["random_labels"]  # readers skip it
    with pytest.raises(UserError, match="no r_t arrays for supervised"):
        load_rt(store, ["supervised"])
    assert rt(run, store, setups=["supervised"], epochs=[0])["evaluated"] == 2
    data = load_rt(store)
    assert data["supervised"].valid[:, 0].all() and data["random_labels"].valid[:, 0].all()
    assert not storedims.needs_upgrade(store)
    open_all(store)


def test_a_kill_right_after_a_setup_is_committed_leaves_it_whole(run, tmp_path, monkeypatch):
    """The attributes that commit a setup group are one write of its zarr.json: a kill right
    after the write that commits it (seeds, epochs, shape) finds every other attribute
    written too, so a rerun goes on instead of calling it another configuration."""
    store = tmp_path / "k.zarr"
    real = zarr.Group.update_attributes

    def update_attributes(self, new):
        out = real(self, new)
        if str(self.path) == "supervised" and all(k in self.attrs for k in storedims.COMMIT_ATTRS):
            raise Killed("after the commit")
        return out

    monkeypatch.setattr(zarr.Group, "update_attributes", update_attributes)
    with pytest.raises(Killed):
        rt(run, store, setups=["supervised"], epochs=[0])
    monkeypatch.undo()
    assert rt(run, store, setups=["supervised"], epochs=[0])["evaluated"] == 2
    assert load_rt(store)["supervised"].valid[:, 0].all()


def _drop_attribute(store, setup: str, key: str) -> None:
    meta = store / setup / "zarr.json"
    d = json.loads(meta.read_text())
    del d["attributes"][key]
    meta.write_text(json.dumps(d))
    storedims.consolidate(store)


def test_a_setup_an_older_version_left_without_all_attributes(run, tmp_path):
    """What a kill between the per-key attribute writes of older versions left: made again
    while nothing was evaluated into it; refused in one line (what to do) once it holds data."""
    store = tmp_path / "k.zarr"
    rt(run, store, setups=["supervised"], epochs=[0])
    _drop_attribute(store, "supervised", "simclr_batch")
    with pytest.raises(UserError, match="lacks simclr_batch among its attributes"):
        rt(run, store, setups=["supervised"], epochs=[0, 1])
    g = zarr.open_group(str(store), mode="a", use_consolidated=False)
    g["supervised"]["done"][...] = 0  # as the kill left it: nothing evaluated yet
    _drop_attribute(store, "supervised", "precision")
    assert rt(run, store, setups=["supervised"], epochs=[0])["evaluated"] == 2
    assert "simclr_batch" in zarr.open_group(str(store), mode="r")["supervised"].attrs


def test_a_deleted_chunk_is_not_evaluated_but_evaluated_again(run):
    """Zarr reads a missing chunk as its fill value (every answer wrong, p_true NaN): a
    checkpoint whose chunk files were deleted is not taken for evaluated; `inspect rt`
    evaluates it again, to the same values."""
    store = run / "inspect" / "rt.zarr"
    before = load_rt(store)["supervised"]
    shutil.rmtree(store / "supervised" / "p_true" / "c" / "1" / "2")
    shutil.rmtree(store / "supervised" / "correct" / "c" / "1" / "2", ignore_errors=True)
    damaged = load_rt(store)["supervised"]
    assert not damaged.valid[1, 2] and damaged.valid.sum() == before.valid.sum() - 1
    assert rt(run, store)["evaluated"] == 1
    after = load_rt(store)["supervised"]
    assert after.valid.all() and np.array_equal(after.correct, before.correct)
    assert np.array_equal(after.p_true, before.p_true, equal_nan=True)


@pytest.mark.parametrize("zarr_api", ["with_config", "earlier 3.x"])
def test_a_checkpoint_evaluated_to_nan_stays_evaluated(tmp_path, monkeypatch, zarr_api):
    """An all-NaN p_true chunk equals the fill value, which zarr does not write by default;
    the store writes it anyway, since its file is what proves the checkpoint was evaluated
    (else it would be evaluated again on every `inspect rt`)."""
    if zarr_api != "with_config":
        monkeypatch.delattr(zarr.Array, "with_config", raising=False)
    store = small_store(tmp_path / "s.zarr")
    store.write("supervised", 1, 2, np.zeros((2, 4, 1)), np.full((2, 4, 1), np.nan))
    done = RtStore(tmp_path / "s.zarr", writable=False).done("supervised")
    assert done.tolist() == [[False, False, False], [False, False, True]]


def test_done_flags_read_from_the_chunk_files_equal_zarrs_reading(tmp_path):
    """`done` is read from its chunk files (one decode per distinct content) instead of
    chunk by chunk: the same flags as zarr's own reading, whatever the chunks hold."""
    store = small_store(tmp_path / "s.zarr")
    for s_, e_ in ((0, 0), (0, 2), (1, 1)):
        store.write("supervised", s_, e_, np.ones((2, 4, 1)), np.full((2, 4, 1), 0.5))
    store.forget("supervised", 0, 2)  # written as 0: zarr removes the chunk file
    always_written(store.group["supervised"], "done")[1, 2] = 0  # a 0 kept as a file
    for stray in ("stray", "02", "\u0661", "\u00b2", "1.0a1b.partial"):  # not chunk names
        (tmp_path / "s.zarr" / "supervised" / "done" / "c" / "0" / stray).write_bytes(
            (tmp_path / "s.zarr" / "supervised" / "done" / "c" / "0" / "0").read_bytes())
    assert (tmp_path / "s.zarr" / "supervised" / "done" / "c" / "1" / "2").is_file()
    for name in ("done", "p_true"):  # chunk files beyond the array's shape (a store cut short)
        c = tmp_path / "s.zarr" / "supervised" / name / "c"
        chunk = c / "0" / "0"  # checkpoint (0, 0)'s chunk: c/0/0, then /0 per further axis
        while chunk.is_dir():
            chunk = chunk / "0"
        for cell in ("5", "0"), ("0", "9"):
            stray = c.joinpath(*cell, *chunk.relative_to(c / "0" / "0").parts)
            stray.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(chunk, stray)
    reader = RtStore(tmp_path / "s.zarr", writable=False)
    want = reader.group["supervised/done"][:].astype(bool)
    assert want.tolist() == [[True, False, False], [False, True, False]]
    assert np.array_equal(reader._done_flags("supervised"), want)
    assert np.array_equal(reader.done("supervised"), want)
    assert np.array_equal(reader.read("supervised")["done"].astype(bool), want)


def test_done_flags_survive_a_checkpoint_forgotten_while_they_are_read(tmp_path, monkeypatch):
    """Another process forgetting a checkpoint (zarr removes its chunk file) between the
    listing and the read: that one reads as 0, as zarr reads a missing chunk, and the rest
    are decoded from the bytes in hand, not read again from disk."""
    from ssl_dynamics.inspect import store as store_mod

    store = small_store(tmp_path / "s.zarr")
    for s_, e_ in ((0, 0), (0, 1), (1, 1), (1, 2)):
        store.write("supervised", s_, e_, np.ones((2, 4, 1)), np.full((2, 4, 1), 0.5))
    reader = RtStore(tmp_path / "s.zarr", writable=False)
    real = store_mod.RtStore._checkpoint_chunks

    def listed_then_forgotten(self, setup, name, arr):
        files = real(self, setup, name, arr)
        if name == "done":
            store.forget("supervised", 0, 0)  # a file the listing saw, gone before its read
        return files

    monkeypatch.setattr(store_mod.RtStore, "_checkpoint_chunks", listed_then_forgotten)
    flags = reader._done_flags("supervised")
    assert flags.tolist() == [[False, True, False], [False, True, True]]


def test_sha_records_read_from_the_chunk_files_equal_zarrs_reading(tmp_path):
    """The sha256 record is read from its chunk files (zstd, one per checkpoint) instead of
    chunk by chunk: the same bytes as zarr's own reading, stray and out-of-shape files
    ignored; a chunk that does not decode is left to zarr, which refuses it, and an array
    stored another way is read by zarr."""
    store = small_store(tmp_path / "s.zarr")
    for s_, e_, digest in ((0, 0, "ab"), (0, 2, "01"), (1, 1, "fe")):
        store.write("supervised", s_, e_, np.ones((2, 4, 1)), np.full((2, 4, 1), 0.5), digest * 32)
    c = tmp_path / "s.zarr" / "supervised" / "sha256" / "c"
    for stray in ("stray", "02", "\u0661", "1.0a1b.partial"):
        (c / "0" / stray).mkdir()
        shutil.copy(c / "0" / "0" / "0", c / "0" / stray / "0")
    (c / "7" / "0").mkdir(parents=True)
    shutil.copy(c / "0" / "0" / "0", c / "7" / "0" / "0")  # a seed row beyond the array
    reader = RtStore(tmp_path / "s.zarr", writable=False)
    want = reader.group["supervised/sha256"][:]
    assert [bytes(want[s_, e_]).hex()[:4] for s_, e_ in ((0, 0), (0, 1), (0, 2), (1, 1))] == \
        ["abab", "0000", "0101", "fefe"]
    assert np.array_equal(reader.checkpoint_sha("supervised"), want)

    (c / "1" / "1" / "0").write_bytes(b"not zstd")
    with pytest.raises(UserError, match="r_t store"):
        reader.checkpoint_sha("supervised")

    g = zarr.open_group(str(tmp_path / "s.zarr"), mode="a", use_consolidated=False)["supervised"]
    del g["sha256"]
    g.create_array("sha256", data=want, chunks=(1, 1, 32), compressors=zarr.codecs.GzipCodec(),
                   **storedims.array_options("sha256"))
    other = RtStore(tmp_path / "s.zarr", writable=False)
    assert other._records_from_files("supervised", other.group["supervised/sha256"]) is None
    assert np.array_equal(other.checkpoint_sha("supervised"), want)


def test_an_unfinished_group_is_removed_but_a_committed_one_never(tmp_path):
    path = tmp_path / "s.zarr"
    small_store(path)
    g = zarr.open_group(str(path), mode="a", use_consolidated=False)
    g.create_group("half").create_array("done", shape=(1, 1), dtype="uint8")  # a killed _create
    assert storedims.needs_upgrade(path)
    assert RtStore(path, writable=False).setups() == ["supervised"]
    RtStore(path)  # opened for writing: repaired under the lock
    assert not (path / "half").exists() and (path / "supervised" / "done").is_dir()
    assert not storedims.needs_upgrade(path)


def test_kill_while_growing_seeds_is_rolled_back_then_grown(tmp_path, monkeypatch):
    path = tmp_path / "s.zarr"
    store = small_store(path)
    store.write("supervised", 1, 2, np.ones((2, 4, 1)), np.full((2, 4, 1), 0.5))

    def killed(group, seeds):
        raise Killed("write_seed_coordinate")

    monkeypatch.setattr(storedims, "write_seed_coordinate", killed)
    with pytest.raises(Killed):
        RtStore(path).ensure_setup("supervised", [4, 2, 9], 3, 2, 4, 1, np.array([1, 0, 1, 0]),
                                   {"setup_config": {"name": "supervised"}})
    monkeypatch.undo()
    assert storedims.needs_upgrade(path)  # the arrays grew, the attributes did not commit it
    store = RtStore(path)  # repaired: back to the committed seeds
    assert not storedims.needs_upgrade(path)
    open_all(path)
    assert store.ensure_setup("supervised", [4, 2, 9], 3, 2, 4, 1, np.array([1, 0, 1, 0]),
                              {"setup_config": {"name": "supervised"}}) == [4, 2, 9]
    open_all(path)
    back = RtStore(path, writable=False)
    assert back.done("supervised").tolist() == [[0, 0, 0], [0, 0, 1], [0, 0, 0]]
    assert back.read("supervised")["p_true"][1, 2].tolist() == [[[0.5]] * 4] * 2


def test_a_half_grown_store_of_the_old_order_is_repaired(tmp_path):
    """Written before the fix, _grow committed the attributes before the seed coordinate:
    a kill between them left a short coordinate, which xarray refuses. Opening the store
    for writing now puts the coordinate in line with the attributes."""
    path = tmp_path / "s.zarr"
    small_store(path, seeds=(4, 2, 9))
    coord = zarr.open_group(str(path), mode="a", use_consolidated=False)["supervised/seed"]
    coord.resize((2,))
    storedims.consolidate(path)
    assert storedims.needs_upgrade(path)
    RtStore(path)
    assert not storedims.needs_upgrade(path)
    open_all(path)
    with xr.open_zarr(path, group="supervised") as ds:
        assert ds.seed.values.tolist() == [4, 2, 9]


# --------------------------------------------------------------------------- A. damaged metadata

def _garbage_setup(store):
    (store / "supervised" / "zarr.json").write_text("garbage{")


def _bad_done_meta(store):
    (store / "supervised" / "done" / "zarr.json").write_text(json.dumps({"x": 1}))


def _truncated_done_chunk(store):
    chunk = next(p for p in (store / "supervised" / "done").rglob("*") if p.is_file() and p.name != "zarr.json")
    chunk.write_bytes(chunk.read_bytes()[:3])


def _missing_done(store):
    shutil.rmtree(store / "supervised" / "done")


@pytest.mark.parametrize("damage", [_garbage_setup, _bad_done_meta, _truncated_done_chunk, _missing_done])
def test_damaged_metadata_is_one_line(run, monkeypatch, capsys, damage):
    damage(run / "inspect" / "rt.zarr")
    monkeypatch.setattr(sys, "argv", ["inspect", "rt", str(run), "--setup", "supervised", "--no-progress"])
    with pytest.raises(SystemExit) as e:
        inspect_cli.main()
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "corrupt r_t store" in err, err
    with pytest.raises(UserError, match="corrupt r_t store"):
        load_rt(run / "inspect" / "rt.zarr", ["supervised"])


@pytest.mark.parametrize("name", ["p_true", "correct"])
def test_a_damaged_chunk_is_named_and_mended_by_deleting_it(run, name):
    """A chunk damaged on disk (checksum or zstd fails): the refusal names its checkpoint and
    the chunk folders to delete; once deleted, `inspect rt` evaluates that checkpoint again
    (and only it) and the store holds what it held before the damage."""
    store = run / "inspect" / "rt.zarr"
    before = load_rt(store, ["supervised"])["supervised"]
    seeds = RtStore(store, writable=False).attrs("supervised")["seeds"]
    chunk = store / "supervised" / name / "c" / "1" / "2"
    leaf = next(p for p in sorted(chunk.rglob("*")) if p.is_file())
    content = bytearray(leaf.read_bytes())
    content[len(content) // 2] ^= 0xFF
    leaf.write_bytes(bytes(content))
    with pytest.raises(UserError) as e:
        load_rt(store, ["supervised"])
    assert f"supervised/{name} cannot be read" in str(e.value)
    assert f"the chunk of seed {seeds[1]} (row 1) epoch 2 is damaged; delete those checkpoints' chunk folders of " \
           f"p_true and correct (supervised/{{p_true,correct}}/c/1/2)" in str(e.value), str(e.value)
    for array in ("p_true", "correct"):
        shutil.rmtree(store / "supervised" / array / "c" / "1" / "2", ignore_errors=True)
    assert rt(run, setups=["supervised"])["evaluated"] == 1
    after = load_rt(store, ["supervised"])["supervised"]
    for field in ("correct", "p_true", "valid"):
        np.testing.assert_array_equal(getattr(after, field), getattr(before, field))


# --------------------------------------------------------------------------- B. schema-1 stores

def _as_schema_1(path, setup):
    g = zarr.open_group(str(path), mode="a", use_consolidated=False)[setup]
    attrs = g.attrs.asdict()
    g.attrs.put({**attrs, "schema_version": 1, "setup_config": {**attrs["setup_config"], "augment": "none"}})


def test_schema_1_store_is_read_in_todays_terms(tmp_path):
    path = tmp_path / "s.zarr"
    store = RtStore(path)
    store.init_probes(np.arange(4), np.zeros(4, dtype=int), "bank")
    attrs = {"setup_config": {"name": "random_labels", "augment": "normalize"}}
    store.ensure_setup("random_labels", [0], 3, 1, 4, 1, np.zeros(4, dtype=int), attrs)
    _as_schema_1(path, "random_labels")  # as written under schema 1: "none" normalized
    assert RtStore(path).ensure_setup("random_labels", [0, 1], 3, 1, 4, 1, np.zeros(4, dtype=int), attrs) == [0, 1]
    with pytest.raises(UserError, match="different setup_config"):  # today's "none" is another config
        RtStore(path).ensure_setup("random_labels", [0, 1], 3, 1, 4, 1, np.zeros(4, dtype=int),
                                   {"setup_config": {"name": "random_labels", "augment": "none"}})


def test_restoring_a_schema_1_setup_keeps_its_meaning(tmp_path):
    src = tmp_path / "old.zarr"
    store = RtStore(src)
    store.init_probes(np.arange(4), np.zeros(4, dtype=int), "bank")
    store.ensure_setup("random_labels", [0], 2, 1, 4, 1, np.zeros(4, dtype=int),
                       {"setup_config": {"name": "random_labels", "augment": "normalize"}})
    _as_schema_1(src, "random_labels")
    old = RtStore(src, writable=False)
    dst = RtStore(tmp_path / "new.zarr")
    dst.init_probes(*old.probes(), "bank")
    dst.restore_setup("random_labels", old.attrs("random_labels"), old.read("random_labels"))
    attrs = dst.attrs("random_labels")
    assert attrs["schema_version"] == SCHEMA_VERSION and attrs["setup_config"]["augment"] == "normalize"


# --------------------------------------------------------------------------- C. replaced checkpoints

def retrain(run, setup: str, seed: int, epoch: int) -> str:
    """Replace a committed checkpoint by another of the same place in the grid (its head
    zeroed: every class equally likely) and enter it in the manifest, as a retrain would.
    Returns its sha256."""
    paths = art.RunPaths(run)
    path = paths.checkpoint(setup, seed, epoch)
    state, meta = art.load_checkpoint(path)
    state = {k: (v.zero_() if k.startswith("head.") else v) for k, v in state.items()}
    data = art.safetensors_bytes(state, {"format": CHECKPOINT_FORMAT, "schema_version": str(SCHEMA_VERSION),
                                         "meta": canonical_json(meta)})
    art.write_bytes_atomic(path, data)
    m = art.read_json(paths.manifest(setup, seed))
    m["checkpoints"][str(epoch)] = sha = art.sha256_bytes(data)
    art.write_json_atomic(paths.manifest(setup, seed), m)
    return sha


def test_a_replaced_checkpoint_is_evaluated_again(run, monkeypatch):
    store = run / "inspect" / "rt.zarr"
    paths = art.RunPaths(run)
    before = load_rt(store)["supervised"]
    s = RtStore(store, writable=False)
    want = art.read_json(paths.manifest("supervised", 1))["checkpoints"]["2"]
    assert sha_hex(s.checkpoint_sha("supervised")[s.attrs("supervised")["seeds"].index(1), 2]) == want
    sha = retrain(run, "supervised", 1, 2)
    lines = []

    def killed(self, setup, s, e, *args):
        raise Killed("write")

    # a kill while it is evaluated again leaves it pending, not half-old
    monkeypatch.setattr(RtStore, "write", killed)
    with pytest.raises(Killed):
        rt(run, setups=["supervised"], echo=lambda *a: lines.append(" ".join(map(str, a))))
    monkeypatch.undo()
    said = [line for line in lines if "changed since they were evaluated" in line]
    assert len(said) == 1 and "supervised seed 1 epochs 2" in said[0], lines
    assert not load_rt(store)["supervised"].valid[1, 2]
    assert rt(run, setups=["supervised"])["evaluated"] == 1
    after = load_rt(store)["supervised"]
    assert after.valid.all()
    assert np.unique(after.p_true[1, 2]).size == 1  # a zeroed head: one probability for all
    assert np.array_equal(after.p_true[:, :2], before.p_true[:, :2])  # the others untouched
    s = RtStore(store, writable=False)
    assert sha_hex(s.checkpoint_sha("supervised")[1, 2]) == sha
    assert rt(run, setups=["supervised"])["evaluated"] == 0  # recorded now


def test_a_store_without_the_record_is_trusted_then_recorded(run):
    store = run / "inspect" / "rt.zarr"
    shutil.rmtree(store / "supervised" / storedims.SHA_ARRAY)  # as made before the record existed
    storedims.consolidate(store)
    retrain(run, "supervised", 1, 2)
    assert rt(run, setups=["supervised"])["evaluated"] == 0  # unknown: accepted as it is
    s = RtStore(store, writable=False)
    assert not s.checkpoint_sha("supervised").any()  # the record exists now, empty
    (store / "supervised" / "done" / "c" / "1" / "2").unlink()  # forget one chunk
    assert rt(run, setups=["supervised"])["evaluated"] == 1
    assert s.checkpoint_sha("supervised")[1, 2].any() and not s.checkpoint_sha("supervised")[0].any()


def test_the_record_goes_through_the_h5_archive(run, tmp_path):
    archive = tmp_path / "a.h5"
    rt(run, archive, setups=["supervised"])
    work = RtStore(tmp_path / "a.h5.work.zarr", writable=False).checkpoint_sha("supervised")
    assert work.any()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with xr.open_dataset(archive, group="supervised", engine="h5netcdf") as ds:
            assert np.array_equal(ds[storedims.SHA_ARRAY].values, work)
            assert ds[storedims.SHA_ARRAY].dims == storedims.RECORD_DIMS[storedims.SHA_ARRAY]
    shutil.rmtree(tmp_path / "a.h5.work.zarr")
    retrain(run, "supervised", 0, 1)
    assert rt(run, archive, setups=["supervised"])["evaluated"] == 1  # planned from the archive
    restored = RtStore(tmp_path / "a.h5.work.zarr", writable=False).checkpoint_sha("supervised")
    assert np.array_equal(restored[1], work[1]) and not np.array_equal(restored[0, 1], work[0, 1])


def test_kill_while_growing_seeds_is_repaired_by_the_next_inspect_rt(run, monkeypatch):
    """The same kill, end to end: a seed added to the run, `inspect rt` killed while it grows
    the store; the next `inspect rt` plans from the committed seeds (read only), repairs the
    store when it opens it for writing, and evaluates the new seed."""
    from dataclasses import replace

    from ssl_dynamics.config import override, preset
    from ssl_dynamics.train.grid import train_grid
    from ssl_dynamics.train.loop import TrainOptions

    cfg = override(preset("smoke"), ["epochs=2", "batch_size=16", "train_subset=48"])
    train_grid(run, replace(cfg, seeds=(2,)), ["supervised"], TrainOptions(device="cpu"),
               progress=False, echo=lambda *_: None)

    def killed(group, seeds):
        raise Killed("write_seed_coordinate")

    monkeypatch.setattr(storedims, "write_seed_coordinate", killed)
    with pytest.raises(Killed):
        rt(run, setups=["supervised"])
    monkeypatch.undo()
    assert rt(run, setups=["supervised"])["evaluated"] == 3  # seed 2's epochs 0-2
    d = load_rt(run / "inspect" / "rt.zarr")["supervised"]
    assert list(d.seeds) == [0, 1, 2] and d.valid.all()
    open_all(run / "inspect" / "rt.zarr")
