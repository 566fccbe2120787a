"""`inspect examples` and `inspect export` on a tiny evaluated run, and `run_examples` on
hand-built arrays: the table's columns and values, missing checkpoints, the image grids,
the upgrade of an old store, the portable exports."""
import dataclasses
import json
import shutil
import sys
import warnings

import h5py
import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr
from click.testing import CliRunner

from _util import make_old_style, private_copy, rt
from ssl_dynamics import artifacts as art
from ssl_dynamics.data import make_synthetic, stratified_subset
from ssl_dynamics.deps import need
from ssl_dynamics.errors import UserError
from ssl_dynamics.inspect import example_measures as em
from ssl_dynamics.inspect import storedims
from ssl_dynamics.inspect.cli import cli
from ssl_dynamics.inspect.examples import TABLE_COLUMNS, ExampleOptions, read_meta, run_examples
from ssl_dynamics.inspect.export import examples_for_workspace, probe_images
from ssl_dynamics.inspect.outputs import Outputs
from ssl_dynamics.inspect.rtdata import SetupRt, load_rt
from ssl_dynamics.inspect.workspace import open_workspace

SETUPS = ("simclr", "supervised", "random_labels", "random_labels_aug")
QUIET = dict(echo=lambda *_: None)


def invoke(*args, code=0):
    r = CliRunner().invoke(cli, [str(a) for a in args])
    assert r.exit_code == code, r.output + repr(r.exception)
    return r.output


@pytest.fixture
def run(tiny_rt, tmp_path):
    return private_copy(tiny_rt, tmp_path)


def test_examples_end_to_end_upgrades_an_old_store(run):
    store = run / "inspect" / "rt.zarr"
    make_old_style(store)
    chunks = {p: p.read_bytes() for p in store.rglob("*") if p.is_file() and p.name != "zarr.json"}
    out = invoke("examples", run, "--no-progress")
    assert "added named dimensions" in out and not storedims.needs_upgrade(store)
    assert all(p.read_bytes() == b for p, b in chunks.items())
    tables, figures = run / "inspect" / "tables", run / "inspect" / "figures"
    df = pd.read_parquet(tables / "examples.parquet")
    # no source_file: synthetic images have no files
    assert list(df.columns) == [c for c in TABLE_COLUMNS if c != "source_file"] + ["rt_ref1", "rt_ref2"]
    assert len(df) == 4 * 24 and df.groupby("setup").size().to_dict() == {s: 24 for s in SETUPS}
    # the run trained on 48 of the 256 synthetic images: source_index finds each in the whole split
    whole = make_synthetic()
    subset = stratified_subset(whole.train_y, 48, 0).numpy()
    assert np.array_equal(df.source_index, subset[df.dataset_index])
    with h5py.File(run / "inspect" / "bank.h5", "r") as f:
        assert np.array_equal(whole.train_x.numpy()[f["probe_source"][:]], f["images"][:])
    ints = ["probe", "dataset_index", "source_index", "label", "target", "n_seeds", "n_missing_checkpoints", "hardness_rank"]
    assert all(df[c].dtype == np.int64 for c in ints)
    assert all(df[c].dtype == np.float64 for c in ("first_learned_median", "confidence", "rt_ref1"))
    csv = pd.read_csv(tables / "examples.csv")
    assert list(csv.columns) == list(df.columns)
    assert np.allclose(csv["variability"], df["variability"], equal_nan=True)
    data = load_rt(store)
    for s, d in data.items():
        rows = df[df.setup == s]
        want = em.example_summary(d.correct, d.p_true, d.valid, d.epochs)
        for col, values in want.items():
            assert np.allclose(rows[col].to_numpy(dtype=float), values, equal_nan=True), (s, col)
        assert np.array_equal(rows.dataset_index, d.probe_indices) and np.array_equal(rows.target, d.targets)
        order = em.hardness_order(want, "correctness")
        assert np.array_equal(np.argsort(rows.hardness_rank.to_numpy()), order)
        assert (rows.n_missing_checkpoints == 0).all()
    simclr = df[df.setup == "simclr"]  # the reference: its own epochs 1 and 2
    assert np.allclose(simclr.rt_ref2, em.rt_at(data["simclr"].correct, data["simclr"].valid, [2])[0])
    # every setup's rt_ref<t> against a slow eq. 4.4 and a slow r_t (valid seeds x replays)
    def slow_mean(d, e):
        seeds = [i for i in range(len(d.seeds)) if d.valid[i, e]]
        return sum(int(d.correct[i, e].sum()) for i in seeds) / (len(seeds) * d.correct[0, e].size)

    ref = data["simclr"]
    for s, d in data.items():
        rows = df[df.setup == s].sort_values("probe")
        for t in (1, 2):
            target = slow_mean(ref, list(ref.epochs).index(t))
            cand = [e for e in range(len(d.epochs)) if d.epochs[e] > 0 and d.valid[:, e].any()]
            e = min(cand, key=lambda e: (abs(slow_mean(d, e) - target), e))
            seeds = [i for i in range(len(d.seeds)) if d.valid[i, e]]
            want = d.correct[seeds, e].astype(float).mean(axis=(0, 1))
            assert np.allclose(rows[f"rt_ref{t}"].to_numpy(), want), (s, t)
    for name in ["examples_cartography", "examples_forgetting", "examples_rank_agreement"] + \
            [f"examples_{k}_{s}" for s in SETUPS for k in ("hardest", "easiest")]:
        assert (figures / f"{name}.png").stat().st_size > 1000 and (figures / f"{name}.pdf").exists()
    summary = json.loads((tables / "examples_summary.json").read_text())
    assert [r["setup"] for r in summary["rows"]] == list(SETUPS) and "aligned" in summary["note"]
    with xr.open_dataset(run / "inspect" / "analysis.h5", group="examples/random_labels",
                         engine="h5netcdf") as ds:
        assert ds.correctness.dims == ("probe",) and np.array_equal(ds.probe, data["random_labels"].probe_indices)
    assert "no analysis outputs yet" not in invoke("report", run)
    page = (run / "inspect" / "report" / "index.html").read_text()
    for title in ["Per-example difficulty", "Data maps", "Forgetting events", "Hardest probe images: SimCLR",
                  "Easiest probe images: Random labels + aug.", "Cross-setup agreement"]:
        assert title in page


def test_missing_checkpoints_are_counted_and_never_read(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    art.RunPaths(run).checkpoint("supervised", 1, 1).unlink()
    rt(run, setups=["supervised"], allow_missing=True, device="cpu", n_probe=24, n_replays=3)
    ws = open_workspace(run, **QUIET)
    res = examples_for_workspace(ws, Outputs(ws.dir), opts=ExampleOptions(progress=False), **QUIET)
    assert any("1 checkpoint(s) not evaluated (seed 1 epochs 1)" in n for n in res["notes"])
    df = pd.read_parquet(ws.dir / "tables" / "examples.parquet")
    assert (df.n_missing_checkpoints == 1).all() and (df.n_seeds == 2).all()
    d = load_rt(ws.store)["supervised"]
    assert not d.valid[1, 1] and d.valid.sum() == 5
    # whatever the store holds at the missing checkpoint, the measures are the same
    for fill in (0, 1):
        c, p = d.correct.copy(), d.p_true.copy()
        c[1, 1], p[1, 1] = fill, 0.5
        want = em.example_summary(c, p, d.valid, d.epochs)
        for col in ("first_learned_median", "forgetting_mean", "confidence", "variability", "correctness"):
            assert np.allclose(df[col], want[col], equal_nan=True), col
    summary = json.loads((ws.dir / "tables" / "examples_summary.json").read_text())["rows"]
    assert summary[0]["n_missing_checkpoints"] == 1
    # rt_ref1 sits at epoch 1 (supervised is its own reference), the missing checkpoint's:
    # seed 0's r_t alone, whatever the store holds for seed 1 there
    assert summary[0]["epoch_ref1"] == 1
    want = d.correct[0, 1].mean(axis=0)  # seed 0, epoch index 1, mean over the replays
    np.testing.assert_array_equal(df.rt_ref1, want)
    g = zarr.open_group(str(ws.store), mode="a", use_consolidated=False)
    g["supervised/correct"][1, 1] = 1  # the missing checkpoint now "all right"
    examples_for_workspace(ws, Outputs(ws.dir), opts=ExampleOptions(progress=False), **QUIET)
    again = pd.read_parquet(ws.dir / "tables" / "examples.parquet")
    np.testing.assert_array_equal(again.rt_ref1, want)


def test_probe_images_from_bank_else_dataset_else_no_grids(run, tmp_path, monkeypatch):
    ws = open_workspace(run, **QUIET)
    data = load_rt(ws.store)
    with h5py.File(ws.bank, "r") as f:
        stored = f["images"][:]
        source = f["probe_source"][:]
    got = probe_images(ws, data)
    assert got.note is None and np.array_equal(got.images, stored) and got.images.dtype == np.uint8
    assert set(got.sources) == {"source_index"} and np.array_equal(got.sources["source_index"], source)
    with h5py.File(ws.bank, "a") as f:  # a bank made before the images and sources were kept
        del f["images"], f["probe_source"]
    got = probe_images(ws, data)  # the dataset, checksum-checked
    assert got.note is None and np.array_equal(got.images, stored)
    assert np.array_equal(got.sources["source_index"], source)

    def gone(*_a, **_k):
        raise UserError("the dataset is not here")

    monkeypatch.setattr(art.Run, "load_dataset", gone)
    res = examples_for_workspace(ws, Outputs(ws.dir), opts=ExampleOptions(progress=False), **QUIET)
    assert any("no probe images" in n and "not here" in n for n in res["notes"])
    assert not any("hardest" in f for f in res["figures"]) and len(res["figures"]) == 3
    # a subset run whose sources nobody records: no column, rather than a wrong one
    assert "source_index" not in pd.read_parquet(res["table"]).columns


def test_archive_store_is_read_not_upgraded(run, tmp_path):
    store = run / "inspect" / "rt.zarr"
    make_old_style(store)
    metas = {p: p.read_bytes() for p in store.rglob("zarr.json")}
    work = tmp_path / "work"
    invoke("examples", run, "--work", work, "--no-progress", "--setup", "supervised")
    assert {p: p.read_bytes() for p in store.rglob("zarr.json")} == metas
    assert storedims.needs_upgrade(store)
    assert len(pd.read_parquet(work / "tables" / "examples.parquet")) == 24


def test_export_netcdf_and_parquet(run, tmp_path):
    out = invoke("export", run, "--to", "netcdf", "--no-progress")
    nc = run / "inspect" / "rt.nc"
    assert f"exported: {nc}" in out
    data = load_rt(run / "inspect" / "rt.zarr")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for s, d in data.items():
            with xr.open_dataset(nc, group=s, engine="h5netcdf") as ds:
                assert ds.correct.dims == storedims.FULL_DIMS and ds.correct.dtype == np.uint8
                assert np.array_equal(ds.correct.values[..., 0], d.correct)
                assert np.array_equal(ds.p_true.values[..., 0], d.p_true, equal_nan=True)
                assert np.array_equal(ds.seed, d.seeds) and np.array_equal(ds.label, d.labels)
                assert "correct.where(done == 1)" in ds.correct.attrs["valid_where"]
                enc = ds.correct.encoding
                assert enc["zlib"] and enc["chunksizes"] == (1, 1, *d.correct.shape[2:], ds.sizes["view"])
    target = tmp_path / "copy.parquet"
    out = invoke("export", run, "--to", "parquet", "--out", target)
    assert "computing the per-example table" in out
    assert pd.read_parquet(target).equals(pd.read_parquet(run / "inspect" / "tables" / "examples.parquet"))
    r = CliRunner().invoke(cli, ["export", str(run), "--to", "parquet", "--out", str(target)])
    assert r.exit_code != 0 and "pass --force to replace it" in str(r.exception)  # refused, not replaced
    assert "computing" not in invoke("export", run, "--to", "parquet", "--out", target, "--force")  # current
    g = zarr.open_group(str(run / "inspect" / "rt.zarr"), mode="a", use_consolidated=False)
    g["simclr/done"][0, 2] = 0  # the store changed: the table is made again
    assert "computing" in invoke("export", run, "--to", "parquet")
    r = CliRunner().invoke(cli, ["export", str(run), "--to", "netcdf", "--out", str(run / "inspect" / "rt.zarr")])
    assert r.exit_code != 0 and "the r_t store itself" in str(r.exception)
    # a table of some setups only is not the store's table: the export makes the whole one
    invoke("examples", run, "--setup", "supervised", "--no-progress")
    assert set(pd.read_parquet(run / "inspect" / "tables" / "examples.parquet").setup) == {"supervised"}
    assert "computing" in invoke("export", run, "--to", "parquet", "--out", target, "--force")
    assert set(pd.read_parquet(target).setup) == set(SETUPS)


def test_export_of_an_h5_archive_leaves_no_temp_and_the_users_table_alone(run, tmp_path):

    # an .h5 archive (HDF5 hands attributes back as numpy scalars) exports like a Zarr store
    h5 = run / "inspect" / "rt.h5"
    rt(run, store=h5)
    nc = tmp_path / "a.nc"
    stale = tmp_path / ".a.nc.killed01.tmp"  # what a killed export leaves
    stale.write_bytes(b"partial")
    invoke("export", run, "--to", "netcdf", "--store", h5, "--out", nc, "--no-progress")
    assert not stale.exists()
    with h5py.File(h5) as f:
        version = int(f.attrs["schema_version"])
    with xr.open_dataset(nc, engine="h5netcdf") as root:
        assert root.attrs["schema_version"] == version
    for s, d in load_rt(h5).items():
        with xr.open_dataset(nc, group=s, engine="h5netcdf") as ds:
            assert np.array_equal(ds.correct.values[..., 0], d.correct)
    # a work table made with other options is the user's: exported aside, never replaced
    invoke("examples", run, "--no-progress", "--start-epoch", "0")
    table = run / "inspect" / "tables" / "examples.parquet"
    mine = table.read_bytes()
    (tmp_path / ".d.parquet.killed01.tmp").write_bytes(b"partial")
    work_before = sorted(p.name for p in (run / "inspect").iterdir())
    out = invoke("export", run, "--to", "parquet", "--out", tmp_path / "d.parquet", "--no-progress")
    assert table.read_bytes() == mine and "per-example measures" not in out
    assert not (tmp_path / ".d.parquet.killed01.tmp").exists()
    assert sorted(p.name for p in (run / "inspect").iterdir()) == work_before  # computed elsewhere
    assert read_meta(tmp_path / "d.parquet")["options"]["start_epoch"] == em.DEFAULT_START_EPOCH != 0
    r = CliRunner().invoke(cli, ["export", str(run), "--to", "parquet"])
    assert r.exit_code != 0 and "was made with other options" in str(r.exception)
    assert table.read_bytes() == mine
    # the defaults' own reference epochs, given by name, are the default options: reused
    chosen = read_meta(tmp_path / "d.parquet")["ref_epochs"]
    invoke("examples", run, "--no-progress", "--ref-epochs", ",".join(map(str, chosen)))
    assert read_meta(table)["options"]["ref_epochs"] == chosen and read_meta(table)["same_as_defaults"]
    mine = table.read_bytes()
    out = invoke("export", run, "--to", "parquet", "--no-progress")
    assert "computing" not in out and table.read_bytes() == mine
    invoke("examples", run, "--no-progress", "--ref-epochs", ",".join(map(str, chosen)), "--start-epoch", "0")
    assert "same_as_defaults" not in read_meta(table)  # another option: the user's table
    invoke("examples", run, "--no-progress", "--ref-epochs", str(chosen[0]))  # others: the user's
    assert read_meta(table)["options"]["ref_epochs"] == [chosen[0]] and "same_as_defaults" not in read_meta(table)
    r = CliRunner().invoke(cli, ["export", str(run), "--to", "parquet"])
    assert r.exit_code != 0 and "was made with other options" in str(r.exception)
    # a lock file or the representation cache is never an export's target, --force or not
    for target in (run / "inspect" / "rt.zarr.lock", run / "inspect" / "features.zarr" / "x.nc"):
        r = CliRunner().invoke(cli, ["export", str(run), "--to", "netcdf", "--out", str(target), "--force"])
        assert r.exit_code != 0 and "choose another path" in str(r.exception), target


def test_a_missing_package_is_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow now fails
    with pytest.raises(UserError, match="needs the Python package pyarrow: pip install pyarrow"):
        need("pyarrow", "the Parquet table")


def _setup(name, correct, epochs, targets=None):
    s, e, m, k = correct.shape
    labels = np.arange(k) % 3
    return SetupRt(setup=name, correct=correct.astype(np.uint8), p_true=correct * 0.6 + 0.2,
                   valid=np.ones((s, e), bool), seeds=np.arange(s), epochs=np.asarray(epochs),
                   labels=labels, targets=labels if targets is None else targets,
                   probe_indices=np.arange(k) + 100)


def test_run_examples_columns_on_hand_built_arrays(tmp_path):
    rng = np.random.default_rng(0)
    # image 0, in every seed and replay: right at epoch 1, forgotten at 2, learned for good at 4
    a = (rng.random((3, 6, 2, 5)) < np.linspace(0, 1, 6)[None, :, None, None]).astype(np.uint8)
    a[:, :, :, 0] = np.array([0, 1, 0, 0, 1, 1])[None, :, None]
    b = np.ones((3, 4, 1, 5), np.uint8)  # always right: learned at its first epoch
    data = {"simclr": _setup("simclr", a, [0, 1, 2, 3, 4, 5]),
            "random_labels": _setup("random_labels", b, [0, 2, 4, 6], targets=np.array([2, 0, 1, 1, 0]))}
    res = run_examples(data, Outputs(tmp_path), ExampleOptions(ref_epochs=(1, 5), n_grid=4, progress=False),
                       images=np.zeros((5, 3, 8, 8), np.uint8), class_names=["a", "b", "c"])
    df = pd.read_parquet(tmp_path / "tables" / "examples.parquet")
    first = df[(df.setup == "simclr") & (df.probe == 0)].iloc[0]
    assert first.first_learned_median == 4 and first.forgetting_mean == 1 and first.dataset_index == 100
    assert first.class_name == "a" and first.never_learned_share == 0
    rl = df[df.setup == "random_labels"]
    assert (rl.first_learned_median == 2).all() and (rl.rt_ref1 == 1).all() and (rl.rt_ref5 == 1).all()
    assert rl.target.tolist() == [2, 0, 1, 1, 0]
    assert any("examples_hardest_random_labels" in f for f in res["figures"])
    with pytest.raises(ValueError, match="images must be uint8"):
        run_examples(data, Outputs(tmp_path), ExampleOptions(progress=False), images=np.zeros((4, 3, 8, 8)))
    with pytest.raises(UserError, match="--start-epoch"):
        run_examples(data, Outputs(tmp_path), ExampleOptions(start_epoch=-1, progress=False))


def test_start_epoch_past_a_setups_evaluated_epochs_is_noted_not_ranked(tmp_path):
    a = np.ones((2, 4, 1, 5), np.uint8)
    a[:, :, :, :2] = 0  # images 0 and 1 never right: the hardest
    b = a.copy()
    valid = np.ones((2, 4), bool)
    valid[:, 2:] = False  # supervised planned epochs 0-3, evaluated only 0 and 1
    data = {"simclr": _setup("simclr", a, [0, 1, 2, 3]),
            "supervised": dataclasses.replace(_setup("supervised", b, [0, 1, 2, 3]), valid=valid)}
    opts = ExampleOptions(start_epoch=2, ref_epochs=(1,), n_grid=2, progress=False)
    res = run_examples(data, Outputs(tmp_path), opts, images=np.zeros((5, 3, 8, 8), np.uint8))
    assert any("no evaluated epoch >= 2 (--start-epoch) for supervised (last evaluated epoch: "
               "supervised 1)" in n for n in res["notes"])
    df = pd.read_parquet(tmp_path / "tables" / "examples.parquet")
    sup, sim = df[df.setup == "supervised"], df[df.setup == "simclr"]
    assert sup.hardness_rank.isna().all() and sup.correctness.isna().all()
    assert sorted(sim.hardness_rank) == [0, 1, 2, 3, 4] and set(sim.probe[sim.hardness_rank < 2]) == {0, 1}
    assert not any("supervised" in f for f in res["figures"] if "hardest" in f or "easiest" in f)
    assert any("examples_hardest_simclr" in f for f in res["figures"])
    assert "supervised" in read_meta(tmp_path / "tables" / "examples.parquet")["note"].split("NA")[0]
    with pytest.raises(UserError, match=r"--start-epoch 4 is past the last evaluated epoch of every "
                                        r"setup \(simclr 3, supervised 1\)"):
        run_examples(data, Outputs(tmp_path), dataclasses.replace(opts, start_epoch=4))


def test_non_finite_p_true_names_setup_seed_and_epoch(tmp_path):
    a = np.ones((3, 4, 1, 5), np.uint8)
    d = dataclasses.replace(_setup("supervised", a, [0, 1, 4, 9]), seeds=np.array([3, 7, 11]))
    d.p_true[1, 2, 0, 3] = np.nan  # seed 7, epoch 4
    with pytest.raises(UserError, match="^supervised: p_true is not finite at seed 7 epoch 4, "):
        run_examples({"supervised": d}, Outputs(tmp_path), ExampleOptions(progress=False))


def test_the_table_is_stamped_with_the_store_state_before_reading(run, monkeypatch):
    from ssl_dynamics.inspect import analyses as an  # examples_for_workspace reads through it
    from ssl_dynamics.inspect.rtdata import store_state

    ws = open_workspace(run, **QUIET)
    before = store_state(ws.store)
    real = an.load_rt

    def read_then_change(*args, **kwargs):  # `inspect rt` adds a checkpoint while we read
        data = real(*args, **kwargs)
        zarr.open_group(str(ws.store), mode="a", use_consolidated=False)["simclr/done"][0, 2] = 0
        return data

    monkeypatch.setattr(an, "load_rt", read_then_change)
    opts = ExampleOptions(progress=False)
    examples_for_workspace(ws, Outputs(ws.dir), ["supervised"], opts=opts, **QUIET)
    table = ws.dir / "tables" / "examples.parquet"
    assert read_meta(table)["store_state"] == before != store_state(ws.store)
    # data read earlier (as `inspect all` passes it) is stamped only while the store still holds it
    data = real(ws.store, ["supervised"])
    examples_for_workspace(ws, Outputs(ws.dir), opts=opts, data=data, **QUIET)
    assert read_meta(table)["store_state"] == store_state(ws.store)
    zarr.open_group(str(ws.store), mode="a", use_consolidated=False)["supervised/done"][0, 2] = 0
    examples_for_workspace(ws, Outputs(ws.dir), opts=opts, data=data, **QUIET)
    assert read_meta(table)["store_state"] is None


def _counted(counts, s=2, m=2, k=4, seed=0):
    """uint8 [s, E, m, k]: at epoch index e exactly counts[e] of the s*m*k indicators are 1,
    scattered over seeds, replays and images by a fixed shuffle per epoch."""
    rng = np.random.default_rng(seed)
    out = np.zeros((s, len(counts), m, k), np.uint8)
    for e, c in enumerate(counts):
        flat = np.zeros(s * m * k, np.uint8)
        flat[rng.permutation(s * m * k)[:c]] = 1
        out[:, e] = flat.reshape(s, m, k)
    return out


def test_rt_ref_columns_use_the_aligned_epoch_index_not_its_number(tmp_path):
    # 2 seeds x 2 replays x 4 images = 16 indicators per epoch; mean r_t = count / 16
    ref = _counted([0, 2, 5, 8, 12, 15], seed=1)  # epochs 0 1 2 5 10 20: .0, .125, .3125, .5, ...
    other = _counted([1, 0, 3, 4, 7, 9, 13], seed=2)  # .0625, 0, .1875, .25, .4375, .5625, .8125
    simclr = dataclasses.replace(_setup("simclr", ref, [0, 1, 2, 5, 10, 20]),
                                 correct_second=1 - ref)  # the first view only counts
    data = {"simclr": simclr, "supervised": _setup("supervised", other, [0, 3, 6, 9, 12, 15, 18])}
    run_examples(data, Outputs(tmp_path), ExampleOptions(ref_epochs=(1, 2, 5), progress=False))
    df = pd.read_parquet(tmp_path / "tables" / "examples.parquet")
    assert [c for c in df.columns if c.startswith("rt_ref")] == ["rt_ref1", "rt_ref2", "rt_ref5"]
    # eq. 4.4 by hand (epoch 0 is no candidate; ties go to the earliest epoch):
    # ref 1 (.125)  -> supervised .1875 at epoch 6 (index 2; the init's .0625 is as close, but excluded)
    # ref 2 (.3125) -> .25 at epoch 9 (index 3)
    # ref 5 (.5)    -> .4375 at epoch 12 (index 4; .5625 at epoch 15 is as close, but later)
    aligned = {"simclr": {1: 1, 2: 2, 5: 5}, "supervised": {1: 6, 2: 9, 5: 12}}
    for s, d in data.items():
        rows = df[df.setup == s].sort_values("probe")
        n_s, _, n_m, n_k = d.correct.shape
        for t, epoch in aligned[s].items():
            e = list(d.epochs).index(epoch)
            want = [sum(int(d.correct[i, e, j, k]) for i in range(n_s) for j in range(n_m)) / (n_s * n_m)
                    for k in range(n_k)]
            np.testing.assert_allclose(rows[f"rt_ref{t}"].to_numpy(), want, rtol=0, atol=1e-12,
                                       err_msg=f"{s} rt_ref{t}")
    summary = json.loads((tmp_path / "tables" / "examples_summary.json").read_text())["rows"]
    assert {r["setup"]: [r["epoch_ref1"], r["epoch_ref2"], r["epoch_ref5"]] for r in summary} == \
        {"simclr": [1, 2, 5], "supervised": [6, 9, 12]}


def test_docs_describe_every_column():
    import re
    from pathlib import Path

    text = (Path(__file__).parents[1] / "docs" / "run-directory.md").read_text()
    for col in TABLE_COLUMNS + ("rt_ref<t>",):
        assert f"| `{col}` |" in text, col
    measures = re.findall(r"^    - (\w+):", em.example_summary.__doc__, flags=re.M)
    assert len(measures) >= 12 and set(measures) <= set(TABLE_COLUMNS)


def test_rank_agreement_counts_censored_images_and_says_when_ties_dominate():
    from scipy.stats import spearmanr

    from ssl_dynamics.inspect.examples import _agreement

    # 6 images; "never" is epoch 4 (last evaluated epoch 3 + 1). In a, images 3-5 were never
    # learned by more than half of the pairs; image 2 (exactly half: its median of an even
    # count lies midway, 3.5) is not censored; image 2 has a NaN in b anyway
    a = {"first_learned_median": np.array([1.0, 2.0, 3.5, 4.0, 4.0, 4.0]),
         "never_learned_share": np.array([0.0, 0.1, 0.5, 0.6, 0.9, 1.0])}
    b = {"first_learned_median": np.array([1.0, 3.0, np.nan, 2.0, 4.0, 4.0]),
         "never_learned_share": np.array([0.0, 0.0, 0.0, 0.2, 0.6, 0.7])}
    notes = []
    rho, rows = _agreement({"a": None, "b": None}, {"a": a, "b": b}, notes)
    keep = [0, 1, 3, 4, 5]
    want = spearmanr(a["first_learned_median"][keep], b["first_learned_median"][keep]).statistic
    assert rows == [{"setup_a": "a", "setup_b": "b", "spearman_rho": pytest.approx(want),
                     "p_value": pytest.approx(spearmanr(a["first_learned_median"][keep],
                                                        b["first_learned_median"][keep]).pvalue),
                     "n_images": 5, "censored_a": 3, "censored_b": 2}]
    assert rho[0, 1] == rho[1, 0] == pytest.approx(want)
    assert len(notes) == 1 and "rests mostly on ties: 3 of the 5 images" in notes[0]
    # fewer censored than half: no note
    b2 = {**b, "never_learned_share": np.zeros(6)}
    a2 = {**a, "never_learned_share": np.array([0, 0, 0, 0.5, 0.5, 0.6])}  # 0.5: not censored
    notes = []
    _agreement({"a": None, "b": None}, {"a": a2, "b": b2}, notes)
    assert notes == []
