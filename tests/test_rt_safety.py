"""What `inspect rt` and `inspect export` must never do: overwrite files they do not own, mix
precisions in one store, take a checkpoint for another, score SimCLR on a short batch, let
shards overlap, or start writing before a check that can fail."""
import hashlib
import json
import os
import shutil
from types import SimpleNamespace

import numpy as np
import pytest

from _util import main_result, private_copy, rt
from ssl_dynamics import artifacts as art
from ssl_dynamics.errors import UserError
from ssl_dynamics.inspect import bank as bank_mod
from ssl_dynamics.inspect import cli as inspect_cli
from ssl_dynamics.inspect.export import export
from ssl_dynamics.inspect.rt_plan import Selection, check_simclr_batches, pending_tasks, shard_of
from ssl_dynamics.inspect.rtdata import is_rt_archive, load_rt
from ssl_dynamics.inspect.store import RtStore
from ssl_dynamics.inspect.workspace import open_workspace

QUIET = dict(echo=lambda *_: None)
TINY_BANK = dict(n_probe=24, n_replays=3, simclr_batch=8)  # the bank of tiny_rt


@pytest.fixture
def run(tiny_rt, tmp_path):
    """A private copy of the evaluated tiny run (4 setups x 2 seeds x epochs 0-2)."""
    return private_copy(tiny_rt, tmp_path)


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def call_cli(args, monkeypatch, capsys) -> tuple[int, str]:
    code, _, err = main_result(inspect_cli.main, args, monkeypatch, capsys, "inspect")
    return code, err


# --------------------------------------------------------------------------- 1. export --out

def test_export_never_overwrites_without_force_nor_the_runs_files(run, tmp_path, monkeypatch, capsys):
    ws = open_workspace(run, **QUIET)
    kept = {p: sha(p) for p in (run / "run.json", ws.bank)}
    code, err = call_cli(["export", run, "--to", "netcdf", "--out", run / "run.json", "--no-progress"],
                         monkeypatch, capsys)
    assert code == 2 and err.count("\n") == 1 and "is a file of the run directory" in err, err
    ckpt = art.RunPaths(run).checkpoint("simclr", 0, 1)
    for target, message in ((run / "run.json", "file of the run directory"),
                            (ckpt, "file of the run directory"),
                            (ckpt.parent / "new.nc", "file of the run directory"),
                            (ws.bank, "is the bank"),
                            (ws.store / "x.nc", "is the r_t store itself"),
                            (ws.dir / "rt.h5", "is an r_t store"),
                            (ws.dir / "analysis.h5", "file of the work folder"),
                            (ws.dir / "steps.json", "file of the work folder")):
        with pytest.raises(UserError, match=message):
            export(ws, "netcdf", target, progress=False, force=True, **QUIET)
    assert all(sha(p) == h for p, h in kept.items()) and not (ckpt.parent / "new.nc").exists()
    other = tmp_path / "mine.nc"
    other.write_text("keep me")
    for to in ("netcdf", "parquet"):
        with pytest.raises(UserError, match="exists; pass --force"):
            export(ws, to, other, progress=False, **QUIET)
    assert other.read_text() == "keep me"
    assert export(ws, "netcdf", other, progress=False, force=True, **QUIET) == other
    assert other.read_bytes()[:4] == b"\x89HDF"
    # the default output in the work folder is the command's own: exporting again replaces it
    export(ws, "netcdf", progress=False, **QUIET)
    assert export(ws, "netcdf", progress=False, **QUIET) == ws.dir / "rt.nc"


def test_export_never_overwrites_another_runs_work_folders_or_stores_files(run, tiny_rt, tmp_path):
    """--force replaces an earlier export, never a file the toolkit reads or writes in any
    run directory, work folder or store, whichever run it belongs to."""
    other = private_copy(tiny_rt, tmp_path / "other")
    ows = open_workspace(other, **QUIET)
    (ows.dir / "tables").mkdir(exist_ok=True)
    (ows.dir / "tables" / "examples.parquet").write_text("another work folder's table")
    h5_store = tmp_path / "archive" / "rt.h5"
    h5_store.parent.mkdir()
    from ssl_dynamics.inspect.rtdata import export_h5

    export_h5(RtStore(ows.store, writable=False), h5_store)
    ckpt = art.RunPaths(other).checkpoint("simclr", 0, 1)
    targets = {other / "run.json": "a file of the run directory",
               other / "random_labels.npy": "a file of the run directory",
               ckpt: "a file of the run directory",
               art.RunPaths(other).manifest("simclr", 0): "a file of the run directory",
               ows.bank: "a file of the work folder",
               ows.dir / "analysis.h5": "a file of the work folder",
               ows.dir / "work.json": "a file of the work folder",
               ows.dir / "rt.h5": "a file of the work folder",
               ows.store / "zarr.json": "inside the Zarr store",
               ows.store / "simclr" / "done" / "zarr.json": "inside the Zarr store",
               ows.dir / "tables" / "examples.parquet": "which its analyses write",
               h5_store: r"an r_t store \(.h5\)",
               ows.dir / "jobs" / "20260101-rt" / "record.json": "a job record of the work folder",
               other / "logs" / "worker-0.log": "a file of the run directory"}
    moved_bank = tmp_path / "archive" / "my-bank.h5"  # a bank outside any work folder
    shutil.copy(ows.bank, moved_bank)
    targets[moved_bank] = "a bank"
    for target in targets:
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text("a file of the other run")
    kept = {p: sha(p) for p in targets}
    ws = open_workspace(run, **QUIET)
    for target, message in targets.items():
        for to in ("netcdf", "parquet"):
            with pytest.raises(UserError, match=message):
                export(ws, to, target, progress=False, force=True, **QUIET)
    assert all(sha(p) == h for p, h in kept.items())
    # an earlier export is replaced, a netCDF copy of a store included
    nc = tmp_path / "archive" / "rt.nc"
    assert export(ws, "netcdf", nc, progress=False, **QUIET) == nc
    assert export(ws, "netcdf", nc, progress=False, force=True, **QUIET) == nc


def test_export_refuses_the_analyses_folders_devices_and_missing_folders(run, tmp_path):
    """tables/, figures/ and report/ are the analyses' (their writers hold the work lock and
    tidy the others' temporary files); a device or pipe is never replaced, even with
    --force; a folder that does not exist is a typo, not a new folder."""
    ws = open_workspace(run, **QUIET)
    for sub in ("tables", "figures", "report"):
        with pytest.raises(UserError, match="in the work folder's tables/, figures/ or report/"):
            export(ws, "netcdf", ws.dir / sub / "rt_copy.nc", progress=False, force=True, **QUIET)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(UserError, match="is not a plain file"):
        export(ws, "netcdf", fifo, progress=False, force=True, **QUIET)
    with pytest.raises(UserError, match="does not exist; create it first"):
        export(ws, "netcdf", tmp_path / "no" / "such" / "x.nc", progress=False, **QUIET)
    assert not (tmp_path / "no").exists()
    with pytest.raises(UserError, match="in the work folder's tables/, figures/ or report/"):
        export(ws, "netcdf", ws.dir / "tables" / "sub" / "x.nc", progress=False, **QUIET)


def test_a_damaged_work_table_is_computed_again_by_export(run):
    from ssl_dynamics.inspect.examples import read_meta

    ws = open_workspace(run, **QUIET)
    table = ws.dir / "tables" / "examples.parquet"
    table.parent.mkdir(parents=True, exist_ok=True)
    table.write_bytes(b"netCDF, not Parquet")  # e.g. an earlier export over it
    said = []
    assert export(ws, "parquet", progress=False, echo=said.append) == table
    assert "not a readable Parquet table; computing it again" in said[0]
    assert read_meta(table)["options"]
    data = bytearray(table.read_bytes())  # a damaged footer: pyarrow's OSError without errno
    start = len(data) - 8 - int.from_bytes(data[-8:-4], "little")  # where the footer begins
    data[start:start + 50] = bytes(50)
    table.write_bytes(bytes(data))
    with pytest.raises(OSError) as damaged:
        read_meta(table)
    assert damaged.value.errno is None
    said.clear()
    assert export(ws, "parquet", progress=False, echo=said.append) == table
    assert "computing it again" in said[0] and read_meta(table)["options"]


# --------------------------------------------------------------------------- 2. rt --store X.h5

def test_archive_without_its_work_store_is_extended_not_replaced(run, tmp_path):
    archive = tmp_path / "a.h5"
    rt(run, archive, setups=["supervised"])
    before = load_rt(archive)["supervised"]
    shutil.rmtree(tmp_path / "a.h5.work.zarr")  # e.g. only the archive was copied
    res = rt(run, archive, setups=["random_labels"], **QUIET)
    assert res["evaluated"] == 6
    after = load_rt(archive)
    assert set(after) == {"supervised", "random_labels"}
    assert np.array_equal(after["supervised"].correct, before.correct) and after["supervised"].valid.all()
    shutil.rmtree(tmp_path / "a.h5.work.zarr")
    assert rt(run, archive, setups=["supervised"])["evaluated"] == 0  # done flags come from the archive
    # an archive made from another bank is refused, and left as it was
    shutil.rmtree(tmp_path / "a.h5.work.zarr")
    h = sha(archive)
    with pytest.raises(UserError, match="another bank"):
        rt(run, archive, setups=["random_labels"], bank_path=tmp_path / "other-bank.h5",
           **{**TINY_BANK, "bank_seed": 7})
    assert sha(archive) == h and not (tmp_path / "a.h5.work.zarr").exists()
    assert not (tmp_path / "other-bank.h5").exists()  # refused before it was built


def test_bank_built_for_a_store_that_refuses_it_is_removed(run, tmp_path, monkeypatch):
    # the store's own check (the bank's fingerprint) is the last line: if a new bank gets
    # past the early check, the refused bank is not left behind
    from ssl_dynamics.inspect import rt_plan

    rt(run, setups=["supervised"], **QUIET)
    monkeypatch.setattr(rt_plan, "check_new_bank", lambda *a, **k: None)
    with pytest.raises(UserError, match="different bank"):
        rt(run, setups=["supervised"], bank_path=tmp_path / "new-bank.h5",
           **{**TINY_BANK, "bank_seed": 7}, **QUIET)
    assert not (tmp_path / "new-bank.h5").exists()
    assert (run / "inspect" / "bank.h5").exists()  # the store's own bank is kept


def test_store_path_that_is_the_bank_or_another_h5_is_refused(run, tmp_path):
    bank = run / "inspect" / "bank.h5"
    h = sha(bank)
    with pytest.raises(UserError, match="is the bank"):
        rt(run, bank, setups=["supervised"])
    foreign = tmp_path / "other.h5"
    shutil.copyfile(bank, foreign)  # another run's bank, analysis.h5, ...: not an r_t archive
    with pytest.raises(UserError, match="exists and is not an r_t archive"):
        rt(run, foreign, setups=["supervised"])
    assert sha(bank) == h and sha(foreign) == h
    assert not (run / "inspect" / "bank.h5.work.zarr").exists() and not (tmp_path / "other.h5.work.zarr").exists()
    for store, bank in ((tmp_path / "no" / "such" / "rt.zarr", None), (tmp_path / "rt.zarr", tmp_path / "nope" / "b.h5")):
        option, missing = ("--bank", tmp_path / "nope") if bank else ("--store", tmp_path / "no" / "such")
        with pytest.raises(UserError, match=f"{option} .*: its folder {missing} does not exist; create it first"):
            rt(run, store, setups=["supervised"], bank_path=bank)
    assert not (tmp_path / "no").exists() and not (tmp_path / "nope").exists() and not (tmp_path / "rt.zarr").exists()


# --------------------------------------------------------------------------- 3. precision

def test_precision_is_recorded_and_a_mismatch_refused(run, tmp_path):
    store = tmp_path / "p.zarr"
    rt(run, store, setups=["supervised"], epochs=[0])
    assert RtStore(store, writable=False).attrs("supervised")["precision"] == "fp32"
    with pytest.raises(UserError, match=r"evaluated in fp32; use the same --precision \(fp32\) or another --store"):
        rt(run, store, setups=["supervised"], bf16=True)
    assert load_rt(store)["supervised"].valid.sum() == 2  # nothing was added
    # the store's own check (shards racing past the plan): same refusal
    s = RtStore(store)
    attrs = {k: v for k, v in s.attrs("supervised").items() if k not in ("schema_version", "seeds", "shape", "epochs")}
    targets = s.read_targets("supervised")
    shape = s.attrs("supervised")["shape"]
    with pytest.raises(UserError, match="evaluated in fp32"):
        s.ensure_setup("supervised", [0, 1], shape[1], *shape[2:], targets, {**attrs, "precision": "bf16"})
    # a store written before the precision was recorded: unknown, accepted, left unrecorded
    import zarr

    g = zarr.open_group(str(store), mode="a", use_consolidated=False)
    g["supervised"].attrs.put({k: v for k, v in g["supervised"].attrs.asdict().items() if k != "precision"})
    assert rt(run, store, setups=["supervised"], epochs=[1], bf16=True)["evaluated"] == 2
    assert "precision" not in RtStore(store, writable=False).attrs("supervised")


# --------------------------------------------------------------------------- 4. misplaced checkpoint

def test_a_checkpoint_copied_over_another_seed_is_refused(run, tmp_path):
    paths = art.RunPaths(run)
    for f in paths.seed_dir("supervised", 0).iterdir():  # seed 0's files, manifest included
        shutil.copyfile(f, paths.seed_dir("supervised", 1) / f.name)
    for verify in (True, False):
        with pytest.raises(UserError, match=r"seed-01/epoch-0000.safetensors is another checkpoint's "
                                            r"file: it records seed 0 \(its path says 1\)"):
            rt(run, tmp_path / "x.zarr", setups=["supervised"], verify=verify)
    assert not (tmp_path / "x.zarr").exists()  # refused before anything was written
    shutil.copyfile(paths.checkpoint("supervised", 0, 1), paths.checkpoint("supervised", 0, 2))
    m = art.read_json(paths.manifest("supervised", 0))
    m["checkpoints"]["2"] = m["checkpoints"]["1"]
    art.write_json_atomic(paths.manifest("supervised", 0), m)
    with pytest.raises(UserError, match=r"seed-00/epoch-0002.safetensors .* records epoch 1 \(its path says 2\)"):
        rt(run, tmp_path / "x.zarr", setups=["supervised"], epochs=[2])


# --------------------------------------------------------------------------- 5. SimCLR batches

def test_simclr_probe_count_must_fill_whole_batches(tiny_run, tmp_path):
    run = private_copy(tiny_run, tmp_path)  # no bank yet
    with pytest.raises(UserError, match=r"^K = 20 probe images, not a multiple of the SimCLR batch "
                                        r"B = 8: .*; use --probes 16 or 24, or --simclr-batch 5 or 4 or 2$"):
        rt(run, setups=["simclr"], n_probe=20, n_replays=2, simclr_batch=8)
    assert not (run / "inspect" / "bank.h5").exists()
    # a bank with such a K (built for the classifiers, which have no batches) is refused for SimCLR
    ws = open_workspace(run, **QUIET)
    ds = ws.run.load_dataset()
    bank = tmp_path / "k20.h5"
    bank_mod.build_bank(bank, ds.train_x, ds.train_y, [("simclr", 2), ("supervised", 1)],
                        ws.run.dataset_sha256, bank_mod.BankSpec(20, 2, 0, 8))
    with pytest.raises(UserError, match=r"bank .*k20.h5 has K = 20 probe images, not a multiple of the "
                                        r"SimCLR batch B = 8: .*; use a new --bank with --probes 16 or 24"):
        rt(run, setups=["simclr"], bank_path=bank)
    # the defaults: the thesis (K 1024, B 256) and `make demo` (--probes 256, the demo's B 64)
    check_simclr_batches(1024, 256, [("simclr", 2)], 50_000)
    check_simclr_batches(256, 64, [("simclr", 2)], 1437)
    check_simclr_batches(20, 8, [("supervised", 1)], 48)  # classifiers: any K
    # the default --probes 1024 on a small training set: the message says where K came from
    with pytest.raises(UserError, match=r"^K = 60 probe images \(--probes 1024, capped to the 60 training "
                                        r"images\), not a multiple"):
        check_simclr_batches(60, 8, [("simclr", 2)], 60, asked=1024)


# --------------------------------------------------------------------------- 6. shard ownership

def test_shard_of_a_checkpoint_depends_on_its_key_only(tiny_run):
    run = art.Run.open(tiny_run)
    setups = list(run.cfg.setups)
    grid = {(s, seed, e) for s in setups for seed in run.cfg.seeds for e in range(run.cfg.setups[s].epochs + 1)}

    def shards(fake, order, n):
        return [{(t.setup, t.seed, t.epoch) for t in pending_tasks(fake, tiny_run / "none.zarr", order,
                                                                    Selection(shard=(i, n)))}
                for i in range(n)]

    for n in (2, 3, 5):
        base = shards(run, setups, n)
        assert set().union(*base) == grid and sum(map(len, base)) == len(grid)  # a partition
        assert all(base)  # each shard has work on this 24-checkpoint grid
        grown = SimpleNamespace(paths=run.paths, cfg=SimpleNamespace(seeds=(7, 1, 0), setups=run.cfg.setups))
        assert shards(grown, setups[::-1], n) == base  # seed 7 added (no checkpoints), reordered
        for i, tasks in enumerate(base):
            assert all(shard_of(*key, n) == i for key in tasks)
    assert shard_of("simclr", 3, 17, 8) == shard_of("simclr", 3, 17, 8) == (shard_of("simclr", 3, 16, 8) + 1) % 8


# --------------------------------------------------------------------------- 7. manifests, before any write

def test_a_checkpoint_absent_from_its_manifest_counts_as_missing(run, tmp_path):
    paths = art.RunPaths(run)
    m = art.read_json(paths.manifest("supervised", 1))
    del m["checkpoints"]["2"]  # the file stays: an epoch killed before its commit
    art.write_json_atomic(paths.manifest("supervised", 1), m)
    store = tmp_path / "m.zarr"
    with pytest.raises(UserError, match=r"missing checkpoints .*supervised seed 1 epochs 2 .*--allow-missing"):
        rt(run, store, setups=["supervised"])
    assert not store.exists()
    assert rt(run, store, setups=["supervised"], allow_missing=True)["evaluated"] == 5
    assert load_rt(store)["supervised"].valid.tolist() == [[True] * 3, [True, True, False]]


def test_submit_checks_every_shards_checkpoints_before_writing(run, monkeypatch, capsys):
    n = 3
    seed, epoch = next((seed, e) for seed in (0, 1) for e in range(3) if shard_of("supervised", seed, e, n) == n - 1)
    p = art.RunPaths(run).checkpoint("supervised", seed, epoch)
    p.write_bytes(p.read_bytes()[:64])
    shutil.rmtree(run / "inspect")
    code, err = call_cli(["submit", "rt", run, "--shards", n, "--setup", "supervised", "--probes", "24",
                          "--replays", "2", "--executor", "local", "--gpus-per-job", "0", "--dry-run"],
                         monkeypatch, capsys)
    assert code == 2 and f"seed-{seed:02d}/epoch-{epoch:04d}" in err and err.count("\n") == 1, err
    assert not (run / "inspect" / "bank.h5").exists() and not (run / "inspect" / "rt.zarr").exists()


# --------------------------------------------------------------------------- concurrency, foreign stores

def test_a_work_folder_starts_from_the_runs_own_store(run, tmp_path):
    """`--work W` on an archive (read-only media) evaluates on the archive's bank; what the
    archive's store holds is copied in, not evaluated again, and the archive is untouched."""
    archive_store = run / "inspect" / "rt.zarr"
    before = load_rt(archive_store)
    lines = []
    res = rt(run, work=tmp_path / "w", echo=lines.append)
    assert res["evaluated"] == 0 and any("started from" in line for line in lines)
    after = load_rt(tmp_path / "w" / "rt.zarr")
    for s, d in before.items():
        assert np.array_equal(after[s].correct, d.correct) and after[s].valid.all()
    assert not (tmp_path / "w" / "bank.h5").exists()  # the archive's bank, read in place
    # with another bank, nothing is copied: the work folder's store is its own
    res = rt(run, work=tmp_path / "w2", setups=["supervised"], bank_path=tmp_path / "w2" / "bank.h5",
             **{**TINY_BANK, "bank_seed": 3})
    assert res["evaluated"] == 6 and set(load_rt(tmp_path / "w2" / "rt.zarr")) == {"supervised"}


def test_seeding_skips_a_work_store_made_meanwhile_and_clears_a_killed_one(run, tmp_path):
    from ssl_dynamics.inspect.rtdata import seed_work_store

    ws = open_workspace(run, **QUIET)
    fp = bank_mod.load_bank(ws.bank).fingerprint
    target = tmp_path / "copy.zarr"
    stale = tmp_path / ".seeding.copy.zarr"
    stale.mkdir()
    (stale / "junk").write_text("left by a kill")
    seed_work_store(ws.store, fp, target)
    assert not stale.exists() and load_rt(target)["supervised"].valid.all()
    stamp = (target / "zarr.json").stat().st_mtime_ns
    seed_work_store(ws.store, fp, target)  # made by another process while this one waited
    assert (target / "zarr.json").stat().st_mtime_ns == stamp


def test_an_archive_is_not_blamed_for_the_callers_errors(run, tmp_path):
    from ssl_dynamics.inspect.rtdata import export_h5, open_store

    archive = tmp_path / "a.h5"
    export_h5(RtStore(run / "inspect" / "rt.zarr", writable=False), archive)
    with pytest.raises(KeyError, match="mine"):
        with open_store(archive):
            raise KeyError("mine")
    with open_store(archive) as store:
        with pytest.raises(UserError, match="corrupt r_t archive"):
            store.read("no_such_setup")


def test_a_bank_built_by_another_process_meanwhile_is_loaded_not_rebuilt(run, tmp_path):
    from ssl_dynamics.inspect.rt import ensure_bank

    ws = open_workspace(run, **QUIET)
    spec = bank_mod.load_bank(ws.bank).spec
    stamp = ws.bank.stat().st_mtime_ns
    bank, built = ensure_bank(ws, ws.bank, spec, False, {}, quiet_echo)  # planned when it was absent
    assert not built and ws.bank.stat().st_mtime_ns == stamp
    with pytest.raises(UserError, match="built with other settings"):
        ensure_bank(ws, ws.bank, bank_mod.BankSpec(24, 5, 0, 8), False, {}, quiet_echo)


def quiet_echo(*_a):
    return None


def test_store_path_that_is_another_zarr_is_refused(run, tmp_path):
    cache = run / "inspect" / "features.zarr"
    with pytest.raises(UserError, match="is the representation cache"):
        rt(run, cache, setups=["supervised"], **QUIET)
    import zarr

    other = tmp_path / "other.zarr"
    zarr.open_group(str(other), mode="w").create_group("something")
    with pytest.raises(UserError, match="exists and is not an r_t store"):
        rt(run, other, setups=["supervised"], **QUIET)
    empty = tmp_path / "empty.zarr"
    empty.mkdir()
    with pytest.raises(UserError, match="or remove that empty folder"):
        rt(run, empty, setups=["supervised"], **QUIET)


def test_a_killed_exports_temp_file_is_removed_by_the_next(run, tmp_path):
    archive = tmp_path / "a.h5"
    left = tmp_path / ".a.h5.k1ll3d.tmp"
    left.write_bytes(b"partial archive")
    rt(run, archive, setups=["supervised"], **QUIET)
    assert not left.exists() and is_rt_archive(archive)


def test_a_relative_work_folder_and_its_absolute_store_start_from_the_archive(run, tmp_path, monkeypatch):
    # `inspect submit rt --work w` passes the store as an absolute path
    monkeypatch.chdir(tmp_path)
    res = rt(run, (tmp_path / "w" / "rt.zarr").absolute(), work="w")
    assert res["evaluated"] == 0


def test_a_work_folder_starts_from_an_archives_newer_work_store(run, tmp_path):
    """An archive with rt.h5 and a newer work store (a run stopped before its export): the
    work folder starts from what planning read, the work store, so nothing is left out."""
    inspect = run / "inspect"
    shutil.rmtree(inspect / "rt.zarr")
    rt(run, inspect / "rt.h5", setups=["supervised"], epochs=[0], **QUIET)  # the archive: epoch 0
    shutil.copyfile(inspect / "rt.h5", tmp_path / "old.h5")
    rt(run, inspect / "rt.h5", setups=["supervised"], epochs=[1, 2], **QUIET)
    shutil.copyfile(tmp_path / "old.h5", inspect / "rt.h5")  # the export of epochs 1-2 never happened
    assert load_rt(inspect / "rt.h5.work.zarr")["supervised"].valid.all()
    assert rt(run, work=tmp_path / "w", setups=["supervised"])["evaluated"] == 0
    assert load_rt(tmp_path / "w" / "rt.zarr")["supervised"].valid.all()


def test_analyses_and_the_report_say_when_the_store_is_behind_the_run(run, monkeypatch, capsys):
    """A checkpoint the store lacks (a seed added, a kill before `inspect rt` finished) or
    holds from before it was retrained: each analysis notes it, and so does the report."""
    from ssl_dynamics.inspect.rt_plan import store_behind

    ws = open_workspace(run, **QUIET)
    assert store_behind(ws.run, ws.store, ["simclr", "supervised"]) is None
    code, out, _ = main_result(inspect_cli.main, ["classes", run], monkeypatch, capsys)
    assert code == 0 and "r_t store" not in out, out
    RtStore(ws.store).forget("simclr", 1, 2)  # seed row 1 is seed 1
    manifest = art.RunPaths(run).manifest("supervised", 0)
    record = art.read_json(manifest)
    record["checkpoints"]["1"] = "0" * 64  # as if epoch 1 had been trained again
    manifest.write_text(json.dumps(record))
    want = ("the r_t store lacks 1 checkpoint(s) the run has (simclr seed 1 epochs 2) and holds 1 "
            "checkpoint(s) from before they changed (retrained or replaced); `inspect rt` evaluates them")
    assert store_behind(ws.run, ws.store, ["simclr", "supervised"]) == want
    assert store_behind(ws.run, ws.store, ["random_labels"]) is None
    code, out, _ = main_result(inspect_cli.main, ["classes", run, "--setup", "simclr,supervised"],
                               monkeypatch, capsys)
    assert code == 0 and f"note: {want}\n" in out, out
    code, out, _ = main_result(inspect_cli.main, ["report", run], monkeypatch, capsys)
    page = (ws.dir / "report" / "index.html").read_text()
    assert code == 0 and "The r_t store lacks 1 checkpoint(s) the run has (simclr seed 1 epochs 2)" in page
    assert "the run has 2 seeds (each analysis says how many it read)" in page
    manifest.write_text("{}")  # a damaged manifest: the analyses still read the store, without the note
    code, out, err = main_result(inspect_cli.main, ["classes", run], monkeypatch, capsys)
    assert code == 0 and "r_t store lacks" not in out, (out, err)


def test_each_analysis_and_the_report_read_the_evaluated_checkpoints_once(run, monkeypatch, capsys):
    """What a store holds evaluated is read once per analysis session for both its record
    and its note that the store is behind (at thesis scale a reading takes about a second),
    and once per store for the report's two warnings; `inspect examples` notes it too."""
    from ssl_dynamics.inspect import rt_plan

    reads = []
    real = rt_plan.evaluated
    monkeypatch.setattr(rt_plan, "evaluated", lambda store, setup: reads.append(setup) or real(store, setup))
    RtStore(open_workspace(run, **QUIET).store).forget("simclr", 1, 2)
    for args, setups in ((["classes", run, "--setup", "simclr,supervised"], ["simclr", "supervised"]),
                         (["examples", run, "--setup", "simclr"], ["simclr"])):
        reads.clear()
        code, out, err = main_result(inspect_cli.main, args, monkeypatch, capsys)
        assert code == 0 and "note: the r_t store lacks 1 checkpoint(s) the run has (simclr seed 1 epochs 2)" in out, (out, err)
        assert sorted(reads) == setups, reads
    reads.clear()
    assert main_result(inspect_cli.main, ["report", run], monkeypatch, capsys)[0] == 0
    assert sorted(reads) == sorted(RtStore(open_workspace(run, **QUIET).store, writable=False).setups()), reads


def test_the_report_names_analyses_that_read_an_older_state_of_the_store(run, tmp_path, monkeypatch, capsys):
    """An analysis run before `inspect rt` changed the store (checkpoints evaluated since, or
    again) shows numbers the store no longer holds: the report names it, and only it (an
    analysis of other setups still matches),
    in a copied run its own store, and not the original's; sessions of older versions
    (no snapshot) are passed over, and a damaged record does not stop the report."""
    from ssl_dynamics.inspect.rt_plan import evaluations

    ws = open_workspace(run, **QUIET)
    for args in (["classes", run], ["dynamics", run, "--setup", "supervised"]):
        assert main_result(inspect_cli.main, args, monkeypatch, capsys)[0] == 0
    sources = json.loads((ws.dir / "sources.json").read_text())
    recorded = {tuple(s["setups"]): s for s in sources.values()}
    assert recorded[("supervised",)]["evaluated"] == 6  # 2 seeds x epochs 0-2
    assert recorded[("simclr", "supervised", "random_labels", "random_labels_aug")]["evaluated"] == 24
    assert {s["in_work"] for s in sources.values()} == {"rt.zarr"}
    assert evaluations(ws.store, ["supervised"]).snapshot() == (recorded[("supervised",)]["state"], 6)

    def page(root=run) -> str:
        code, _, _ = main_result(inspect_cli.main, ["report", root], monkeypatch, capsys)
        assert code == 0
        return (root / "inspect" / "report" / "index.html").read_text()

    assert "older state of their r_t store" not in page()
    copy = private_copy(run, tmp_path / "copy")
    RtStore(ws.store).forget("simclr", 1, 2)  # as if seed 1's epoch 2 were evaluated after
    text = page()
    assert "<li><b>classes</b>: rt.zarr held 24 evaluated checkpoints then and holds 23 now</li>" in text, text
    assert "<b>dynamics</b>" not in text.split("older state of their r_t store")[1].split("</ul>")[0]
    assert "older state of their r_t store" not in page(copy)  # the copy's own store is unchanged
    RtStore(copy / "inspect" / "rt.zarr").forget("supervised", 0, 0)
    text = page(copy)
    assert "<li><b>dynamics</b>: rt.zarr held 6 evaluated checkpoints then and holds 5 now</li>" in text
    assert "<li><b>classes</b>: rt.zarr held 24 evaluated checkpoints then and holds 23 now</li>" in text

    rt(run, **QUIET)  # evaluated again, to the same numbers: the store is as the analyses read it
    assert "older state of their r_t store" not in page()
    session = next(k for k, s in sources.items() if s["setups"] == ["supervised"])
    sources[session]["state"] = "0" * 64  # its checkpoints evaluated again since (the same count)
    (ws.dir / "sources.json").write_text(json.dumps(sources))
    assert "<li><b>dynamics</b>: rt.zarr has had checkpoints evaluated again since</li>" in page()
    sources[session]["store_id"] = "another"
    (ws.dir / "sources.json").write_text(json.dumps(sources))
    assert "<li><b>dynamics</b>: rt.zarr is another store now (evaluated anew since)</li>" in page()
    sources[session]["evaluated"] = None  # a damaged record: no count, no traceback
    sources[session].pop("store_id")
    (ws.dir / "sources.json").write_text(json.dumps(sources))
    assert "<li><b>dynamics</b>: rt.zarr has had checkpoints evaluated again since</li>" in page()
    del sources[session]["state"]  # a session of an older toolkit: no snapshot to compare
    (ws.dir / "sources.json").write_text(json.dumps(sources))
    assert "older state of their r_t store" not in page()
