"""`inspect examples` and `inspect export`: the per-example table for a workspace, and
portable copies (netCDF of the r_t store, Parquet of the table) for people without the toolkit.

Only the work folder (or --out) is ever written. An existing --out is replaced only with
`force`, and never when it is a file of a run (checkpoints/, run.json, the label
permutation), a bank, an r_t store or a work folder's own records (analysis.h5, ...), of
this run or any other.
A Zarr store made before named dimensions existed is upgraded in place when it belongs to the
work folder (or was named with --store) and can be written; an archive's store on read-only
media is read as it is.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .. import artifacts as art
from ..deps import need
from ..errors import UserError
from ..progress import bar
from . import bank as bank_mod
from . import storedims
from .examples import TABLE, ExampleOptions, read_meta, run_examples
from .outputs import OWN_FILES, Outputs
from .rtdata import SetupRt, open_store, portable_attrs, store_state
from .store import RtStore, work_path
from .workspace import IDENTITY_FILE, STORE_NAMES, Workspace

FORMATS = ("netcdf", "parquet")
NETCDF_LEVEL = 4  # zlib level: most of the gain of 9 at a fraction of the time


def store_for_analysis(ws: Workspace, store: str | Path | None, echo=print) -> Path:
    """The store the analyses read, upgraded to named dimensions first when it is ours
    (in the work folder, or given explicitly) and writable."""
    path = ws.store_for_reading(store)
    if path.suffix != ".zarr" or not path.is_dir():
        return path
    ours = store is not None or ws.dir.resolve() in path.resolve().parents
    if ours and os.access(path, os.W_OK) and os.access(path.parent, os.W_OK) \
            and storedims.needs_upgrade(path):
        RtStore(path, writable=True)  # opening for writing upgrades it
        echo(f"{path}: added named dimensions and coordinates (no re-evaluation)")
    return path


@dataclass(frozen=True)
class ProbeInputs:
    """What phase two knows of the store's probe images, in the store's probe order."""
    images: np.ndarray | None  # uint8 [K, 3, H, W]; None: not found (`note` says why)
    note: str | None
    sources: dict[str, np.ndarray]  # source_index [K], source_file [K] as far as known


def probe_images(ws: Workspace, data: dict[str, SetupRt], data_opts: dict | None = None) -> ProbeInputs:
    """The probe images and where they come from: from the bank when it stored them (newer
    banks), else from the run's dataset (checksum-checked)."""
    idx = np.asarray(next(iter(data.values())).probe_indices, dtype=np.int64)
    images, sources = None, {}
    bank = ws.existing_bank()
    if bank is not None:
        have, stored, recorded = bank_mod.read_probes(bank)
        if np.array_equal(have, idx):
            images, sources = stored, recorded
    whole = "[" not in str(ws.run.meta["dataset"].get("name"))  # no train_subset was taken
    if not sources and whole and not ws.run.cfg.dataset.startswith("imagefolder:"):
        sources = {"source_index": idx}  # the run's training set is the whole split
    if images is not None and sources:
        return ProbeInputs(images, None, sources)
    try:
        ds = ws.run.load_dataset((data_opts or {}).get("dataset"), (data_opts or {}).get("data_root"))
    except UserError as e:
        why = f"the bank does not store them and the dataset cannot be loaded: {e}"
        return ProbeInputs(images, None if images is not None else why, sources)
    if len(idx) and int(np.max(idx)) >= len(ds.train_x):
        return ProbeInputs(images, None if images is not None else
                           "the store's probe indices do not fit the run's dataset", sources)
    if not sources:
        sources = {"source_index": ds.source_index()[idx]}
        if ds.train_files is not None:
            sources["source_file"] = np.array([ds.train_files[i] for i in idx], dtype=object)
    return ProbeInputs(ds.train_x.numpy()[idx] if images is None else images, None, sources)


def examples_for_workspace(ws: Workspace, out: Outputs, setups: list[str] | None = None,
                           store: str | Path | None = None, opts: ExampleOptions = ExampleOptions(),
                           data_opts: dict | None = None, echo=print,
                           data: dict[str, SetupRt] | None = None) -> dict:
    """`inspect examples`: read the store (unless `data` was read from it already), find
    the probe images, run `run_examples`. The table is stamped with the store's state taken
    before reading it, so a store that changes meanwhile makes it out of date, never current;
    `data` read earlier is stamped only while the store's evaluated checkpoints are still
    those of `data` (else not at all: `export` then makes the table again)."""
    path = store_for_analysis(ws, store, echo)
    state = store_state(path)
    if data is None:
        from .analyses import read_noted

        data = read_noted(ws, path, setups, out)
    elif not _still_holds(path, data):
        state = None
    probes = probe_images(ws, data, data_opts)
    try:
        return run_examples(data, out, opts, probes.images, ws.run.classes, probes.note, state,
                            probes.sources)
    except ValueError as e:
        raise UserError(str(e)) from None


def _still_holds(path: Path, data: dict[str, SetupRt]) -> bool:
    """Whether the store at `path` has the seeds, epochs and evaluated checkpoints of `data`
    (a checkpoint evaluated again in place is not seen)."""
    with open_store(path) as st:
        have = st.setups()
        for s, d in data.items():
            if s not in have:
                return False
            attrs = st.attrs(s)
            if (list(attrs.get("seeds", [])) != [int(x) for x in d.seeds]
                    or list(attrs.get("epochs", [])) != [int(e) for e in d.epochs]
                    or not np.array_equal(st.done(s), np.asarray(d.valid, dtype=bool))):
                return False
    return True


def export(ws: Workspace, to: str, target: str | Path | None = None, store: str | Path | None = None,
           data_opts: dict | None = None, progress: bool = True, echo=print, force: bool = False) -> Path:
    """`inspect export`: write a portable copy; returns its path. An existing `target` is
    refused unless `force` (the default target in the work folder is the command's own)."""
    if to not in FORMATS:
        raise UserError(f"--to {to!r}: choose one of {', '.join(FORMATS)}")
    default = ws.dir / "rt.nc" if to == "netcdf" else Outputs(ws.dir).tables / f"{TABLE}.parquet"
    target = Path(target) if target else None
    if target is not None and (link := art.broken_link(target)) is not None:  # resolve() would fail
        raise UserError(f"--out {target}: {link}; choose another path")
    if target is not None or to == "netcdf":  # checked before anything is written
        out = target or default
        own = out.resolve() == default.resolve()
        _check_target(ws, out, ws.store_for_reading(store), force or own, own)
    path = store_for_analysis(ws, store, echo)
    # nothing is written into tables/, figures/ or report/ here (refused above): their
    # writers hold the work lock, and another command's tidy would take a temporary file
    # there for a killed writer's; the default table is written by `inspect examples`
    if to == "netcdf":
        return export_netcdf(path, target or default, progress)
    return export_parquet(ws, path, target, data_opts, echo, progress)


def _check_target(ws: Workspace, target: Path, store: Path, force: bool, own: bool = False) -> None:
    """Refuse an output path that is a file the toolkit reads or writes (always: the run's
    checkpoints, run.json, the label permutation, the bank, an r_t store, the work folder's
    records and its tables/, figures/ and report/ unless `own`, the export's default), a
    folder or anything else that is not a plain file (a device, a pipe), a folder that does
    not exist, or an existing file (unless `force`)."""
    where = target.resolve()
    if target.exists() and not target.is_file() and not target.is_dir():
        raise UserError(f"--out {target} is not a plain file (a device, a pipe or a socket); "
                        f"choose another path")
    for named in ([store], [f / n for f in (ws.dir, ws.archive) for n in STORE_NAMES]):
        stores = {q.resolve() for p in named for q in (p, work_path(p))}
        if where in stores or any(s in where.parents for s in stores):
            what = "the r_t store itself" if named == [store] else "an r_t store"
            raise UserError(f"--out {target} is {what}; choose another path")
    if where in {ws.bank.resolve(), (ws.archive / "bank.h5").resolve()}:
        raise UserError(f"--out {target} is the bank; choose another path")
    if where.parent == ws.dir.resolve() and where.name in OWN_FILES:
        raise UserError(f"--out {target} is a file of the work folder; choose another path")
    if not own and Outputs(ws.dir).sweeps(where) and where.parent != ws.dir.resolve():
        raise UserError(f"--out {target} is in the work folder's tables/, figures/ or report/, "
                        f"which the analyses write; choose a path outside them")
    if where.name.endswith(".lock"):  # a store's or the bank's lock: replacing it breaks locking
        raise UserError(f"--out {target} is a lock file; choose another path")
    cache = ws.features.resolve()
    if where == cache or cache in where.parents:
        raise UserError(f"--out {target} is in the representation cache; choose another path")
    paths = ws.run.paths
    if where in {paths.run_json.resolve(), paths.random_labels.resolve()} \
            or paths.checkpoints.resolve() in where.parents:
        raise UserError(f"--out {target} is a file of the run directory; choose another path")
    if (role := toolkit_file(where, own)) is not None:  # another run's, work folder's or store's
        raise UserError(f"--out {target} is {role}; choose another path")
    if target.is_dir():
        raise UserError(f"--out {target} is a folder; give a file name")
    if target.exists() and not force:
        raise UserError(f"--out {target} exists; pass --force to replace it, or choose another path")
    if not own and not target.parent.is_dir():  # a typo in the path is not a new folder
        raise UserError(f"--out {target}: its folder {target.parent} does not exist; create it first")
    art.check_writable(target.parent)


RUN_FILES = ("run.json", "random_labels.npy")  # a run directory's own files at its top
RUN_FOLDERS = ("checkpoints", "jobs", "logs")  # and its checkpoints, job records and worker logs
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def toolkit_file(where: Path, own: bool = False) -> str | None:
    """What `where` (resolved) is to any run, work folder or store, whichever it belongs to
    ("a file of the run directory D", ...), or None: a file the toolkit reads or writes there
    is never an export's target. `own`: the export's default path, in a work folder's tables/."""
    for above in where.parents:
        if (above / "zarr.json").is_file():
            return f"inside the Zarr store {above}"
        if (above / "run.json").is_file() and (where.parent == above and where.name in RUN_FILES or any(
                above / f in where.parents for f in RUN_FOLDERS)):
            return f"a file of the run directory {above}"
        if (above / IDENTITY_FILE).is_file():  # a work folder: its records, bank, stores, outputs
            if where.parent == above and (where.name in (*OWN_FILES, "bank.h5", *STORE_NAMES)
                                          or where.name.endswith(".lock")):
                return f"a file of the work folder {above}"
            if above / "jobs" in where.parents:  # `inspect submit rt`'s records and logs
                return f"a job record of the work folder {above}"
            if not own and Outputs(above).sweeps(where):
                return f"in the tables/, figures/ or report/ of the work folder {above}, which its analyses write"
    try:
        with open(where, "rb") as f:
            hdf5 = f.read(len(HDF5_MAGIC)) == HDF5_MAGIC
    except OSError:  # not there (a new file), or unreadable: check_writable says
        return None
    if hdf5:
        import h5py

        try:
            with h5py.File(where, "r") as f:
                keys = set(f.attrs)
        except (OSError, ValueError):
            return None
        if {"fingerprint", "dataset_sha256"} <= keys:
            return "a bank"
        if "bank_fingerprint" in keys and "_NCProperties" not in keys:  # an .h5 store, not a netCDF export
            return "an r_t store (.h5)"
    return None


def export_netcdf(store: Path, target: Path, progress: bool = True) -> Path:
    """The r_t store as netCDF-4 (h5netcdf): root probe_indices/labels, one group per setup
    with named dimensions and coordinates, zlib-compressed in chunks of one checkpoint."""
    xr = need("xarray", "the netCDF export")
    need("h5netcdf", "the netCDF export")
    art.remove_stale_temps(target.parent, f".{target.name}.*.tmp")  # of a killed export
    with open_store(store) as st, art.atomic_path(target) as tmp:
        idx, labels = st.probes()
        root = xr.Dataset({"probe_indices": ("probe", idx), "labels": ("probe", labels)},
                          coords={"probe": idx}, attrs=portable_attrs(st.root_attrs()))
        root.to_netcdf(tmp, mode="w", engine="h5netcdf")
        setups = st.setups()
        pbar = bar(len(setups), "netCDF export", "setup", progress)
        for s in setups:
            ds, enc = _setup_dataset(xr, st.read(s), st.attrs(s), idx, labels)
            ds.to_netcdf(tmp, mode="a", group=s, engine="h5netcdf", encoding=enc)
            pbar.update(1)
        pbar.close()
    return target


def _setup_dataset(xr, data: dict, attrs: dict, idx, labels):
    """(xarray Dataset of one setup with named dims and coordinates, its netCDF encoding)."""
    coords = storedims.coordinate_values(attrs, idx, labels)
    variables = {name: (storedims.ARRAY_DIMS[name], data[name]) for name in storedims.ARRAY_DIMS}
    ds = xr.Dataset(variables, coords={**{d: coords[d] for d in storedims.FULL_DIMS},
                                       "label": ("probe", coords["label"])},
                    attrs=portable_attrs(attrs))
    for name in ("correct", "p_true"):
        ds[name].attrs["valid_where"] = MISSING_NOTE
    chunks = (1, 1, *data["correct"].shape[2:])
    # no _FillValue: the arrays are complete (done says which checkpoints hold data)
    enc = {name: {"_FillValue": None} for name in list(variables) + list(ds.coords)}
    for name in ("correct", "p_true"):
        enc[name].update(zlib=True, complevel=NETCDF_LEVEL, chunksizes=chunks)
    return ds, enc


# What a reader without the toolkit must know: a missing checkpoint is not a wrong answer.
MISSING_NOTE = ("done == 1: a checkpoint missing from the run has done = 0, correct = 0 and "
                "p_true = NaN; use correct.where(done == 1)")




def _work_table_meta(ws: Workspace, table: Path, echo) -> dict:
    """The work folder's table's metadata; {} when it is missing, or not Parquet: it is
    derived, so such a one is removed under the work lock (it is computed again) and the
    user told in one line. A table that cannot be read for another reason (permissions)
    is a one-line refusal, never deleted."""
    pa = need("pyarrow", "the Parquet table")
    with Outputs(ws.dir).lock():
        if not table.exists():
            return {}
        try:
            return read_meta(table)
        except (pa.ArrowInvalid, json.JSONDecodeError, OSError) as e:
            if isinstance(e, OSError) and e.errno is not None:  # permissions, I/O: not the table's
                raise UserError(f"cannot read {table}: {e.strerror or e}") from None
            # not Parquet, a damaged footer (pyarrow's OSError without an errno), or metadata
            # that is not ours
            echo(f"{table} is not a readable Parquet table; computing it again")
            table.unlink()
            return {}


def export_parquet(ws: Workspace, store: Path, target: Path | None, data_opts: dict | None,
                   echo=print, progress: bool = True) -> Path:
    """The per-example table as Parquet: the work folder's when it is current (made from
    this store's present state, all setups, default options), else computed now. A work
    table made with other options (`inspect examples --start-epoch 0`, ...) is the user's:
    it is never replaced; the default table is then computed aside for `target`."""
    out = Outputs(ws.dir)
    table = out.tables / f"{TABLE}.parquet"
    meta = _work_table_meta(ws, table, echo)
    default = ExampleOptions(progress=progress)
    made_with = {k: v for k, v in (meta.get("options") or {}).items() if k != "progress"}
    unchanged = meta.get("store_state") == store_state(store)  # one reading of the flags and records
    custom = table.exists() and not (meta.get("same_as_defaults") is True and unchanged) and \
        made_with != {k: v for k, v in asdict(default).items() if k != "progress"}
    current = not custom and unchanged and set(meta.get("aligned_epochs", {})) == set(_setups(store))
    if current and (target is None or target.resolve() == table.resolve()):
        return table
    if custom and (target is None or target.resolve() == table.resolve()):
        raise UserError(f"{table} was made with other options ({made_with}); export the default "
                        f"table with --out <file>, or copy that one as it is")
    if current:
        source = table
    elif not custom:  # missing or out of date, and ours: bring the work table up to date
        echo("computing the per-example table (`inspect examples`)")
        examples_for_workspace(ws, out, None, store, default, data_opts, echo)
        if target is None or target.resolve() == table.resolve():
            return table
        source = table
    art.remove_stale_temps(target.parent, f".{target.name}.*.tmp")  # of a killed export
    with art.atomic_path(target) as tmp:
        if custom:  # computed aside, so the user's table stays as it is
            echo("computing the per-example table with the default options aside")
            # in the system's temp folder: the work folder never holds a half-made table
            with tempfile.TemporaryDirectory(prefix="ssl-dynamics-export-") as aside:
                examples_for_workspace(ws, Outputs(aside), None, store, default, data_opts, echo)
                shutil.copyfile(Outputs(aside).tables / f"{TABLE}.parquet", tmp)
        else:
            shutil.copyfile(source, tmp)
    return target


def _setups(store: Path) -> list[str]:
    with open_store(store) as st:
        return st.setups()
