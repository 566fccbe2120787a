"""Named dimensions and coordinates: the r_t store, its HDF5 export and analysis.h5 as xarray
reads them, the in-place upgrade of older stores, and a growing seed axis."""
import json
import shutil
import warnings

import numpy as np
import pytest
import xarray as xr
import zarr

from _util import make_old_style, rt
from ssl_dynamics.inspect import storedims
from ssl_dynamics.inspect.outputs import Outputs
from ssl_dynamics.inspect.rtdata import export_h5, load_rt, open_store
from ssl_dynamics.inspect.store import RtStore


def _same_as_reader(ds, d):
    """The xarray Dataset of one setup holds exactly what the toolkit's reader returns."""
    assert ds.correct.dims == storedims.FULL_DIMS and ds.done.dims == ("seed", "epoch")
    assert ds.correct.dtype == np.uint8 and ds.p_true.dtype == np.float32
    assert np.array_equal(ds.correct.values[..., 0], d.correct)
    assert np.array_equal(ds.p_true.values[..., 0], d.p_true, equal_nan=True)
    assert np.array_equal(ds.done.values.astype(bool), d.valid)
    assert np.array_equal(ds.targets.values, d.targets)
    assert np.array_equal(ds.seed.values, d.seeds) and np.array_equal(ds.epoch.values, d.epochs)
    assert np.array_equal(ds.probe.values, d.probe_indices)
    assert np.array_equal(ds.label.values, d.labels) and "label" in ds.coords
    assert ds.replay.size == d.correct.shape[2]
    if d.correct_second is not None:
        assert ds.view.values.tolist() == [0, 1]
        assert np.array_equal(ds.correct.sel(view=1).values, d.correct_second)


def test_xarray_view_matches_the_reader_for_zarr_and_h5(tiny_rt, tmp_path):
    path = tiny_rt / "inspect" / "rt.zarr"
    data = load_rt(path)
    h5 = tmp_path / "rt.h5"
    export_h5(RtStore(path, writable=False), h5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # neither a consolidation nor a phony-dims warning
        for s, d in data.items():
            with xr.open_zarr(path, group=s) as ds:
                _same_as_reader(ds, d)
                assert ds.attrs["seeds"] == [0, 1]
            with xr.open_dataset(h5, group=s, engine="h5netcdf") as ds:
                _same_as_reader(ds, d)
                # the attributes the Zarr store has, as plain values (not JSON text)
                assert ds.attrs["precision"] == "fp32" and list(ds.attrs["seeds"]) == [0, 1]
                assert list(ds.attrs["epochs"]) == d.epochs.tolist()
    assert load_rt(h5)["simclr"].correct.shape == data["simclr"].correct.shape
    with open_store(path) as zs, open_store(h5) as hs:  # the reader gets them back whole
        for s in data:
            assert hs.attrs(s) == zs.attrs(s) and isinstance(hs.attrs(s)["setup_config"], dict)


def test_an_h5_archive_made_with_json_attributes_still_reads(tiny_rt, tmp_path):
    import h5py

    path = tiny_rt / "inspect" / "rt.zarr"
    h5 = tmp_path / "rt.h5"
    export_h5(RtStore(path, writable=False), h5)
    with open_store(path) as zs:
        want = {s: zs.attrs(s) for s in zs.setups()}
    with h5py.File(h5, "a") as f:  # the older encoding: every setup attribute as JSON text
        del f.attrs["attrs_encoding"]
        for s in want:
            for k, v in want[s].items():
                f[s].attrs[k] = json.dumps(v)
    with open_store(h5) as hs:
        assert {s: hs.attrs(s) for s in want} == want
    assert load_rt(h5)["simclr"].seeds.tolist() == [0, 1]


def _chunk_files(store):
    """path -> (bytes, mtime_ns) of every chunk file (everything but metadata)."""
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in store.rglob("*")
            if p.is_file() and p.name != "zarr.json"}


def test_old_store_opens_and_rt_upgrades_it_without_reevaluation(tiny_rt, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_rt, run)
    store = run / "inspect" / "rt.zarr"
    before = load_rt(store)
    make_old_style(store)
    assert storedims.needs_upgrade(store)
    old = load_rt(store)  # the toolkit's reader opens the old layout
    for s in before:
        assert np.array_equal(old[s].correct, before[s].correct)
    with pytest.raises(KeyError), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        xr.open_zarr(store, group="simclr")  # xarray cannot: no dimension names
    chunks = _chunk_files(store)
    done = {s: zarr.open_group(str(store), mode="r", use_consolidated=False)[f"{s}/done"][:] for s in before}
    assert rt(run, device="cpu")["evaluated"] == 0  # opened for writing: upgraded, nothing redone
    assert not storedims.needs_upgrade(store)
    after = _chunk_files(store)
    assert {p: v for p, v in after.items() if p in chunks} == chunks
    g = zarr.open_group(str(store), mode="r", use_consolidated=False)
    for s in before:
        assert np.array_equal(g[f"{s}/done"][:], done[s])
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with xr.open_zarr(store, group=s) as ds:
                _same_as_reader(ds, before[s])


def test_growing_seeds_keeps_the_seed_coordinate_in_step(tmp_path):
    path = tmp_path / "s.zarr"
    store = RtStore(path)
    store.init_probes(np.array([7, 3, 9, 1]), np.array([0, 1, 0, 1]), "bank")
    targets = np.array([1, 0, 1, 0])
    attrs = {"setup_config": {"name": "supervised"}}
    assert store.ensure_setup("supervised", [4, 2], 3, 2, 4, 1, targets, attrs) == [4, 2]
    store.write("supervised", 1, 2, np.ones((2, 4, 1)), np.full((2, 4, 1), 0.5))
    assert not storedims.needs_upgrade(path)
    store = RtStore(path)
    assert store.ensure_setup("supervised", [2, 4, 9], 3, 2, 4, 1, targets, attrs) == [4, 2, 9]
    assert not storedims.needs_upgrade(path)  # consolidated again after the resize
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with xr.open_zarr(path, group="supervised") as ds:
            assert ds.seed.values.tolist() == [4, 2, 9] and ds.sizes["seed"] == 3
            assert ds.epoch.values.tolist() == [0, 1, 2] and ds.probe.values.tolist() == [7, 3, 9, 1]
            assert ds.done.values.tolist() == [[0, 0, 0], [0, 0, 1], [0, 0, 0]]
            assert ds.correct.sel(seed=2, epoch=2).values.all()
            assert np.isnan(ds.p_true.sel(seed=9).values).all()  # zarr's fill value, not masked
    meta = json.loads((path / "supervised" / "seed" / "zarr.json").read_text())
    assert meta["dimension_names"] == ["seed"] and meta["shape"] == [3]


def test_writes_after_growing_the_seeds_reach_the_new_seed(tmp_path):
    """write() keeps array handles; growing the seed axis through the same store object
    must not leave it writing through handles of the old shape."""
    store = RtStore(tmp_path / "s.zarr")
    store.init_probes(np.arange(4), np.zeros(4, dtype=int), "bank")
    targets = np.zeros(4, dtype=int)
    store.ensure_setup("supervised", [0], 2, 1, 4, 1, targets, {})
    store.write("supervised", 0, 1, np.ones((1, 4, 1)), np.full((1, 4, 1), 0.25))
    assert store.ensure_setup("supervised", [0, 5], 2, 1, 4, 1, targets, {}) == [0, 5]
    store.write("supervised", 1, 0, np.ones((1, 4, 1)), np.full((1, 4, 1), 0.75))
    back = RtStore(tmp_path / "s.zarr", writable=False).read("supervised")
    assert back["done"].tolist() == [[0, 1], [1, 0]]
    assert back["p_true"][1, 0].tolist() == [[[0.75]] * 4] and back["p_true"][0, 1, 0, 0, 0] == 0.25


def test_opening_for_writing_waits_for_the_stores_lock(tmp_path):
    """Processes starting on one new store (shards) open it under its lock: unlocked, two
    of them could both find it absent and both create it, and the later one fails."""
    import subprocess
    import sys
    import time

    from ssl_dynamics import artifacts as art

    path = tmp_path / "s.zarr"
    code = ("import zarr; from ssl_dynamics.inspect.store import RtStore; print('ready', flush=True); "
            f"RtStore({str(path)!r}); print('open', flush=True)")
    with art.file_lock(path.with_name(path.name + ".lock")):
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(1.0)  # opening takes ~50 ms: long enough, were it not waiting
        assert proc.poll() is None and not (path / "zarr.json").exists()  # not even created
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and out.strip() == "open"


def test_stale_consolidated_metadata_is_detected(tmp_path):
    path = tmp_path / "s.zarr"
    store = RtStore(path)
    store.init_probes(np.arange(3), np.zeros(3, dtype=int), "bank")
    store.ensure_setup("none", [0], 2, 1, 3, 1, np.zeros(3, dtype=int), {})
    assert not storedims.needs_upgrade(path)
    zarr.open_group(str(path), mode="a", use_consolidated=False)["none/done"].resize((2, 2))
    assert storedims.needs_upgrade(path)  # a resize without consolidation
    RtStore(path)  # opening for writing consolidates again
    assert not storedims.needs_upgrade(path)


def test_analysis_h5_arrays_with_named_dimensions(tmp_path):
    out = Outputs(tmp_path)
    out.write_arrays("g", {"a/r": np.ones((2, 3)), "a/n": np.arange(2), "b/x": np.zeros(4)},
                     {"note": "n"}, dims={"a/r": ("epoch", "probe"), "a/n": ("epoch",)},
                     coords={"a/epoch": np.array([1, 5]), "a/probe": np.array([9, 8, 7])})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with xr.open_dataset(out.analysis, group="g/a", engine="h5netcdf") as ds:
            assert ds.r.dims == ("epoch", "probe") and ds.epoch.values.tolist() == [1, 5]
            assert ds.probe.values.tolist() == [9, 8, 7] and ds.n.dims == ("epoch",)
    with pytest.raises(ValueError, match="axes but 1 dimension"):
        out.write_arrays("h", {"r": np.ones((2, 3))}, dims={"r": ("epoch",)}, coords={"epoch": [1, 2]})
    with pytest.raises(ValueError, match="no coordinate 'probe'"):
        out.write_arrays("h", {"r": np.ones((2, 3))}, dims={"r": ("epoch", "probe")}, coords={"epoch": [1, 2]})


def test_analysis_h5_groups_of_the_analyses_open_with_named_dims(tmp_path):
    from test_analyses import CLASSES, make_setup

    from ssl_dynamics.inspect.binomial import run_binomial
    from ssl_dynamics.inspect.classes import run_classes
    from ssl_dynamics.inspect.dynamics import run_dynamics

    data = {"simclr": make_setup("simclr", 0, k=40), "supervised": make_setup("supervised", 1, k=40)}
    out = Outputs(tmp_path)
    run_dynamics(data, out, ref_epochs=[1, 5, 1])  # a repeated reference epoch counts once
    run_binomial(data, out, draws=2)
    run_classes(data, out, CLASSES)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with xr.open_dataset(out.analysis, group="dynamics/supervised", engine="h5netcdf") as ds:
            assert ds.r_t.dims == ("epoch", "probe") and ds.sorted_r_t.dims == ("epoch", "rank")
            assert np.array_equal(ds.epoch.values, data["supervised"].epochs)
            assert np.array_equal(ds.probe.values, data["supervised"].probe_indices)
        with xr.open_dataset(out.analysis, group="dynamics/alignment", engine="h5netcdf") as ds:
            assert ds.ref_epoch.values.tolist() == [1, 5] and ds.simclr_epoch.dims == ("ref_epoch",)
        with xr.open_dataset(out.analysis, group="binomial/simclr", engine="h5netcdf") as ds:
            assert ds.r_tilde0.dims == ("epoch", "probe")
        with xr.open_dataset(out.analysis, group="classes/simclr", engine="h5netcdf") as ds:
            assert ds.class_mean_r_t.dims == ("epoch", "class")
            assert ds["class"].values.tolist() == CLASSES


def test_archive_attributes_come_back_as_they_were_written(tmp_path):
    """Every value a setup's attributes may hold reads back with its value and type, whatever
    it looks like (a string that reads as JSON, a big int, a one-element or empty list)."""
    import h5py

    from ssl_dynamics.inspect.rtdata import _from_h5, portable_attrs

    values = {"precision": "fp32", "null_word": "null", "digits": "12", "list_text": "[1,2]",
              "quoted": '"hi"', "broken": "{oops", "nested": [[1, 2], [3]], "mixed": [1, 2.5],
              "bools": [True, 2], "big": 2**70, "one": [0], "none_yet": [], "config": {"x": 1},
              "int": 3, "float": 2.5, "flag": True, "floats": [1.0, 2.0], "nothing": None,
              "seeds": [0, 1, 2]}
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f.attrs.update(portable_attrs(values))
        assert f.attrs["seeds"].dtype == np.int64 and f.attrs["precision"] == "fp32"  # plain values
    with h5py.File(tmp_path / "a.h5", "r") as f:
        back = {k: _from_h5(v) for k, v in f.attrs.items()}
    for k, v in values.items():
        assert back[k] == v and type(back[k]) is type(v), (k, v, back[k])
