"""The r_t store: correctness and true-class probability of every checkpoint on the bank.

Layout (one group per setup, chunked per checkpoint so that shards never share a chunk):

    <store>/probe_indices [K], labels [K]
    <store>/<setup>/correct  uint8   [S, E, M, K, V]   1 = classified correctly
    <store>/<setup>/p_true   float32 [S, E, M, K, V]   softmax probability of the true class
    <store>/<setup>/done     uint8   [S, E]            1 = that checkpoint is evaluated
    <store>/<setup>/targets  int64   [K]               labels scored against (permuted for
                                                       random-label setups)
    attrs: schema_version, seeds, epochs, setup config, bank fingerprint, dataset sha256

S indexes the run's seeds, E the epochs 0..t_max, M the replays, V the views (2 for
SimCLR, else 1). `done` is written after the data of its chunk, so an interrupted
evaluation is redone, never half-read.

The working format is Zarr: every chunk is its own file, written to a temporary name and
renamed, so processes evaluating disjoint checkpoints (`--shard i/n`) can share one
store. A path ending in `.h5` asks for an HDF5 archive: the work still happens in a Zarr
store beside it (`<name>.h5.work.zarr`, kept for resuming) and each finished `inspect rt`
exports the whole archive atomically.
"""
from __future__ import annotations

import fcntl
import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .. import artifacts as art
from ..config import SCHEMA_VERSION, canonical_json, canonical_order
from ..errors import UserError
from .rtdata import SetupRt

ARRAYS = ("correct", "p_true")



def work_path(path: str | Path) -> Path:
    """The Zarr store that evaluation writes for a requested store path."""
    path = Path(path)
    if path.suffix == ".zarr":
        return path
    if path.suffix in (".h5", ".hdf5"):
        return path.with_name(path.name + ".work.zarr")
    raise UserError(f"store path {path} must end in .zarr or .h5")


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock beside the store while its structure is created or checked."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class RtStore:
    def __init__(self, path: str | Path):
        self.path = work_path(path)
        self.group = self._open()

    def _open(self):
        """(Re)read the group: metadata is cached per handle, and other shards may have written."""
        import zarr

        try:
            return zarr.open_group(str(self.path), mode="a")
        except Exception as e:
            raise UserError(f"cannot open r_t store {self.path}: {e}") from None

    def init_probes(self, probe_indices: np.ndarray, labels: np.ndarray, bank_fingerprint: str) -> None:
        with _locked(self.path):
            g = self.group = self._open()
            if "probe_indices" in g:
                if g.attrs.get("bank_fingerprint") != bank_fingerprint:
                    raise UserError(f"{self.path} was made from a different bank; use another "
                                    f"--store path (or the bank it was made with)")
                return
            g.create_array("probe_indices", data=np.asarray(probe_indices, dtype=np.int64))
            g.create_array("labels", data=np.asarray(labels, dtype=np.int64))
            g.attrs.update({"schema_version": SCHEMA_VERSION, "bank_fingerprint": bank_fingerprint})

    def ensure_setup(self, setup: str, seeds: list[int], n_epochs: int, m: int, k: int, v: int,
                     targets: np.ndarray, attrs: dict[str, Any]) -> None:
        """Create the setup's arrays, or check that existing ones were made the same way."""
        want = {"seeds": list(map(int, seeds)), "epochs": list(range(n_epochs)),
                "shape": [len(seeds), n_epochs, m, k, v], **attrs}
        with _locked(self.path):
            self.group = self._open()
            if setup in self.group:
                have = dict(self.group[setup].attrs)
                diffs = [key for key in want if canonical_json(have.get(key)) != canonical_json(want[key])]
                if diffs:
                    what = "bank" if "bank_fingerprint" in diffs else ", ".join(diffs)
                    raise UserError(f"{self.path}/{setup} was made with a different {what}; "
                                    f"use another --store path")
                return
            g = self.group.create_group(setup)
            chunk = (1, 1, m, k, v)
            g.create_array("correct", shape=want["shape"], chunks=chunk, dtype="uint8", fill_value=0)
            g.create_array("p_true", shape=want["shape"], chunks=chunk, dtype="float32",
                           fill_value=np.nan)
            g.create_array("done", shape=(len(seeds), n_epochs), chunks=(1, 1), dtype="uint8",
                           fill_value=0)
            g.create_array("targets", data=np.asarray(targets, dtype=np.int64))
            g.attrs.update({"schema_version": SCHEMA_VERSION, **want})

    def setups(self) -> list[str]:
        return canonical_order(self.group.group_keys())

    def attrs(self, setup: str) -> dict[str, Any]:
        return dict(self.group[setup].attrs)

    def done(self, setup: str) -> np.ndarray:
        return self.group[f"{setup}/done"][:].astype(bool)

    def write(self, setup: str, s: int, e: int, correct: np.ndarray, p_true: np.ndarray) -> None:
        g = self.group[setup]
        g["correct"][s, e] = correct.astype(np.uint8)
        g["p_true"][s, e] = p_true.astype(np.float32)
        g["done"][s, e] = 1  # last: it commits the chunk

    def read(self, setup: str) -> dict[str, np.ndarray]:
        g = self.group[setup]
        return {"correct": g["correct"][:], "p_true": g["p_true"][:], "done": g["done"][:],
                "targets": g["targets"][:]}

    def read_targets(self, setup: str) -> np.ndarray:
        return self.group[f"{setup}/targets"][:]

    def probes(self) -> tuple[np.ndarray, np.ndarray]:
        return self.group["probe_indices"][:], self.group["labels"][:]


def export_h5(store: RtStore, target: str | Path) -> None:
    """Write the whole store as one HDF5 file, atomically (same layout and attributes)."""
    import h5py

    with art.atomic_path(target) as tmp:
        with h5py.File(tmp, "w") as f:
            idx, labels = store.probes()
            f.create_dataset("probe_indices", data=idx)
            f.create_dataset("labels", data=labels)
            f.attrs["schema_version"] = SCHEMA_VERSION
            f.attrs["bank_fingerprint"] = str(store.group.attrs.get("bank_fingerprint"))
            for setup in store.setups():
                data = store.read(setup)
                g = f.create_group(setup)
                shape = data["correct"].shape
                for name in ("correct", "p_true"):
                    g.create_dataset(name, data=data[name], chunks=(1, 1, *shape[2:]),
                                     compression="gzip", compression_opts=4)
                g.create_dataset("done", data=data["done"])
                g.create_dataset("targets", data=data["targets"])
                for k, v in store.attrs(setup).items():
                    g.attrs[k] = json.dumps(v)


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


def load_rt(path: str | Path, setups: list[str] | None = None) -> dict[str, SetupRt]:
    """Every setup's arrays from a .zarr store or an exported .h5 archive."""
    path = Path(path)
    if path.suffix in (".h5", ".hdf5") and path.exists():
        import h5py

        try:
            with h5py.File(path, "r") as f:
                idx, labels = f["probe_indices"][:], f["labels"][:]
                names = canonical_order(k for k in f.keys() if isinstance(f[k], h5py.Group))
                out = {}
                for s in names:
                    if setups and s not in setups:
                        continue
                    g = f[s]
                    attrs = {k: json.loads(v) for k, v in g.attrs.items()}
                    data = {k: g[k][:] for k in ("correct", "p_true", "done", "targets")}
                    out[s] = _setup_rt(s, data, attrs, idx, labels)
                return _require(out, path, setups)
        except OSError as e:
            raise UserError(f"corrupt r_t archive {path}: {e}") from None
    wp = work_path(path)
    if not wp.exists():
        raise UserError(f"no r_t store at {path}: run `inspect rt` first")
    store = RtStore(wp)
    idx, labels = store.probes()
    out = {s: _setup_rt(s, store.read(s), store.attrs(s), idx, labels)
           for s in store.setups() if not setups or s in setups}
    return _require(out, path, setups)


def _require(out: dict[str, SetupRt], path: Path, setups: list[str] | None) -> dict[str, SetupRt]:
    missing = [s for s in (setups or []) if s not in out]
    if missing:
        raise UserError(f"{path} has no r_t arrays for {', '.join(missing)} "
                        f"(it has {', '.join(out) or 'none'}); run `inspect rt` for them")
    if not out:
        raise UserError(f"{path} holds no evaluated setup; run `inspect rt` first")
    return out
