"""The in-memory view of one setup's r_t store that every analysis reads.

Analyses never touch checkpoints or the store format: `load_rt` returns one `SetupRt` per
setup, built from the Zarr store or its HDF5 export; `export_h5` writes that export.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .. import artifacts as art
from ..artifacts.atomic import fsync_dir
from ..config import SCHEMA_VERSION, canonical_order, check_schema
from ..errors import UserError
from . import h5dims, storedims
from .store import RtStore, reading, work_path


@dataclass(frozen=True)
class SetupRt:
    setup: str
    correct: np.ndarray  # uint8 [S seeds, E epochs, M augmentations, K images] (SimCLR: 1st view)
    p_true: np.ndarray  # float32, same shape: softmax probability of the true class
    valid: np.ndarray  # bool [S, E]: which (seed, epoch) checkpoints were evaluated
    seeds: np.ndarray  # int [S] model seeds
    epochs: np.ndarray  # int [E] epoch numbers (index e <-> epoch epochs[e]; 0 = init)
    labels: np.ndarray  # int [K] true class of each probe image
    targets: np.ndarray  # int [K] label trained on (permuted for random-label setups)
    probe_indices: np.ndarray  # int [K] index of each probe image in the training set
    correct_second: np.ndarray | None = None  # SimCLR only: the second view, [S, E, M, K]
    p_true_second: np.ndarray | None = None

    @property
    def n_seeds(self) -> int:
        return len(self.seeds)

    def epoch_index(self, epoch: int) -> int:
        hits = np.nonzero(self.epochs == epoch)[0]
        if not len(hits):
            raise KeyError(epoch)
        return int(hits[0])

    def evaluated_epochs(self) -> np.ndarray:
        """Epoch numbers with at least one evaluated seed."""
        return self.epochs[self.valid.any(axis=0)]


def absent_seeds(d: SetupRt) -> list[int]:
    """Seed numbers of `d` without any evaluated checkpoint (left out of every mean)."""
    return [int(x) for x in np.asarray(d.seeds)[~np.asarray(d.valid, dtype=bool).any(axis=1)]]


def require_evaluated(data: dict[str, SetupRt]) -> None:
    """Refuse a setup of the store without any evaluated checkpoint, saying how to fix it."""
    for s, d in data.items():
        if not np.asarray(d.valid).any():
            raise UserError(f"setup {s} has no evaluated checkpoint in the r_t store: `inspect rt --setup "
                            f"{s}` evaluates it, or leave it out with --setup")


def _setup_rt(setup: str, data: dict[str, np.ndarray], attrs: dict[str, Any],
              probe_indices: np.ndarray, labels: np.ndarray) -> SetupRt:
    correct, p_true = data["correct"], data["p_true"]
    second = correct.shape[-1] == 2
    return SetupRt(
        setup=setup, correct=correct[..., 0], p_true=p_true[..., 0],
        valid=data["done"].astype(bool), seeds=np.asarray(attrs["seeds"]),
        epochs=np.asarray(attrs["epochs"]), labels=labels, targets=data["targets"],
        probe_indices=probe_indices,
        correct_second=correct[..., 1] if second else None,
        p_true_second=p_true[..., 1] if second else None,
    )


def export_h5(store: RtStore, target: str | Path) -> None:
    """Write the whole store as one HDF5 file, atomically (same layout and attributes).

    Coordinates become HDF5 dimension scales (`h5dims`), so the file opens as netCDF:
    ``xr.open_dataset(target, group=setup, engine="h5netcdf")``."""
    import h5py

    target = Path(target)
    # one exporting process at a time: it may remove what a killed export left
    with art.file_lock(target.with_name(f".{target.name}.export.lock")):
        art.remove_stale_temps(target.parent, f".{target.name}.*.tmp")
        _write_h5(store, target, h5py)


def _write_h5(store: RtStore, target: Path, h5py) -> None:
    with art.atomic_path(target) as tmp:
        with h5py.File(tmp, "w") as f:
            idx, labels = store.probes()
            h5dims.add_coordinate(f, "probe", idx)
            for name, values in (("probe_indices", idx), ("labels", labels)):
                h5dims.attach(f.create_dataset(name, data=values), f, ("probe",))
            f.attrs["schema_version"] = SCHEMA_VERSION
            f.attrs[ATTRS_ENCODING[0]] = ATTRS_ENCODING[1]
            f.attrs["bank_fingerprint"] = str(store.group.attrs.get("bank_fingerprint"))
            if "bank_spec" in store.group.attrs:
                f.attrs["bank_spec"] = json.dumps(dict(store.group.attrs["bank_spec"]), sort_keys=True)
            if "store_id" in store.group.attrs:  # the same evaluations: the same store to its readers
                f.attrs["store_id"] = str(store.group.attrs["store_id"])
            for setup in store.setups():
                _export_setup(f.create_group(setup), store.read(setup), store.attrs(setup), idx, labels,
                              store.checkpoint_sha(setup))


def _export_setup(g, data: dict[str, np.ndarray], attrs: dict[str, Any], idx, labels,
                  sha256: np.ndarray | None = None) -> None:
    """One setup group of the HDF5 export: data, coordinates as scales, JSON attributes,
    and the checkpoint record (`sha256`; stores made before it have none)."""
    coords = storedims.coordinate_values(attrs, idx, labels)
    for name in storedims.FULL_DIMS:
        h5dims.add_coordinate(g, name, coords[name])
    h5dims.attach(g.create_dataset("label", data=coords["label"]), g, ("probe",))
    shape = data["correct"].shape
    for name in storedims.ARRAY_DIMS:
        big = name in ("correct", "p_true")
        # byte shuffle before gzip (both standard HDF5 filters): ~30% less time, smaller files
        ds = g.create_dataset(name, data=data[name], chunks=(1, 1, *shape[2:]) if big else None,
                              compression="gzip" if big else None, compression_opts=4 if big else None,
                              shuffle=big)
        h5dims.attach(ds, g, storedims.ARRAY_DIMS[name])
        if name in storedims.WITH_LABEL:
            ds.attrs["coordinates"] = storedims.LABEL_COORD
    if sha256 is not None:  # netCDF needs a scale on every axis, the byte axis included
        h5dims.add_coordinate(g, "sha256_byte", np.arange(storedims.SHA_BYTES))
        h5dims.attach(g.create_dataset(storedims.SHA_ARRAY, data=sha256), g,
                      storedims.RECORD_DIMS[storedims.SHA_ARRAY])
    g.attrs.update(portable_attrs(attrs))


# Root attribute of .h5 archives whose setup attributes are plain HDF5 values
# (`portable_attrs`); archives without it hold every setup attribute as JSON text.
ATTRS_ENCODING = ("attrs_encoding", "plain")


def portable_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    """Attributes as HDF5 and netCDF hold them, so that readers of any export see the values
    the Zarr store has: numbers and strings as they are, flat lists of only ints (int64) or
    only floats as arrays, anything else (dicts such as setup_config, booleans, nested or
    mixed lists, a string that reads as JSON) as JSON text. `_from_h5` reverses it."""
    return {k: _portable(v) for k, v in attrs.items()}


INT64 = (-2**63, 2**63 - 1)  # what an HDF5 integer attribute holds; larger ints go as JSON


def _portable(v: Any) -> Any:
    v = v.item() if isinstance(v, np.generic) else v
    v = v.tolist() if isinstance(v, np.ndarray) else v
    if isinstance(v, str):
        return json.dumps(v) if _reads_as_json(v) else v
    if isinstance(v, float) or (isinstance(v, int) and not isinstance(v, bool) and INT64[0] <= v <= INT64[1]):
        return v
    if isinstance(v, (list, tuple)) and v:
        if all(type(x) is int and INT64[0] <= x <= INT64[1] for x in v):
            return np.asarray(v, dtype=np.int64)
        if all(type(x) is float for x in v):
            return np.asarray(v, dtype=np.float64)
    return json.dumps(v, default=_json_value)


def _reads_as_json(v: str) -> bool:
    """Whether a string attribute is JSON text (`_portable` encodes a string that would
    read as JSON, such as "null" or "12", as JSON itself, so every string comes back whole)."""
    try:
        json.loads(v)
        return True
    except ValueError:
        return False


def _json_value(v):
    """numpy arrays and scalars inside attribute values (HDF5 returns them) as JSON."""
    if isinstance(v, (np.ndarray, np.generic)):
        return v.tolist()
    if isinstance(v, bytes):
        return v.decode()
    raise TypeError(f"attribute value of type {type(v).__name__} has no JSON form")


def _from_h5(v: Any) -> Any:
    """A setup attribute as `portable_attrs` wrote it, back as the Zarr store holds it."""
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, bytes):
        v = v.decode()
    return json.loads(v) if isinstance(v, str) and _reads_as_json(v) else v


def is_rt_archive(path: Path) -> bool:
    """Whether the HDF5 file at `path` is an r_t archive (`export_h5`), not another file."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            groups = [f[k] for k in f if isinstance(f[k], h5py.Group)]
            return ("bank_fingerprint" in f.attrs and "probe_indices" in f and "labels" in f
                    and all("done" in g and "correct" in g for g in groups))
    except OSError:
        return False


def bank_spec(root_attrs: dict[str, Any]) -> dict[str, int] | None:
    """The bank settings a store or archive recorded (a dict in Zarr, JSON text in an .h5
    archive); None for one made before they were recorded."""
    spec = root_attrs.get("bank_spec")
    return json.loads(spec) if isinstance(spec, (str, bytes)) else (dict(spec) if spec is not None else None)


def seed_work_store(source: Path, bank_fingerprint: str, target: Path | None = None) -> None:
    """Build a Zarr work store from a finished store: the work store of an .h5 archive that
    was removed or never copied (`target` None), or the work folder's store from the run's
    own store (`--work` on an archive), so that nothing already evaluated is evaluated again.

    One process seeds at a time (a lock beside the target); one that finds the target made
    meanwhile uses it. Built under a temporary name and renamed into place: a kill leaves
    no partial store that a later export would take for the whole."""
    wp = target or work_path(source)
    tmp = wp.with_name(f".seeding.{wp.name}")
    with art.file_lock(wp.with_name(f".{wp.name}.seeding.lock")):  # not tmp's own store lock
        if wp.exists():  # another process seeded it while this one waited
            return
        shutil.rmtree(tmp, ignore_errors=True)  # left by a kill while seeding (the lock is ours)
        with open_store(source) as src:
            if str(src.root_attrs().get("bank_fingerprint")) != bank_fingerprint:
                raise UserError(f"{source} was made from a different bank; use another --store path "
                                f"(or the bank it was made with)")
            dst = RtStore(tmp)
            dst.init_probes(*src.probes(), bank_fingerprint, bank_spec(src.root_attrs()))
            for setup in src.setups():
                dst.restore_setup(setup, src.attrs(setup), src.read(setup), src.checkpoint_sha(setup))
        dst.consolidate()
        tmp.with_name(tmp.name + ".lock").unlink(missing_ok=True)
        os.rename(tmp, wp)
        fsync_dir(wp.parent)


class H5Store:
    """The reading side of `RtStore` over an exported .h5 archive. A read that fails (a
    damaged or foreign file) is a one-line UserError naming the archive; errors of the
    caller's own work are not blamed on it."""

    def __init__(self, path: Path):
        import h5py

        self.path = path
        with self._reading():
            self.file = h5py.File(path, "r")
        try:
            with self._reading():
                version = self.file.attrs.get("schema_version")
            check_schema(version, f"r_t archive {path}")
        except BaseException:
            self.file.close()
            raise

    def _reading(self):
        return reading(self.path, "its contents", (OSError, KeyError, ValueError), kind="archive")

    def setups(self) -> list[str]:
        import h5py

        with self._reading():
            return canonical_order(k for k in self.file.keys() if isinstance(self.file[k], h5py.Group))

    def root_attrs(self) -> dict[str, Any]:
        with self._reading():
            return dict(self.file.attrs)

    def attrs(self, setup: str) -> dict[str, Any]:
        """A setup group's attributes (a newer schema's refused, as in `RtStore.attrs`)."""
        with self._reading():
            raw = self.file[setup].attrs
            if self.file.attrs.get(ATTRS_ENCODING[0]) == ATTRS_ENCODING[1]:
                attrs = {k: _from_h5(v) for k, v in raw.items()}
            else:
                attrs = {k: json.loads(v) for k, v in raw.items()}  # an archive made before
        check_schema(attrs.get("schema_version"), f"r_t archive {self.path}/{setup}")
        return attrs

    def probes(self) -> tuple[np.ndarray, np.ndarray]:
        with self._reading():
            return self.file["probe_indices"][:], self.file["labels"][:]

    def done(self, setup: str) -> np.ndarray:
        with self._reading():
            return self.file[f"{setup}/done"][:].astype(bool)

    def read(self, setup: str) -> dict[str, np.ndarray]:
        with self._reading():
            return {k: self.file[f"{setup}/{k}"][:] for k in ("correct", "p_true", "done", "targets")}

    def checkpoint_sha(self, setup: str) -> np.ndarray | None:
        """As `RtStore.checkpoint_sha`: None for an archive made before checkpoints were recorded."""
        with self._reading():
            g = self.file[setup]
            return g[storedims.SHA_ARRAY][:] if storedims.SHA_ARRAY in g else None


@contextmanager
def open_store(path: str | Path) -> Iterator[RtStore | H5Store]:
    """A .zarr store or an exported .h5 archive, read only, with one reading interface."""
    path = Path(path)
    if path.suffix in (".h5", ".hdf5") and path.exists():
        store = H5Store(path)
        try:
            yield store
        finally:
            store.file.close()
        return
    wp = work_path(path)
    if not wp.exists():
        raise UserError(f"no r_t store at {path}: run `inspect rt` first")
    yield RtStore(wp, writable=False)


def load_rt(path: str | Path, setups: list[str] | None = None,
            dataset_sha256: str | None = None) -> dict[str, SetupRt]:
    """Every setup's arrays from a .zarr store or an exported .h5 archive (read only); with
    `dataset_sha256` (the run's), a store evaluated on another dataset is refused."""
    with open_store(path) as store:
        if dataset_sha256 is not None:
            _check_dataset(store, Path(path), dataset_sha256)
        idx, labels = store.probes()
        have = store.setups()
        out = {s: _setup_rt(s, store.read(s), store.attrs(s), idx, labels)
               for s in have if not setups or s in setups}
    return _require(out, Path(path), setups, have)


def check_store_dataset(path: str | Path, dataset_sha256: str) -> None:
    """Refuse a store whose setups were evaluated on another dataset than `dataset_sha256`
    (the run's): another run's store. Reads attributes only."""
    with open_store(path) as store:
        _check_dataset(store, Path(path), dataset_sha256)


def _check_dataset(store, path: Path, dataset_sha256: str) -> None:
    recorded = {str(store.attrs(s).get("dataset_sha256")) for s in store.setups()}
    other = sorted(recorded - {dataset_sha256, "None"})  # "None": not recorded, nothing to compare
    if other:
        raise UserError(f"r_t store {path} was evaluated on another dataset (sha256 {other[0][:12]}...) "
                        f"than this run's ({dataset_sha256[:12]}...): it is another run's store; pass "
                        f"this run's store with --store, or use another --work folder")


def store_state(path: str | Path) -> str:
    """A fingerprint of what the store holds: its bank, probe set, setups, seeds, epochs,
    which checkpoints are evaluated and from which checkpoint files (a chunk changes only
    when its checkpoint was replaced and evaluated again, which changes its sha256 record),
    in which precision, and which store it is (`store_id`: a store deleted and evaluated
    anew is another store). Cheap: reads no chunk of the big arrays."""
    h = hashlib.sha256()
    with open_store(path) as store:
        root = store.root_attrs()
        h.update(json.dumps([str(root.get("bank_fingerprint")), str(root.get("store_id"))]).encode())
        for a in store.probes():
            h.update(np.ascontiguousarray(a, dtype=np.int64).tobytes())
        for s in store.setups():
            attrs = store.attrs(s)
            h.update(json.dumps([s, attrs.get("seeds"), attrs.get("epochs"), str(attrs.get("precision"))]).encode())
            h.update(np.ascontiguousarray(store.done(s), dtype=np.uint8).tobytes())
            record = store.checkpoint_sha(s)  # a checkpoint evaluated again changes its record
            if record is not None and record.any():
                h.update(record.tobytes())
    return h.hexdigest()


def _require(out: dict[str, SetupRt], path: Path, setups: list[str] | None,
             have: list[str]) -> dict[str, SetupRt]:
    missing = [s for s in (setups or []) if s not in out]
    if missing:
        raise UserError(f"{path} has no r_t arrays for {', '.join(missing)} "
                        f"(it has {', '.join(have) or 'none'}); check the name, or run "
                        f"`inspect rt --setup {missing[0]}` for it")
    if not out:
        raise UserError(f"{path} holds no evaluated setup; run `inspect rt` first")
    return out
